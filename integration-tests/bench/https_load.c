/* hermes-https-load: the WAN arm of the data-path benchmark (datapath.py): N short real HTTPS
 * requests, each on a new connection, C at a time, straight to an HTTPS origin (--proxy none)
 * or as plain HTTP/1.1 "GET https://..." to a forward proxy that fetches the URL (--proxy h1).
 * One epoll loop; one JSON object on stdout shaped like hermes-pingpong rpc (times in us). */
#include "bench_net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define S_HEAD_MAX 16384 /* status line + headers */
#define S_READ_BUF 65536
#define S_ROUNDS   16 /* reads per flow per wake-up before the others get their turn */
#define S_AGAIN    (-1)
#define S_GONE     (-2)

typedef enum { PROXY_NONE, PROXY_H1 } s_proxy_t;

static struct {
    const char *connect, *url, *ca, *samples;
    s_proxy_t proxy;
    long count, concurrency;
    double timeout_s, flow_timeout_s;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host[256];      /* NAME without brackets: SNI and the certificate check */
    bool host_is_ip;     /* no SNI for an IP literal */
    char authority[300]; /* NAME:PORT as written in --url: the Host header */
} o = {.count = 1000, .concurrency = 100, .timeout_s = 120, .flow_timeout_s = 30};

typedef enum { F_FREE, F_CONNECTING, F_HANDSHAKE, F_SEND, F_HEAD, F_BODY } s_phase_t;
typedef enum { B_LENGTH, B_CHUNKED, B_EOF } s_body_t;
typedef enum { C_SIZE, C_DATA, C_DATA_END, C_TRAILER } s_chunk_t;

typedef struct {
    int fd;
    s_phase_t phase;
    uint32_t events; /* what epoll watches for this fd */
    bool pending;    /* GnuTLS holds decrypted bytes that were not read yet */
    int64_t t0;
    gnutls_session_t tls;
    size_t sent; /* bytes of the request sent */
    char *head;  /* S_HEAD_MAX + 1 bytes from F_HEAD on */
    size_t head_len;
    s_body_t body;
    s_chunk_t chunk;
    uint64_t length; /* Content-Length */
    uint64_t left;   /* B_LENGTH: body bytes still to come; C_DATA: bytes of this chunk */
    uint64_t got;    /* body bytes so far */
    char line[128];  /* chunk-size line, CRLF after a chunk, trailer line */
    size_t line_len;
} s_flow_t;

static int s_ep = -1;
static s_flow_t *s_flows;
static long *s_free; /* stack of free slots in s_flows */
static long s_nfree, s_conc, s_started, s_done, s_failed, s_npending;
static int64_t *s_lat;
static char s_first_error[512];
static char *s_req;
static size_t s_req_len;
static gnutls_certificate_credentials_t s_cred;
static gnutls_priority_t s_prio;

static int64_t s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *s_peer (void)
{
    return o.proxy == PROXY_H1 ? "proxy" : "origin";
}

/* Writes text as the inside of a JSON string (anything outside printable ASCII as \u00XX, so
 * the line stays valid whatever a server put into its status line). */
static void s_json_text (FILE *out, const char *text)
{
    for (const unsigned char *p = (const unsigned char *) text; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf (out, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            fprintf (out, "\\u%04x", *p);
        else
            putc (*p, out);
    }
}

static void s_fatal (const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
    fprintf (stderr, "hermes-https-load: %s\n", msg);
    printf ("{\"error\": \"");
    s_json_text (stdout, msg);
    printf ("\"}\n");
    fflush (stdout);
    exit (1);
}

static void s_usage (const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
    fprintf (stderr,
             "hermes-https-load: %s; usage: hermes-https-load --connect HOST:PORT --url "
             "https://NAME:PORT/PATH [--proxy none|h1] [--count N] [--concurrency C] "
             "[--timeout-s T] [--flow-timeout-s F] [--samples FILE] [--ca FILE]\n",
             msg);
    exit (2);
}

/* ---- one exchange ---------------------------------------------------------------------- */

static void s_want (s_flow_t *f, uint32_t events)
{
    if (events == f->events)
        return;
    struct epoll_event e = {.events = events, .data.ptr = f};
    epoll_ctl (s_ep, EPOLL_CTL_MOD, f->fd, &e);
    f->events = events;
}

/* After GNUTLS_E_AGAIN: wait for the direction GnuTLS was stuck on. */
static void s_want_tls (s_flow_t *f)
{
    s_want (f, gnutls_record_get_direction (f->tls) ? EPOLLOUT : EPOLLIN);
}

static void s_flow_end (s_flow_t *f, bool failed)
{
    if (failed)
        s_failed++;
    if (f->pending) {
        f->pending = false;
        s_npending--;
    }
    if (f->tls) {
        gnutls_deinit (f->tls);
        f->tls = NULL;
    }
    if (f->fd >= 0) {
        if (failed) {
            struct linger lg = {1, 0}; /* a reset, no lingering half-open state */
            setsockopt (f->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close (f->fd); /* also takes it out of the epoll set */
        f->fd = -1;
    }
    free (f->head);
    f->head = NULL;
    f->phase = F_FREE;
    s_free[s_nfree++] = f - s_flows;
}

static void s_fail (s_flow_t *f, const char *fmt, ...)
{
    if (!s_first_error[0]) {
        va_list ap;
        va_start (ap, fmt);
        vsnprintf (s_first_error, sizeof s_first_error, fmt, ap);
        va_end (ap);
    }
    s_flow_end (f, true);
}

static void s_complete (s_flow_t *f)
{
    s_lat[s_done++] = s_now () - f->t0;
    s_flow_end (f, false);
}

static const char *s_phase_name (const s_flow_t *f)
{
    switch (f->phase) {
    case F_CONNECTING:
        return "connecting";
    case F_HANDSHAKE:
        return "in the TLS handshake";
    case F_SEND:
        return "sending the request";
    case F_HEAD:
        return "waiting for the response head";
    case F_BODY:
        return "reading the body";
    default:
        return "";
    }
}

static void s_send (s_flow_t *f)
{
    while (f->sent < s_req_len) {
        const char *p = s_req + f->sent;
        size_t len = s_req_len - f->sent;
        ssize_t n;
        if (f->tls) {
            n = gnutls_record_send (f->tls, p, len);
            if (n == GNUTLS_E_AGAIN) {
                s_want_tls (f); /* called again later with the same data */
                return;
            }
            if (n == GNUTLS_E_INTERRUPTED)
                continue;
            if (n < 0) {
                s_fail (f, "TLS send to the origin: %s", gnutls_strerror ((int) n));
                return;
            }
        } else {
            n = send (f->fd, p, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    s_want (f, EPOLLOUT);
                    return;
                }
                if (errno == EINTR)
                    continue;
                s_fail (f, "send to the %s: %s", s_peer (), strerror (errno));
                return;
            }
        }
        f->sent += (size_t) n;
    }
    f->phase = F_HEAD;
    f->head = malloc (S_HEAD_MAX + 1);
    if (!f->head)
        abort ();
    f->head_len = 0;
    s_want (f, EPOLLIN);
}

static void s_handshake (s_flow_t *f)
{
    for (int tries = 0; tries < 16; tries++) {
        int rc = gnutls_handshake (f->tls);
        if (rc == GNUTLS_E_SUCCESS) {
            f->phase = F_SEND;
            s_send (f);
            return;
        }
        if (rc == GNUTLS_E_AGAIN) {
            s_want_tls (f);
            return;
        }
        if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
            gnutls_datum_t why = {NULL, 0};
            unsigned status = gnutls_session_get_verify_cert_status (f->tls);
            if (gnutls_certificate_verification_status_print (status, GNUTLS_CRT_X509, &why, 0) ==
                    0 &&
                why.data) {
                char *text = (char *) why.data;
                size_t n = strlen (text);
                while (n > 0 && text[n - 1] == ' ')
                    text[--n] = 0;
                s_fail (f, "TLS handshake: certificate verification failed for %s: %s", o.host,
                        text);
            } else {
                s_fail (f, "TLS handshake: %s", gnutls_strerror (rc));
            }
            gnutls_free (why.data);
            return;
        }
        if (gnutls_error_is_fatal (rc)) {
            s_fail (f, "TLS handshake: %s", gnutls_strerror (rc));
            return;
        }
        /* GNUTLS_E_INTERRUPTED, a warning alert: go on */
    }
    s_want_tls (f);
}

static void s_tls_start (s_flow_t *f)
{
    static gnutls_datum_t alpn = {(unsigned char *) "http/1.1", 8};
    int rc = gnutls_init (&f->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
    if (rc < 0) {
        f->tls = NULL;
        s_fail (f, "TLS setup: %s", gnutls_strerror (rc));
        return;
    }
    rc = gnutls_priority_set (f->tls, s_prio);
    if (rc >= 0)
        rc = gnutls_credentials_set (f->tls, GNUTLS_CRD_CERTIFICATE, s_cred);
    if (rc >= 0 && !o.host_is_ip)
        rc = gnutls_server_name_set (f->tls, GNUTLS_NAME_DNS, o.host, strlen (o.host));
    if (rc >= 0)
        rc = gnutls_alpn_set_protocols (f->tls, &alpn, 1, 0);
    if (rc < 0) {
        s_fail (f, "TLS setup: %s", gnutls_strerror (rc));
        return;
    }
    if (o.ca)
        gnutls_session_set_verify_cert (f->tls, o.host, 0);
    gnutls_handshake_set_timeout (f->tls, 0); /* --flow-timeout-s covers it */
    gnutls_transport_set_int (f->tls, f->fd);
    f->phase = F_HANDSHAKE;
    s_handshake (f);
}

static void s_connected (s_flow_t *f)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt (f->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        s_fail (f, "connect: %s (%s at %s)", strerror (err), s_peer (), o.connect);
        return;
    }
    if (o.proxy == PROXY_NONE) {
        s_tls_start (f);
    } else {
        f->phase = F_SEND;
        s_send (f);
    }
}

static void s_flow_start (s_flow_t *f)
{
    memset (f, 0, sizeof *f);
    f->fd = -1;
    f->phase = F_CONNECTING;
    f->t0 = s_now ();
    s_started++;
    f->fd = socket (o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f->fd < 0) {
        s_fail (f, "socket: %s", strerror (errno));
        return;
    }
    int one = 1;
    setsockopt (f->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    f->events = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = f};
    if (epoll_ctl (s_ep, EPOLL_CTL_ADD, f->fd, &e) != 0) {
        s_fail (f, "epoll_ctl: %s", strerror (errno));
        return;
    }
    f->t0 = s_now ();
    if (connect (f->fd, (struct sockaddr *) &o.addr, o.addrlen) == 0)
        s_connected (f);
    else if (errno != EINPROGRESS)
        s_fail (f, "connect: %s (%s at %s)", strerror (errno), s_peer (), o.connect);
}

/* One read: >0 bytes, 0 at the end of the stream, S_AGAIN (epoll set up to wait) or S_GONE
 * (the flow failed and ended). */
static ssize_t s_recv (s_flow_t *f, char *buf, size_t cap)
{
    for (int tries = 0;; tries++) {
        if (f->tls) {
            ssize_t n = gnutls_record_recv (f->tls, buf, cap);
            if (n >= 0)
                return n;
            if (n == GNUTLS_E_PREMATURE_TERMINATION)
                return 0; /* TCP closed without close_notify */
            if (n == GNUTLS_E_AGAIN) {
                s_want_tls (f);
                return S_AGAIN;
            }
            if (tries < 8 && (n == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal ((int) n)))
                continue;
            s_fail (f, "TLS read from the origin: %s", gnutls_strerror ((int) n));
            return S_GONE;
        }
        ssize_t n = recv (f->fd, buf, cap, 0);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s_want (f, EPOLLIN);
            return S_AGAIN;
        }
        if (errno == EINTR && tries < 8)
            continue;
        s_fail (f, "read from the %s: %s", s_peer (), strerror (errno));
        return S_GONE;
    }
}

/* Chunk-size line: hex digits, then maybe an extension. */
static bool s_chunk_size (const char *line, uint64_t *size)
{
    uint64_t v = 0;
    size_t k = 0;
    for (; isxdigit ((unsigned char) line[k]); k++) {
        if (k >= 15)
            return false;
        int c = tolower ((unsigned char) line[k]);
        v = v * 16 + (uint64_t) (c <= '9' ? c - '0' : c - 'a' + 10);
    }
    if (k == 0 || (line[k] && line[k] != ';' && line[k] != ' ' && line[k] != '\t'))
        return false;
    *size = v;
    return true;
}

/* Body bytes in; true when the flow ended (complete or failed). */
static bool s_on_body (s_flow_t *f, const char *data, size_t len)
{
    if (f->body == B_EOF) {
        f->got += len;
        return false;
    }
    if (f->body == B_LENGTH) {
        size_t take = len < f->left ? len : (size_t) f->left;
        f->got += take;
        f->left -= take;
        if (f->left == 0) {
            s_complete (f);
            return true;
        }
        return false;
    }
    size_t i = 0;
    while (i < len) {
        if (f->chunk == C_DATA) {
            size_t take = len - i < f->left ? len - i : (size_t) f->left;
            f->got += take;
            f->left -= take;
            i += take;
            if (f->left == 0)
                f->chunk = C_DATA_END;
            continue;
        }
        char c = data[i++];
        if (c != '\n') {
            if (f->line_len >= sizeof f->line - 1) {
                s_fail (f, "chunked body from the %s: a line longer than %zu bytes", s_peer (),
                        sizeof f->line - 1);
                return true;
            }
            f->line[f->line_len++] = c;
            continue;
        }
        size_t n = f->line_len;
        if (n > 0 && f->line[n - 1] == '\r')
            n--;
        f->line[n] = 0;
        f->line_len = 0;
        if (f->chunk == C_SIZE) {
            uint64_t size;
            if (!s_chunk_size (f->line, &size)) {
                s_fail (f, "chunked body from the %s: bad chunk size line \"%.40s\"", s_peer (),
                        f->line);
                return true;
            }
            f->left = size;
            f->chunk = size ? C_DATA : C_TRAILER;
        } else if (f->chunk == C_DATA_END) {
            if (n != 0) {
                s_fail (f, "chunked body from the %s: no CRLF after a chunk", s_peer ());
                return true;
            }
            f->chunk = C_SIZE;
        } else if (n == 0) { /* C_TRAILER: the empty line ends the message */
            s_complete (f);
            return true;
        }
    }
    return false;
}

/* Does the header value [v, v + len) hold the token (case-insensitive)? */
static bool s_has_token (const char *v, size_t len, const char *token)
{
    size_t tl = strlen (token);
    for (size_t i = 0; i + tl <= len; i++)
        if (strncasecmp (v + i, token, tl) == 0)
            return true;
    return false;
}

/* The head grew from old to f->head_len bytes; true when the flow ended. */
static bool s_on_head (s_flow_t *f, size_t old)
{
    for (;;) {
        size_t from = old > 3 ? old - 3 : 0;
        char *end = memmem (f->head + from, f->head_len - from, "\r\n\r\n", 4);
        if (!end)
            return false;
        size_t head_len = (size_t) (end + 4 - f->head);
        *end = 0; /* the head is a string now; the body starts at end + 4 */
        char *eol = strstr (f->head, "\r\n");
        size_t first_len = eol ? (size_t) (eol - f->head) : strlen (f->head);
        const char *h = f->head;
        if (strncmp (h, "HTTP/1.", 7) != 0 || !isdigit ((unsigned char) h[7]) || h[8] != ' ' ||
            !isdigit ((unsigned char) h[9]) || !isdigit ((unsigned char) h[10]) ||
            !isdigit ((unsigned char) h[11]) || (h[12] != ' ' && h[12] != '\r' && h[12] != 0)) {
            s_fail (f, "bad status line from the %s: \"%.*s\"", s_peer (),
                    (int) (first_len < 150 ? first_len : 150), h);
            return true;
        }
        int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
        if (status >= 100 && status < 200 && status != 101) {
            /* an interim answer: the real one follows */
            memmove (f->head, f->head + head_len, f->head_len - head_len);
            f->head_len -= head_len;
            old = 0;
            continue;
        }
        if (status != 200) {
            s_fail (f, "status %d from the %s: %.*s", status, s_peer (),
                    (int) (first_len < 200 ? first_len : 200), h);
            return true;
        }
        bool chunked = false, has_length = false;
        uint64_t length = 0;
        for (char *p = eol ? eol + 2 : end; p < end;) {
            char *le = strstr (p, "\r\n");
            if (!le)
                le = end;
            char *colon = memchr (p, ':', (size_t) (le - p));
            if (colon) {
                size_t name_len = (size_t) (colon - p);
                char *v = colon + 1;
                while (v < le && (*v == ' ' || *v == '\t'))
                    v++;
                char *ve = le;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                if (name_len == 14 && strncasecmp (p, "content-length", 14) == 0) {
                    uint64_t x = 0;
                    bool ok = ve > v && ve - v <= 18;
                    for (char *d = v; ok && d < ve; d++) {
                        if (!isdigit ((unsigned char) *d))
                            ok = false;
                        else
                            x = x * 10 + (uint64_t) (*d - '0');
                    }
                    if (!ok) {
                        s_fail (f, "bad Content-Length from the %s: \"%.*s\"", s_peer (),
                                (int) (ve - v < 40 ? ve - v : 40), v);
                        return true;
                    }
                    has_length = true;
                    length = x;
                } else if (name_len == 17 && strncasecmp (p, "transfer-encoding", 17) == 0 &&
                           s_has_token (v, (size_t) (ve - v), "chunked")) {
                    chunked = true;
                }
            }
            p = le + 2;
        }
        f->phase = F_BODY;
        f->body = chunked ? B_CHUNKED : has_length ? B_LENGTH : B_EOF;
        f->chunk = C_SIZE;
        f->line_len = 0;
        f->length = f->left = length;
        f->got = 0;
        if (f->body == B_LENGTH && length == 0) {
            s_complete (f);
            return true;
        }
        if (f->head_len > head_len)
            return s_on_body (f, f->head + head_len, f->head_len - head_len);
        return false;
    }
}

static void s_on_eof (s_flow_t *f)
{
    if (f->phase == F_HEAD)
        s_fail (f, "the %s closed the connection %s", s_peer (),
                f->head_len ? "in the middle of the response head" : "before any response");
    else if (f->body == B_EOF)
        s_complete (f);
    else if (f->body == B_LENGTH)
        s_fail (f, "the %s closed the connection after %llu of %llu body bytes", s_peer (),
                (unsigned long long) f->got, (unsigned long long) f->length);
    else
        s_fail (f, "the %s closed the connection in the chunked body after %llu bytes", s_peer (),
                (unsigned long long) f->got);
}

static void s_read (s_flow_t *f)
{
    static char buf[S_READ_BUF];
    if (f->pending) {
        f->pending = false;
        s_npending--;
    }
    for (int round = 0; round < S_ROUNDS; round++) {
        ssize_t n;
        size_t old = f->head_len;
        if (f->phase == F_HEAD) {
            if (f->head_len >= S_HEAD_MAX) {
                s_fail (f, "the response head from the %s is longer than %d bytes", s_peer (),
                        S_HEAD_MAX);
                return;
            }
            n = s_recv (f, f->head + f->head_len, S_HEAD_MAX - f->head_len);
        } else {
            n = s_recv (f, buf, sizeof buf);
        }
        if (n == S_AGAIN || n == S_GONE)
            return;
        if (n == 0) {
            s_on_eof (f);
            return;
        }
        if (f->phase == F_HEAD) {
            f->head_len += (size_t) n;
            if (s_on_head (f, old))
                return;
        } else if (s_on_body (f, buf, (size_t) n)) {
            return;
        }
    }
    /* Out of rounds: bytes still in the socket wake epoll again, but bytes GnuTLS already
     * decrypted would not. */
    if (f->tls && !f->pending && gnutls_record_check_pending (f->tls) > 0) {
        f->pending = true;
        s_npending++;
    }
}

static void s_on_event (s_flow_t *f)
{
    switch (f->phase) {
    case F_CONNECTING:
        s_connected (f);
        break;
    case F_HANDSHAKE:
        s_handshake (f);
        break;
    case F_SEND:
        s_send (f);
        break;
    case F_HEAD:
    case F_BODY:
        s_read (f);
        break;
    default:
        break;
    }
}

/* ---- the run --------------------------------------------------------------------------- */

static void s_raise_nofile (long need)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t) need + 64;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    setrlimit (RLIMIT_NOFILE, &rl);
}

static void s_expire (void)
{
    int64_t limit = (int64_t) (o.flow_timeout_s * 1e9), now = s_now ();
    for (long i = 0; i < s_conc; i++) {
        s_flow_t *f = &s_flows[i];
        if (f->phase != F_FREE && now - f->t0 > limit)
            s_fail (f, "timed out after %g s %s (%s at %s)", o.flow_timeout_s, s_phase_name (f),
                    s_peer (), o.connect);
    }
}

static int s_cmp (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p % of them at or below it; in us. */
static double s_pct (const int64_t *v, long n, double p)
{
    if (n <= 0)
        return 0;
    uint64_t per_100k = (uint64_t) (p * 1000.0 + 0.5);
    long rank = (long) (((uint64_t) n * per_100k + 99999) / 100000);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double) v[rank - 1] / 1000.0;
}

static void s_report (int64_t total_ns)
{
    long n = s_done;
    qsort (s_lat, (size_t) n, sizeof *s_lat, s_cmp);
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += (double) s_lat[i];
    printf ("{\"mode\": \"https\", \"n\": %ld, \"p50_us\": %.1f, \"p90_us\": %.1f, "
            "\"p99_us\": %.1f, \"p999_us\": %.1f, \"min_us\": %.1f, \"max_us\": %.1f, "
            "\"mean_us\": %.1f, \"total_s\": %.3f, \"requests\": %ld, \"failed\": %ld, "
            "\"unfinished\": %ld, \"concurrency\": %ld, \"first_error\": \"",
            n, s_pct (s_lat, n, 50), s_pct (s_lat, n, 90), s_pct (s_lat, n, 99),
            s_pct (s_lat, n, 99.9), n ? (double) s_lat[0] / 1000.0 : 0,
            n ? (double) s_lat[n - 1] / 1000.0 : 0, n ? sum / (double) n / 1000.0 : 0,
            (double) total_ns / 1e9, o.count, s_failed, o.count - s_done - s_failed, s_conc);
    s_json_text (stdout, s_first_error);
    printf ("\"}\n");
    fflush (stdout);
    if (o.samples) {
        FILE *out = fopen (o.samples, "w");
        if (!out) {
            fprintf (stderr, "hermes-https-load: %s: %s\n", o.samples, strerror (errno));
            return;
        }
        for (long i = 0; i < n; i++)
            fprintf (out, "%.1f\n", (double) s_lat[i] / 1000.0);
        if (fclose (out) != 0)
            fprintf (stderr, "hermes-https-load: %s: %s\n", o.samples, strerror (errno));
    }
}

static void s_run (void)
{
    s_conc = o.concurrency < o.count ? o.concurrency : o.count;
    s_raise_nofile (s_conc);
    s_flows = calloc ((size_t) s_conc, sizeof *s_flows);
    s_free = calloc ((size_t) s_conc, sizeof *s_free);
    s_lat = calloc ((size_t) o.count, sizeof *s_lat);
    if (!s_flows || !s_free || !s_lat)
        s_fatal ("out of memory for %ld exchanges", o.count);
    for (long i = 0; i < s_conc; i++) {
        s_flows[i].fd = -1;
        s_flows[i].phase = F_FREE;
        s_free[s_nfree++] = s_conc - 1 - i;
    }
    s_ep = epoll_create1 (EPOLL_CLOEXEC);
    if (s_ep < 0)
        s_fatal ("epoll_create1: %s", strerror (errno));
    int64_t t0 = s_now (), deadline = t0 + (int64_t) (o.timeout_s * 1e9), last_expire = t0;
    struct epoll_event evs[512];
    while (s_done + s_failed < o.count && s_now () < deadline) {
        while (s_nfree > 0 && s_started < o.count)
            s_flow_start (&s_flows[s_free[--s_nfree]]);
        if (s_done + s_failed >= o.count)
            break;
        int n = epoll_wait (s_ep, evs, 512, s_npending ? 0 : 50);
        for (int i = 0; i < n; i++) {
            s_flow_t *f = evs[i].data.ptr;
            if (f->phase != F_FREE) /* it may have ended earlier in this batch */
                s_on_event (f);
        }
        if (s_npending)
            for (long i = 0; i < s_conc; i++)
                if (s_flows[i].pending)
                    s_read (&s_flows[i]);
        int64_t now = s_now ();
        if (now - last_expire >= 100000000LL) {
            s_expire ();
            last_expire = now;
        }
    }
    s_report (s_now () - t0);
}

/* ---- main ------------------------------------------------------------------------------ */

/* https://NAME[:PORT][/PATH] into o.host, o.authority and the request for --proxy. */
static void s_parse_url (void)
{
    const char *u = o.url;
    for (const char *p = u; *p; p++)
        if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f)
            s_usage ("--url %s: no spaces or control characters, please", u);
    if (strncasecmp (u, "https://", 8) != 0)
        s_usage ("--url %s: must start with https://", u);
    const char *auth = u + 8;
    size_t alen = strcspn (auth, "/?#");
    if (alen == 0 || alen >= sizeof o.authority || memchr (auth, '@', alen))
        s_usage ("--url %s: bad authority", u);
    memcpy (o.authority, auth, alen);
    o.authority[alen] = 0;
    const char *port = NULL;
    if (o.authority[0] == '[') {
        char *close = strchr (o.authority, ']');
        if (!close || close == o.authority + 1)
            s_usage ("--url %s: bad IPv6 literal", u);
        snprintf (o.host, sizeof o.host, "%.*s", (int) (close - o.authority - 1), o.authority + 1);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1])
            s_usage ("--url %s: bad authority", u);
    } else {
        char *colon = strchr (o.authority, ':');
        size_t hlen = colon ? (size_t) (colon - o.authority) : alen;
        if (hlen == 0 || hlen >= sizeof o.host)
            s_usage ("--url %s: bad host name", u);
        snprintf (o.host, sizeof o.host, "%.*s", (int) hlen, o.authority);
        if (colon)
            port = colon + 1;
    }
    if (port) {
        char *e;
        long p = strtol (port, &e, 10);
        if (!*port || *e || p < 1 || p > 65535)
            s_usage ("--url %s: bad port", u);
    }
    unsigned char ip[16];
    o.host_is_ip = inet_pton (AF_INET, o.host, ip) == 1 || inet_pton (AF_INET6, o.host, ip) == 1;

    const char *rest = auth + alen;
    size_t plen = strcspn (rest, "#"); /* a fragment is not sent */
    const char *slash = rest[0] == '/' ? "" : "/";
    int n;
    if (o.proxy == PROXY_H1)
        n = asprintf (&s_req,
                      "GET https://%s%s%.*s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                      o.authority, slash, (int) plen, rest, o.authority);
    else
        n = asprintf (&s_req, "GET %s%.*s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", slash,
                      (int) plen, rest, o.authority);
    if (n < 0)
        s_fatal ("out of memory");
    s_req_len = (size_t) n;
}

static long s_long (const char *name, const char *v)
{
    char *e;
    errno = 0;
    long x = strtol (v, &e, 10);
    if (errno || e == v || *e)
        s_usage ("%s %s: not a whole number", name, v);
    return x;
}

static double s_double (const char *name, const char *v)
{
    char *e;
    errno = 0;
    double x = strtod (v, &e);
    if (errno || e == v || *e)
        s_usage ("%s %s: not a number", name, v);
    return x;
}

int main (int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            s_usage ("%s: a value is missing", a);
        const char *v = argv[++i];
        if (strcmp (a, "--connect") == 0)
            o.connect = v;
        else if (strcmp (a, "--url") == 0)
            o.url = v;
        else if (strcmp (a, "--proxy") == 0) {
            if (strcmp (v, "none") == 0)
                o.proxy = PROXY_NONE;
            else if (strcmp (v, "h1") == 0)
                o.proxy = PROXY_H1;
            else
                s_usage ("--proxy %s: none or h1", v);
        } else if (strcmp (a, "--count") == 0)
            o.count = s_long (a, v);
        else if (strcmp (a, "--concurrency") == 0)
            o.concurrency = s_long (a, v);
        else if (strcmp (a, "--timeout-s") == 0)
            o.timeout_s = s_double (a, v);
        else if (strcmp (a, "--flow-timeout-s") == 0)
            o.flow_timeout_s = s_double (a, v);
        else if (strcmp (a, "--samples") == 0)
            o.samples = v;
        else if (strcmp (a, "--ca") == 0)
            o.ca = v;
        else
            s_usage ("unknown option %s", a);
    }
    if (!o.connect || !o.url)
        s_usage ("--connect and --url are needed");
    if (o.count < 1 || o.concurrency < 1)
        s_usage ("--count and --concurrency must be at least 1");
    if (!(o.timeout_s > 0) || !(o.flow_timeout_s > 0))
        s_usage ("--timeout-s and --flow-timeout-s must be positive");
    if (bench_parse_hostport (o.connect, &o.addr, &o.addrlen) != 0)
        s_usage ("--connect %s: a numeric ip:port, please", o.connect);
    s_parse_url ();
    signal (SIGPIPE, SIG_IGN);

    if (o.proxy == PROXY_NONE) {
        int rc = gnutls_global_init ();
        if (rc < 0)
            s_fatal ("gnutls_global_init: %s", gnutls_strerror (rc));
        rc = gnutls_certificate_allocate_credentials (&s_cred);
        if (rc < 0)
            s_fatal ("gnutls credentials: %s", gnutls_strerror (rc));
        if (o.ca) {
            rc = gnutls_certificate_set_x509_trust_file (s_cred, o.ca, GNUTLS_X509_FMT_PEM);
            if (rc < 0)
                s_fatal ("--ca %s: %s", o.ca, gnutls_strerror (rc));
            if (rc == 0)
                s_fatal ("--ca %s: no certificate in it", o.ca);
        }
        const char *err_pos = NULL;
        rc = gnutls_priority_init (&s_prio, "NORMAL", &err_pos);
        if (rc < 0)
            s_fatal ("gnutls priority NORMAL: %s", gnutls_strerror (rc));
    }
    s_run ();
    return 0;
}
