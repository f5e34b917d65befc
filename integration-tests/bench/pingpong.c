/* hermes-pingpong: the client end of the data-path benchmark (datapath.py).
 *
 *   hermes-pingpong MODE --connect HOST:PORT [--target HOST:PORT] [--proxy none|h1|h2] ...
 *
 * It reaches hermes-bench-target directly (--proxy none: TCP to --connect, which is the
 * target itself or a TCP proxy such as haproxy), through an HTTP/1.1 CONNECT proxy (h1), or
 * through an HTTP/2 CONNECT proxy over TLS (h2; the proxy's certificate is not checked).
 * --target is the authority put into CONNECT.
 *
 * Modes (one JSON object on stdout; times in microseconds):
 *   latency    one tunnel, --warmup then --count round trips of --size bytes (echo)
 *   setup      --count times: connect, CONNECT, one round trip of --size bytes, close
 *              (--pipeline: the round trip's bytes ride with the CONNECT, h1 only)
 *   bulk-up    one tunnel, --bytes from the client to the target (which answers the count)
 *   bulk-down  one tunnel, --bytes from the target to the client
 *   rpc        --count HTTPS-like exchanges (--rpc A,B,C,D: client sends A, target B,
 *              client C, target D), --concurrency at a time, each on a new connection
 *              (none/h1 only); --pipeline sends the first A bytes right behind the
 *              CONNECT head instead of waiting for the 200
 *   idle       opens --count tunnels (none/h1 only, --concurrency at a time), with one
 *              echo of --size bytes each unless --size 0; prints a first JSON line when
 *              they are all open, holds them until stdin closes (or --hold-s), then
 *              prints a second line (how many the other side closed meanwhile)
 * Every wait is bounded: --timeout-s for the whole run (default 120). */
#include "bench_net.h"
#include "bench_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define S_CHUNK (256 * 1024)

typedef enum { P_NONE, P_H1, P_H2 } s_proxy_t;

static struct {
    const char *mode;
    const char *connect;
    const char *target;
    s_proxy_t proxy;
    long count, warmup, size, concurrency;
    unsigned long long bytes;
    uint64_t rpc[4];
    bool pipeline;
    double timeout_s, hold_s, flow_timeout_s;
    const char *samples;
    struct sockaddr_storage addr;
    socklen_t addrlen;
} o = {.count = 1000,
       .warmup = 100,
       .size = 1024,
       .concurrency = 100,
       .bytes = 1ULL << 30,
       .rpc = {517, 4096, 600, 16384},
       .timeout_s = 120,
       .hold_s = 600,
       .flow_timeout_s = 30};

static int64_t s_deadline;

static int64_t s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void s_die (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    char msg[1024];
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
    fprintf (stderr, "hermes-pingpong: %s\n", msg);
    /* a JSON line too, so the driver always has something to read */
    printf ("{\"mode\": \"%s\", \"error\": \"", o.mode ? o.mode : "-");
    for (const char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\')
            printf ("\\%c", *p);
        else if ((unsigned char) *p >= 0x20)
            putchar (*p);
    printf ("\"}\n");
    fflush (stdout);
    exit (1);
}

static void s_check_deadline (void)
{
    if (s_now () > s_deadline)
        s_die ("deadline of %.0f s passed", o.timeout_s);
}

/* ---- statistics ------------------------------------------------------------------- */

static int s_cmp (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted ns samples, in us. */
static double s_pct (const int64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t rank = (size_t) ((p / 100.0) * (double) n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double) v[rank - 1] / 1000.0;
}

static void s_print_stats (const char *extra_fmt, int64_t *v, size_t n, ...)
{
    qsort (v, n, sizeof *v, s_cmp);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double) v[i];
    printf ("{\"mode\": \"%s\", \"n\": %zu, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
            "\"p999_us\": %.1f, \"min_us\": %.1f, \"max_us\": %.1f, \"mean_us\": %.1f",
            o.mode, n, s_pct (v, n, 50), s_pct (v, n, 90), s_pct (v, n, 99), s_pct (v, n, 99.9),
            n ? (double) v[0] / 1000.0 : 0, n ? (double) v[n - 1] / 1000.0 : 0,
            n ? sum / (double) n / 1000.0 : 0);
    if (extra_fmt) {
        va_list ap;
        va_start (ap, n);
        vprintf (extra_fmt, ap);
        va_end (ap);
    }
    printf ("}\n");
    fflush (stdout);
    if (o.samples) {
        FILE *f = fopen (o.samples, "w");
        if (f) {
            for (size_t i = 0; i < n; i++)
                fprintf (f, "%.1f\n", (double) v[i] / 1000.0);
            fclose (f);
        }
    }
}

/* ---- blocking transports: TCP, HTTP/1.1 CONNECT, HTTP/2 CONNECT over TLS ---------- */

typedef struct {
    int fd;
    gnutls_session_t tls;
    gnutls_certificate_credentials_t cred;
    nghttp2_session *s;
    int32_t sid;
    const uint8_t *out;
    size_t out_len;
    uint8_t *in;
    size_t in_len, in_off, in_cap;
    int status;
    bool got_headers, closed, remote_eof;
    uint32_t close_code;
} s_h2_t;

typedef struct {
    int fd;
    s_h2_t *h2;
    char left[4096]; /* bytes that followed the proxy's answer head */
    size_t left_len, left_off;
} s_tr_t;

static int s_tcp_connect (void)
{
    int fd = socket (o.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        s_die ("socket: %s", strerror (errno));
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double left = (double) (s_deadline - s_now ()) / 1e9;
    if (left < 0.1)
        left = 0.1;
    if (left > 30)
        left = 30;
    struct timeval tv = {.tv_sec = (time_t) left,
                         .tv_usec = (suseconds_t) ((left - (double) (time_t) left) * 1e6)};
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect (fd, (struct sockaddr *) &o.addr, o.addrlen) < 0)
        s_die ("connect %s: %s", o.connect, strerror (errno));
    return fd;
}

static void s_send_all (int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send (fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            s_die ("send: %s", errno == EAGAIN ? "timed out" : strerror (errno));
        }
        p += n;
        len -= (size_t) n;
    }
}

/* -- HTTP/2 -- */

static ssize_t s_h2_send_cb (nghttp2_session *session, const uint8_t *data, size_t len, int flags,
                             void *ud)
{
    s_h2_t *c = ud;
    ssize_t n;
    do
        n = gnutls_record_send (c->tls, data, len);
    while (n == GNUTLS_E_INTERRUPTED);
    if (n < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static int s_h2_header_cb (nghttp2_session *session, const nghttp2_frame *frame,
                           const uint8_t *name, size_t namelen, const uint8_t *value,
                           size_t valuelen, uint8_t flags, void *ud)
{
    s_h2_t *c = ud;
    if (frame->hd.stream_id == c->sid && namelen == 7 && memcmp (name, ":status", 7) == 0)
        c->status = atoi ((const char *) value);
    return 0;
}

static int s_h2_frame_cb (nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    s_h2_t *c = ud;
    if (frame->hd.stream_id != c->sid)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && c->status >= 200)
        c->got_headers = true;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        c->remote_eof = true;
    return 0;
}

static int s_h2_data_cb (nghttp2_session *session, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud)
{
    s_h2_t *c = ud;
    if (sid != c->sid)
        return 0;
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->in_len + len > c->in_cap) {
        if (c->in_off) {
            memmove (c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        if (c->in_len + len > c->in_cap) {
            c->in_cap = (c->in_len + len) * 2;
            c->in = realloc (c->in, c->in_cap);
            if (!c->in)
                abort ();
        }
    }
    memcpy (c->in + c->in_len, data, len);
    c->in_len += len;
    return 0;
}

static int s_h2_close_cb (nghttp2_session *session, int32_t sid, uint32_t code, void *ud)
{
    s_h2_t *c = ud;
    if (sid == c->sid) {
        c->closed = true;
        c->close_code = code;
    }
    return 0;
}

static ssize_t s_h2_read_cb (nghttp2_session *session, int32_t sid, uint8_t *buf, size_t len,
                             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    s_h2_t *c = ud;
    if (c->out_len == 0)
        return NGHTTP2_ERR_DEFERRED;
    size_t n = len < c->out_len ? len : c->out_len;
    memcpy (buf, c->out, n);
    c->out += n;
    c->out_len -= n;
    return (ssize_t) n;
}

static void s_h2_flush (s_h2_t *c)
{
    int rv = nghttp2_session_send (c->s);
    if (rv != 0)
        s_die ("HTTP/2 send: %s", nghttp2_strerror (rv));
}

/* Reads one TLS record and feeds it to the session. */
static void s_h2_read_some (s_h2_t *c)
{
    static uint8_t buf[65536];
    ssize_t n;
    do {
        s_check_deadline ();
        n = gnutls_record_recv (c->tls, buf, sizeof buf);
    } while (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN);
    if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
        c->closed = c->remote_eof = true;
        return;
    }
    if (n < 0)
        s_die ("TLS read: %s", gnutls_strerror ((int) n));
    ssize_t rv = nghttp2_session_mem_recv (c->s, buf, (size_t) n);
    if (rv < 0)
        s_die ("HTTP/2 from the proxy: %s", nghttp2_strerror ((int) rv));
    s_h2_flush (c);
}

static s_h2_t *s_h2_open (int fd)
{
    s_h2_t *c = calloc (1, sizeof *c);
    if (!c)
        abort ();
    c->fd = fd;
    gnutls_certificate_allocate_credentials (&c->cred);
    gnutls_init (&c->tls, GNUTLS_CLIENT);
    gnutls_set_default_priority (c->tls);
    gnutls_credentials_set (c->tls, GNUTLS_CRD_CERTIFICATE, c->cred);
    gnutls_datum_t alpn = {(unsigned char *) "h2", 2};
    gnutls_alpn_set_protocols (c->tls, &alpn, 1, 0);
    gnutls_transport_set_int (c->tls, fd);
    int rc;
    do {
        s_check_deadline ();
        rc = gnutls_handshake (c->tls);
    } while (rc < 0 && !gnutls_error_is_fatal (rc));
    if (rc < 0)
        s_die ("TLS handshake with %s: %s", o.connect, gnutls_strerror (rc));
    gnutls_datum_t proto;
    if (gnutls_alpn_get_selected_protocol (c->tls, &proto) != 0 || proto.size != 2 ||
        memcmp (proto.data, "h2", 2) != 0)
        s_die ("%s did not select h2 by ALPN", o.connect);

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new (&cbs);
    nghttp2_session_callbacks_set_send_callback (cbs, s_h2_send_cb);
    nghttp2_session_callbacks_set_on_header_callback (cbs, s_h2_header_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback (cbs, s_h2_frame_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback (cbs, s_h2_data_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback (cbs, s_h2_close_cb);
    nghttp2_session_client_new (&c->s, cbs, c);
    nghttp2_session_callbacks_del (cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 << 20},
                                   {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    nghttp2_submit_settings (c->s, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size (c->s, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    const char *target = o.target ? o.target : o.connect;
    nghttp2_nv nva[] = {
        {(uint8_t *) ":method", (uint8_t *) "CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *) ":authority", (uint8_t *) target, 10, strlen (target), NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = s_h2_read_cb};
    c->sid = nghttp2_submit_request (c->s, NULL, nva, 2, &prd, c);
    if (c->sid < 0)
        s_die ("HTTP/2 CONNECT: %s", nghttp2_strerror (c->sid));
    s_h2_flush (c);
    while (!c->got_headers && !c->closed)
        s_h2_read_some (c);
    if (c->status != 200)
        s_die ("the proxy answered CONNECT with %d", c->status);
    return c;
}

static void s_h2_write (s_h2_t *c, const void *data, size_t len)
{
    c->out = data;
    c->out_len = len;
    nghttp2_session_resume_data (c->s, c->sid);
    for (;;) {
        s_h2_flush (c);
        if (c->out_len == 0)
            return;
        if (c->closed)
            s_die ("the proxy closed the stream while the client was sending");
        s_h2_read_some (c); /* waits for WINDOW_UPDATE */
        nghttp2_session_resume_data (c->s, c->sid);
    }
}

static size_t s_h2_recv (s_h2_t *c, void *buf, size_t len)
{
    while (c->in_off == c->in_len) {
        if (c->remote_eof || c->closed)
            return 0;
        s_h2_read_some (c);
    }
    size_t n = c->in_len - c->in_off;
    if (n > len)
        n = len;
    memcpy (buf, c->in + c->in_off, n);
    c->in_off += n;
    return n;
}

static void s_h2_close (s_h2_t *c)
{
    nghttp2_session_del (c->s);
    gnutls_deinit (c->tls);
    gnutls_certificate_free_credentials (c->cred);
    free (c->in);
    free (c);
}

/* -- the three kinds behind one interface -- */

static void s_tr_send (s_tr_t *t, const void *data, size_t len);

/* Opens the tunnel; with an HTTP/1.1 proxy, early bytes (if any) go in the same write as
 * the CONNECT, before its answer (a pipelining client). */
static void s_tr_open (s_tr_t *t, const void *early, size_t early_len)
{
    memset (t, 0, sizeof *t);
    t->fd = s_tcp_connect ();
    const char *target = o.target ? o.target : o.connect;
    if (o.proxy == P_H1) {
        char req[600 + sizeof (bench_hdr_t) + 65536];
        int n = snprintf (req, 600, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
        if (early_len > sizeof req - (size_t) n)
            s_die ("early bytes too long");
        memcpy (req + n, early, early_len);
        s_send_all (t->fd, req, (size_t) n + early_len);
        char head[4096];
        size_t len = 0;
        char *end = NULL;
        while (!end) {
            if (len == sizeof head - 1)
                s_die ("the proxy's answer head is too long");
            ssize_t r = recv (t->fd, head + len, sizeof head - 1 - len, 0);
            if (r <= 0)
                s_die ("the proxy closed or failed before answering CONNECT (%s)",
                       r < 0 ? strerror (errno) : "EOF");
            len += (size_t) r;
            head[len] = 0;
            end = strstr (head, "\r\n\r\n");
        }
        if (strncmp (head, "HTTP/1.1 200", 12) != 0 && strncmp (head, "HTTP/1.0 200", 12) != 0) {
            char *eol = strstr (head, "\r\n");
            if (eol)
                *eol = 0;
            s_die ("the proxy answered CONNECT with: %s", head);
        }
        size_t head_len = (size_t) (end + 4 - head);
        t->left_len = len - head_len;
        memcpy (t->left, head + head_len, t->left_len);
    } else if (o.proxy == P_H2)
        t->h2 = s_h2_open (t->fd);
    if (early_len && o.proxy != P_H1)
        s_tr_send (t, early, early_len);
}

static void s_tr_send (s_tr_t *t, const void *data, size_t len)
{
    if (t->h2)
        s_h2_write (t->h2, data, len);
    else
        s_send_all (t->fd, data, len);
}

static size_t s_tr_recv (s_tr_t *t, void *buf, size_t len)
{
    if (t->left_off < t->left_len) {
        size_t n = t->left_len - t->left_off;
        if (n > len)
            n = len;
        memcpy (buf, t->left + t->left_off, n);
        t->left_off += n;
        return n;
    }
    if (t->h2)
        return s_h2_recv (t->h2, buf, len);
    for (;;) {
        ssize_t n = recv (t->fd, buf, len, 0);
        if (n >= 0)
            return (size_t) n;
        if (errno == EINTR)
            continue;
        s_die ("recv: %s", errno == EAGAIN ? "timed out" : strerror (errno));
    }
}

static void s_tr_recv_all (s_tr_t *t, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        size_t n = s_tr_recv (t, p, len);
        if (n == 0)
            s_die ("the tunnel closed early");
        p += n;
        len -= n;
    }
}

static void s_tr_close (s_tr_t *t)
{
    if (t->h2)
        s_h2_close (t->h2);
    close (t->fd);
}

/* The header and the first bytes after it into buf (room for sizeof (bench_hdr_t) +
 * 65536); returns their length. */
static size_t s_hdr_build (char *buf, uint32_t op, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
                           const void *first, size_t first_len)
{
    bench_hdr_t h = {.op = op, .a = a, .b = b, .c = c, .d = d};
    memcpy (h.magic, BENCH_MAGIC, 4);
    memcpy (buf, &h, sizeof h);
    if (first_len > 65536)
        first_len = 65536;
    if (first_len)
        memcpy (buf + sizeof h, first, first_len);
    return sizeof h + first_len;
}

static void s_hdr (s_tr_t *t, uint32_t op, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
                   const void *first, size_t first_len)
{
    char buf[sizeof (bench_hdr_t) + 65536];
    s_tr_send (t, buf, s_hdr_build (buf, op, a, b, c, d, first, first_len));
}

/* ---- blocking modes ------------------------------------------------------------------ */

static int s_latency (void)
{
    size_t size = (size_t) o.size;
    char *msg = calloc (1, size), *back = malloc (size);
    int64_t *v = calloc ((size_t) o.count, sizeof *v);
    if (!msg || !back || !v)
        abort ();
    s_tr_t t;
    s_tr_open (&t, NULL, 0);
    s_hdr (&t, BENCH_ECHO, 0, 0, 0, 0, NULL, 0);
    for (long i = 0; i < o.warmup + o.count; i++) {
        if ((i & 255) == 0)
            s_check_deadline ();
        int64_t t0 = s_now ();
        s_tr_send (&t, msg, size);
        s_tr_recv_all (&t, back, size);
        if (i >= o.warmup)
            v[i - o.warmup] = s_now () - t0;
    }
    s_tr_close (&t);
    s_print_stats (NULL, v, (size_t) o.count);
    return 0;
}

static int s_setup (void)
{
    size_t size = (size_t) o.size;
    char *msg = calloc (1, size), *back = malloc (size);
    int64_t *v = calloc ((size_t) o.count, sizeof *v);
    if (!msg || !back || !v)
        abort ();
    for (long i = 0; i < o.warmup + o.count; i++) {
        s_check_deadline ();
        int64_t t0 = s_now ();
        s_tr_t t;
        char first[sizeof (bench_hdr_t) + 65536];
        size_t n = s_hdr_build (first, BENCH_ECHO, 0, 0, 0, 0, msg, size);
        if (o.pipeline) /* the request rides with the CONNECT */
            s_tr_open (&t, first, n);
        else {
            s_tr_open (&t, NULL, 0);
            s_tr_send (&t, first, n);
        }
        s_tr_recv_all (&t, back, size);
        int64_t dt = s_now () - t0;
        s_tr_close (&t);
        if (i >= o.warmup)
            v[i - o.warmup] = dt;
    }
    s_print_stats (NULL, v, (size_t) o.count);
    return 0;
}

static void s_print_bulk (unsigned long long bytes, int64_t ns)
{
    double s = (double) ns / 1e9;
    printf ("{\"mode\": \"%s\", \"bytes\": %llu, \"seconds\": %.4f, \"mib_per_s\": %.1f, "
            "\"gbit_per_s\": %.3f}\n",
            o.mode, bytes, s, (double) bytes / s / 1048576.0, (double) bytes * 8 / s / 1e9);
    fflush (stdout);
}

static int s_bulk_up (void)
{
    static char chunk[S_CHUNK];
    s_tr_t t;
    s_tr_open (&t, NULL, 0);
    int64_t t0 = s_now ();
    s_hdr (&t, BENCH_SINK, o.bytes, 0, 0, 0, NULL, 0);
    unsigned long long left = o.bytes;
    long rounds = 0;
    while (left > 0) {
        if ((++rounds & 63) == 0)
            s_check_deadline ();
        size_t n = left < S_CHUNK ? (size_t) left : S_CHUNK;
        s_tr_send (&t, chunk, n);
        left -= n;
    }
    uint64_t count = 0;
    s_tr_recv_all (&t, &count, sizeof count);
    int64_t dt = s_now () - t0;
    s_tr_close (&t);
    if (count != o.bytes)
        s_die ("the target counted %llu bytes, not %llu", (unsigned long long) count, o.bytes);
    s_print_bulk (o.bytes, dt);
    return 0;
}

static int s_bulk_down (void)
{
    static char chunk[S_CHUNK];
    s_tr_t t;
    s_tr_open (&t, NULL, 0);
    int64_t t0 = s_now ();
    s_hdr (&t, BENCH_SOURCE, o.bytes, 0, 0, 0, NULL, 0);
    unsigned long long left = o.bytes;
    long rounds = 0;
    while (left > 0) {
        if ((++rounds & 63) == 0)
            s_check_deadline ();
        size_t n = s_tr_recv (&t, chunk, left < S_CHUNK ? (size_t) left : S_CHUNK);
        if (n == 0)
            s_die ("the tunnel closed with %llu bytes still to come", left);
        left -= n;
    }
    int64_t dt = s_now () - t0;
    s_tr_close (&t);
    s_print_bulk (o.bytes, dt);
    return 0;
}

/* ---- non-blocking modes: rpc and idle ------------------------------------------------ */

enum { F_CONNECTING, F_HEAD, F_READ1, F_READ2, F_IDLE_ECHO, F_IDLE, F_FREE };

typedef struct {
    int fd;
    int phase;
    int64_t t0;
    char head[1024];
    size_t head_len;
    uint64_t need_in;
    char *out;
    size_t out_len, out_off;
    uint32_t events;
} s_flow_t;

static int s_ep;
static s_flow_t *s_flows;
static long s_started, s_done, s_failed, s_live, s_peer_closed;
static int64_t *s_lat;
static char s_zero[S_CHUNK];
static char s_fail_why[256];

static void s_flow_want (s_flow_t *f, uint32_t ev)
{
    if (ev != f->events) {
        struct epoll_event e = {.events = ev, .data.ptr = f};
        epoll_ctl (s_ep, EPOLL_CTL_MOD, f->fd, &e);
        f->events = ev;
    }
}

static void s_flow_end (s_flow_t *f, const char *why)
{
    if (why) {
        s_failed++;
        if (!s_fail_why[0])
            snprintf (s_fail_why, sizeof s_fail_why, "%s", why);
    }
    epoll_ctl (s_ep, EPOLL_CTL_DEL, f->fd, NULL);
    if (why) {
        struct linger lg = {1, 0};
        setsockopt (f->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close (f->fd);
    free (f->out);
    f->out = NULL;
    f->fd = -1;
    f->phase = F_FREE;
    s_live--;
}

static void s_queue (s_flow_t *f, const void *data, size_t len)
{
    size_t rest = f->out_len - f->out_off;
    char *p = malloc (rest + len);
    if (!p)
        abort ();
    if (rest)
        memcpy (p, f->out + f->out_off, rest);
    memcpy (p + rest, data, len);
    free (f->out);
    f->out = p;
    f->out_len = rest + len;
    f->out_off = 0;
}

static void s_queue_hdr (s_flow_t *f, uint32_t op, uint64_t first_len)
{
    bench_hdr_t h = {.op = op, .a = o.rpc[0], .b = o.rpc[1], .c = o.rpc[2], .d = o.rpc[3]};
    memcpy (h.magic, BENCH_MAGIC, 4);
    s_queue (f, &h, sizeof h);
    while (first_len > 0) {
        size_t n = first_len < S_CHUNK ? (size_t) first_len : S_CHUNK;
        s_queue (f, s_zero, n);
        first_len -= n;
    }
}

static void s_queue_connect (s_flow_t *f)
{
    char req[600];
    const char *target = o.target ? o.target : o.connect;
    int n = snprintf (req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
    s_queue (f, req, (size_t) n);
}

/* -1 when the flow ended */
static int s_flow_flush (s_flow_t *f)
{
    while (f->out_off < f->out_len) {
        ssize_t n = send (f->fd, f->out + f->out_off, f->out_len - f->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            s_flow_end (f, strerror (errno));
            return -1;
        }
        f->out_off += (size_t) n;
    }
    free (f->out);
    f->out = NULL;
    f->out_len = f->out_off = 0;
    return 0;
}

static bool s_rpc;

static void s_flow_update (s_flow_t *f)
{
    if (f->phase == F_FREE)
        return;
    uint32_t ev = EPOLLIN;
    if (f->out_len > f->out_off)
        ev |= EPOLLOUT;
    s_flow_want (f, ev);
}

static void s_flow_start (s_flow_t *f)
{
    f->fd = socket (o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (f->fd < 0)
        s_die ("socket: %s (raise RLIMIT_NOFILE?)", strerror (errno));
    int one = 1;
    setsockopt (f->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    f->t0 = s_now ();
    f->head_len = 0;
    f->phase = F_CONNECTING;
    f->events = EPOLLOUT;
    s_started++;
    s_live++;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = f};
    epoll_ctl (s_ep, EPOLL_CTL_ADD, f->fd, &e);
    if (connect (f->fd, (struct sockaddr *) &o.addr, o.addrlen) < 0 && errno != EINPROGRESS)
        s_flow_end (f, strerror (errno));
}

/* The tunnel is open (after the 200, or at once without a proxy): first request. */
static void s_flow_tunnel_ready (s_flow_t *f, size_t already_in)
{
    if (s_rpc) {
        if (!(o.pipeline && o.proxy == P_H1))
            s_queue_hdr (f, BENCH_RPC, o.rpc[0]);
        f->phase = F_READ1;
        f->need_in = o.rpc[1];
    } else if (o.size > 0) {
        s_queue_hdr (f, BENCH_ECHO, (uint64_t) o.size);
        f->phase = F_IDLE_ECHO;
        f->need_in = (uint64_t) o.size;
    } else {
        f->phase = F_IDLE;
        s_done++;
        return;
    }
    if (already_in >= f->need_in)
        f->need_in = 0;
    else
        f->need_in -= already_in;
}

static void s_flow_progress (s_flow_t *f);

static void s_flow_connected (s_flow_t *f)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt (f->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        s_flow_end (f, strerror (err));
        return;
    }
    if (o.proxy == P_H1) {
        s_queue_connect (f);
        if (s_rpc && o.pipeline)
            s_queue_hdr (f, BENCH_RPC, o.rpc[0]);
        f->phase = F_HEAD;
    } else
        s_flow_tunnel_ready (f, 0);
    if (s_flow_flush (f) < 0)
        return;
    s_flow_progress (f);
}

/* Moves a flow whose current read step is complete on to its next step. */
static void s_flow_progress (s_flow_t *f)
{
    while (f->phase != F_FREE && f->need_in == 0) {
        if (f->phase == F_READ1) {
            s_queue (f, s_zero, (size_t) o.rpc[2]);
            f->phase = F_READ2;
            f->need_in = o.rpc[3];
            if (s_flow_flush (f) < 0)
                return;
        } else if (f->phase == F_READ2) {
            s_lat[s_done++] = s_now () - f->t0;
            s_flow_end (f, NULL);
            return;
        } else if (f->phase == F_IDLE_ECHO) {
            f->phase = F_IDLE;
            s_done++;
        } else
            break;
    }
    s_flow_update (f);
}

static void s_flow_read (s_flow_t *f)
{
    static char buf[S_CHUNK];
    for (int rounds = 0; rounds < 8 && f->phase != F_FREE; rounds++) {
        /* as a real client does, everything there is in one read, the proxy's answer head
         * included (reading the head alone would cost a CONNECT arm one more recv) */
        ssize_t n = recv (f->fd, buf, sizeof buf, 0);
        if (n == 0) {
            if (f->phase == F_IDLE) {
                s_peer_closed++;
                s_flow_end (f, NULL);
            } else
                s_flow_end (f, "the other side closed early");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            if (f->phase == F_IDLE)
                s_peer_closed++;
            s_flow_end (f, f->phase == F_IDLE ? NULL : strerror (errno));
            return;
        }
        if (f->phase == F_HEAD) {
            size_t before = f->head_len;
            size_t take = sizeof f->head - 1 - before;
            if ((size_t) n < take)
                take = (size_t) n;
            memcpy (f->head + before, buf, take);
            f->head_len += take;
            f->head[f->head_len] = 0;
            char *end = strstr (f->head, "\r\n\r\n");
            if (!end) {
                if (f->head_len >= sizeof f->head - 1)
                    s_flow_end (f, "the proxy's answer head is too long");
                continue;
            }
            if (strncmp (f->head, "HTTP/1.1 200", 12) != 0 &&
                strncmp (f->head, "HTTP/1.0 200", 12) != 0) {
                char *eol = strstr (f->head, "\r\n");
                if (eol)
                    *eol = 0;
                char why[200];
                snprintf (why, sizeof why, "proxy answered: %.150s", f->head);
                s_flow_end (f, why);
                return;
            }
            size_t head_len = (size_t) (end + 4 - f->head);
            s_flow_tunnel_ready (f, (size_t) n - (head_len - before)); /* the rest: payload */
            if (s_flow_flush (f) < 0)
                return;
        } else if (f->phase == F_READ1 || f->phase == F_READ2 || f->phase == F_IDLE_ECHO) {
            uint64_t take = (uint64_t) n < f->need_in ? (uint64_t) n : f->need_in;
            f->need_in -= take;
        } else if (f->phase == F_IDLE) {
            /* an idle tunnel should hear nothing */
        }
        s_flow_progress (f);
    }
    if (f->phase != F_FREE)
        s_flow_update (f);
}

static void s_on_flow_event (s_flow_t *f, uint32_t events)
{
    if (f->phase == F_CONNECTING) {
        s_flow_connected (f);
        return;
    }
    if ((events & EPOLLOUT) && s_flow_flush (f) < 0)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        s_flow_read (f);
    else
        s_flow_update (f);
}

static void s_raise_nofile (long need)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t) need + 64;
    if (rl.rlim_max < want) {
        rl.rlim_max = want; /* root may raise the hard limit */
        rl.rlim_cur = want;
        if (setrlimit (RLIMIT_NOFILE, &rl) == 0)
            return;
        getrlimit (RLIMIT_NOFILE, &rl);
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit (RLIMIT_NOFILE, &rl);
}

static void s_loop_once (int timeout_ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait (s_ep, evs, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        s_flow_t *f = evs[i].data.ptr;
        if (f && f->phase != F_FREE)
            s_on_flow_event (f, evs[i].events);
    }
}

/* Flows past --flow-timeout-s (not idle ones) fail. */
static void s_expire (long nflows)
{
    int64_t limit = (int64_t) (o.flow_timeout_s * 1e9);
    int64_t now = s_now ();
    for (long i = 0; i < nflows; i++) {
        s_flow_t *f = &s_flows[i];
        if (f->phase != F_FREE && f->phase != F_IDLE && now - f->t0 > limit)
            s_flow_end (f, "flow timed out");
    }
}

static int s_run_rpc (void)
{
    s_rpc = true;
    long conc = o.concurrency < o.count ? o.concurrency : o.count;
    s_raise_nofile (conc);
    s_flows = calloc ((size_t) conc, sizeof *s_flows);
    s_lat = calloc ((size_t) o.count, sizeof *s_lat);
    if (!s_flows || !s_lat)
        abort ();
    s_ep = epoll_create1 (EPOLL_CLOEXEC);
    for (long i = 0; i < conc; i++)
        s_flows[i].phase = F_FREE;
    int64_t t0 = s_now (), last_expire = t0;
    for (long i = 0; i < conc; i++)
        s_flow_start (&s_flows[i]);
    while (s_done + s_failed < o.count) {
        if (s_now () > s_deadline)
            break;
        s_loop_once (50);
        for (long i = 0; i < conc; i++)
            if (s_flows[i].phase == F_FREE && s_started < o.count)
                s_flow_start (&s_flows[i]);
        if (s_now () - last_expire > 100000000LL) {
            s_expire (conc);
            last_expire = s_now ();
        }
    }
    int64_t total = s_now () - t0;
    long unfinished = o.count - s_done - s_failed;
    s_print_stats (", \"total_s\": %.3f, \"requests\": %ld, \"failed\": %ld, \"unfinished\": %ld, "
                   "\"concurrency\": %ld, \"first_error\": \"%s\"",
                   s_lat, (size_t) s_done, (double) total / 1e9, o.count, s_failed, unfinished,
                   conc, s_fail_why);
    return 0;
}

static int s_run_idle (void)
{
    s_raise_nofile (o.count);
    s_flows = calloc ((size_t) o.count, sizeof *s_flows);
    if (!s_flows)
        abort ();
    s_ep = epoll_create1 (EPOLL_CLOEXEC);
    for (long i = 0; i < o.count; i++)
        s_flows[i].phase = F_FREE;
    int64_t t0 = s_now (), last_expire = t0;
    long next = 0;
    while (s_done + s_failed < o.count && s_now () < s_deadline) {
        while (next < o.count && s_live - (s_done - s_peer_closed) < o.concurrency)
            s_flow_start (&s_flows[next++]);
        s_loop_once (20);
        if (s_now () - last_expire > 100000000LL) {
            s_expire (next);
            last_expire = s_now ();
        }
    }
    double open_s = (double) (s_now () - t0) / 1e9;
    printf ("{\"mode\": \"idle\", \"phase\": \"open\", \"requested\": %ld, \"open\": %ld, "
            "\"failed\": %ld, \"seconds\": %.3f, \"first_error\": \"%s\"}\n",
            o.count, s_live, s_failed, open_s, s_fail_why);
    fflush (stdout);
    /* hold until stdin closes (the driver measured) or --hold-s */
    int64_t hold_until = s_now () + (int64_t) (o.hold_s * 1e9);
    bool stdin_open = true;
    while (stdin_open && s_now () < hold_until) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll (&p, 1, 0) > 0) {
            char b[256];
            if (read (0, b, sizeof b) <= 0)
                stdin_open = false;
        }
        s_loop_once (100);
    }
    printf ("{\"mode\": \"idle\", \"phase\": \"closed\", \"peer_closed_while_idle\": %ld, "
            "\"still_open\": %ld}\n",
            s_peer_closed, s_live);
    fflush (stdout);
    return 0;
}

/* ---- main ----------------------------------------------------------------------------- */

static void s_usage (void)
{
    fprintf (stderr,
             "usage: hermes-pingpong latency|setup|bulk-up|bulk-down|rpc|idle --connect HOST:PORT\n"
             "       [--target HOST:PORT] [--proxy none|h1|h2] [--count N] [--warmup N]\n"
             "       [--size BYTES] [--bytes N] [--concurrency N] [--rpc A,B,C,D] [--pipeline]\n"
             "       [--timeout-s S] [--flow-timeout-s S] [--hold-s S] [--samples FILE]\n");
    exit (2);
}

int main (int argc, char **argv)
{
    if (argc < 2)
        s_usage ();
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp (a, "--pipeline") == 0) {
            o.pipeline = true;
            continue;
        }
        if (!v)
            s_usage ();
        i++;
        if (strcmp (a, "--connect") == 0)
            o.connect = v;
        else if (strcmp (a, "--target") == 0)
            o.target = v;
        else if (strcmp (a, "--proxy") == 0) {
            if (strcmp (v, "none") == 0)
                o.proxy = P_NONE;
            else if (strcmp (v, "h1") == 0)
                o.proxy = P_H1;
            else if (strcmp (v, "h2") == 0)
                o.proxy = P_H2;
            else
                s_usage ();
        } else if (strcmp (a, "--count") == 0)
            o.count = atol (v);
        else if (strcmp (a, "--warmup") == 0)
            o.warmup = atol (v);
        else if (strcmp (a, "--size") == 0)
            o.size = atol (v);
        else if (strcmp (a, "--bytes") == 0)
            o.bytes = strtoull (v, NULL, 10);
        else if (strcmp (a, "--concurrency") == 0)
            o.concurrency = atol (v);
        else if (strcmp (a, "--rpc") == 0) {
            unsigned long long x[4];
            if (sscanf (v, "%llu,%llu,%llu,%llu", &x[0], &x[1], &x[2], &x[3]) != 4)
                s_usage ();
            for (int k = 0; k < 4; k++)
                o.rpc[k] = x[k];
        } else if (strcmp (a, "--timeout-s") == 0)
            o.timeout_s = atof (v);
        else if (strcmp (a, "--flow-timeout-s") == 0)
            o.flow_timeout_s = atof (v);
        else if (strcmp (a, "--hold-s") == 0)
            o.hold_s = atof (v);
        else if (strcmp (a, "--samples") == 0)
            o.samples = v;
        else
            s_usage ();
    }
    if (!o.connect || o.count < 1 || o.size < 0 || o.size > 65536 || o.concurrency < 1 ||
        o.warmup < 0)
        s_usage ();
    if (bench_parse_hostport (o.connect, &o.addr, &o.addrlen))
        s_die ("cannot resolve %s", o.connect);
    signal (SIGPIPE, SIG_IGN);
    s_deadline = s_now () + (int64_t) (o.timeout_s * 1e9);
    gnutls_global_init ();
    if (strcmp (o.mode, "latency") == 0)
        return s_latency ();
    if (strcmp (o.mode, "setup") == 0)
        return s_setup ();
    if (strcmp (o.mode, "bulk-up") == 0)
        return s_bulk_up ();
    if (strcmp (o.mode, "bulk-down") == 0)
        return s_bulk_down ();
    if (o.proxy == P_H2 && (strcmp (o.mode, "rpc") == 0 || strcmp (o.mode, "idle") == 0))
        s_die ("%s supports --proxy none or h1 only", o.mode);
    if (strcmp (o.mode, "rpc") == 0)
        return s_run_rpc ();
    if (strcmp (o.mode, "idle") == 0)
        return s_run_idle ();
    s_usage ();
    return 2;
}
