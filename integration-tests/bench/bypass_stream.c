/* hermes-bypass-stream: both ends of the bypass benchmark (bypass.py): one TCP flow from a
 * client to a server, every byte checked, the client's TCP_INFO RTT sampled on the way.
 *
 *   hermes-bypass-stream serve --listen HOST:PORT [--listen HOST:PORT ...]
 *   hermes-bypass-stream send --connect HOST:PORT [--target HOST:PORT] [--bytes N]
 *                        [--seconds S] [--chunk BYTES] [--period-ms MS] [--go-on-stdin]
 *                        [--stop-on-stdin-eof] [--server-quickack] [--rtt-every-ms MS]
 *                        [--timeout-s S]
 *
 * The client sends "HBS1 SEED [q]\n" (through an HTTP/1.1 CONNECT to --target first when given),
 * the server answers "OK\n", then the client streams a pattern derived from SEED until --bytes
 * or --seconds (bulk: --chunk bytes per write, as fast as the socket takes them; or one
 * --chunk every --period-ms), shuts down its sending side and the server, which compared
 * every byte with the pattern, answers "DONE COUNT FIRST_BAD_OFFSET\n" (-1: none).
 * --go-on-stdin: after the OK the client prints its "ready" line and waits for a line on
 * stdin before streaming (the driver waits for the bypass agent's splice first).
 * --stop-on-stdin-eof (with --period-ms): streaming also ends when stdin closes.
 * --server-quickack: the server acknowledges every read at once (TCP_QUICKACK).
 * --rtt-every-ms: a thread samples tcpi_rtt / tcpi_rttvar from connect to the end.
 * With --period-ms the client also times each write until the peer acknowledged its last
 * byte (from SIOCOUTQ, every ms): "ack_samples", one unsmoothed round trip per write.
 * The client prints JSON lines: {"event":"ready",...} then {"event":"done",...} (or
 * {"event":"error",...}, exit 1). Times are CLOCK_MONOTONIC seconds, the clock of Python's
 * time.monotonic(). The server prints "ready" once it listens, one thread per connection,
 * until SIGTERM. */
#include "bench_net.h"
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define S_PERIOD   1048573 /* pattern period (a prime: writes never line up with it) */
#define S_IO       (256 * 1024)
#define S_MAX_LIST 8

/* ---- the pattern ----------------------------------------------------------------------- */

static uint8_t *s_pat; /* the client's: 2 periods, any run of up to S_PERIOD bytes is contiguous */

/* The pattern of seed, two periods long. Caller owns return value. */
static uint8_t *s_pattern_new (uint64_t seed)
{
    uint8_t *pat = malloc (2 * (size_t) S_PERIOD + 8);
    if (!pat)
        abort ();
    uint64_t x = seed;
    for (size_t i = 0; i < S_PERIOD; i += 8) {
        x += 0x9E3779B97F4A7C15ULL; /* splitmix64 */
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        memcpy (pat + i, &z, 8);
    }
    memcpy (pat + S_PERIOD, pat, S_PERIOD);
    return pat;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static double s_mono (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

static void s_die (const char *fmt, ...)
{
    va_list ap;
    char msg[512];
    va_start (ap, fmt);
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
    fprintf (stderr, "hermes-bypass-stream: %s\n", msg);
    printf ("{\"event\": \"error\", \"error\": \"");
    for (const char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\')
            printf ("\\%c", *p);
        else if ((unsigned char) *p >= 0x20)
            putchar (*p);
    printf ("\"}\n");
    fflush (stdout);
    exit (1);
}

static void s_on_alarm (int sig)
{
    static const char msg[] = "{\"event\": \"error\", \"error\": \"--timeout-s passed\"}\n";
    (void) sig;
    if (write (1, msg, sizeof msg - 1) < 0) {
        /* nothing left to tell anyone */
    }
    _exit (1);
}

static int s_send_all (int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send (fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

/* Reads up to and including '\n' one byte at a time (nothing after it is consumed). */
static ssize_t s_read_line (int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv (fd, buf + n, 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = 0;
    return (ssize_t) n;
}

/* ---- server -------------------------------------------------------------------------------- */

static atomic_uint_fast64_t s_conns, s_bytes_in, s_bad_conns;

static void *s_serve_conn (void *arg)
{
    int fd = (int) (intptr_t) arg;
    char line[128];
    uint64_t seed, count = 0;
    int64_t bad = -1;
    uint8_t *buf = NULL, *pat = NULL;

    if (s_read_line (fd, line, sizeof line) < 0 || sscanf (line, "HBS1 %" SCNx64, &seed) != 1)
        goto out;
    /* "q": acknowledge every read at once (no delayed ACK), so that a trickle gives the
     * client an RTT sample per write */
    bool quickack = strstr (line, " q") != NULL;
    int one = 1;
    /* each connection its own pattern (the seed), built here: the listener thread stays free */
    pat = s_pattern_new (seed);
    buf = malloc (S_IO);
    if (!buf)
        abort ();
    if (s_send_all (fd, "OK\n", 3) < 0)
        goto out;
    for (;;) {
        ssize_t n = recv (fd, buf, S_IO, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (quickack)
            setsockopt (fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        if (bad < 0) {
            const uint8_t *want = pat + count % S_PERIOD;
            if (memcmp (buf, want, (size_t) n) != 0)
                for (ssize_t i = 0; i < n; i++)
                    if (buf[i] != want[i]) {
                        bad = (int64_t) (count + (uint64_t) i);
                        break;
                    }
        }
        count += (uint64_t) n;
    }
    atomic_fetch_add (&s_bytes_in, count);
    if (bad >= 0)
        atomic_fetch_add (&s_bad_conns, 1);
    snprintf (line, sizeof line, "DONE %" PRIu64 " %" PRId64 "\n", count, bad);
    (void) s_send_all (fd, line, strlen (line));
out:
    free (buf);
    free (pat);
    close (fd);
    return NULL;
}

static volatile sig_atomic_t s_stop;

static void s_on_stop (int sig)
{
    (void) sig;
    s_stop = 1;
}

static int s_serve (const char **listen_at, int nlisten)
{
    struct pollfd pfd[S_MAX_LIST];
    for (int i = 0; i < nlisten; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (bench_parse_hostport (listen_at[i], &ss, &len) != 0)
            s_die ("bad --listen %s", listen_at[i]);
        int fd = socket (ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind (fd, (struct sockaddr *) &ss, len) != 0 || listen (fd, 512) != 0)
            s_die ("cannot listen on %s: %s", listen_at[i], strerror (errno));
        pfd[i] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    struct sigaction sa = {.sa_handler = s_on_stop};
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGINT, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);
    printf ("ready\n");
    fflush (stdout);
    while (!s_stop) {
        if (poll (pfd, (nfds_t) nlisten, 500) <= 0)
            continue;
        for (int i = 0; i < nlisten; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            int fd = accept4 (pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0)
                continue;
            atomic_fetch_add (&s_conns, 1);
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init (&attr);
            pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create (&t, &attr, s_serve_conn, (void *) (intptr_t) fd) != 0)
                close (fd);
            pthread_attr_destroy (&attr);
        }
    }
    printf ("{\"connections\": %" PRIuFAST64 ", \"bytes_in\": %" PRIuFAST64
            ", \"bad_connections\": %" PRIuFAST64 "}\n",
            atomic_load (&s_conns), atomic_load (&s_bytes_in), atomic_load (&s_bad_conns));
    return 0;
}

/* ---- client: RTT samples ----------------------------------------------------------------- */

typedef struct {
    double t;
    uint32_t rtt_us, rttvar_us, retrans;
} s_sample_t;

static struct {
    int fd;
    long every_ms;
    s_sample_t *v;
    size_t n, cap;
    atomic_bool stop;
    pthread_mutex_t lock;
} s_rtt = {.fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static void s_rtt_sample (void)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset (&ti, 0, sizeof ti);
    if (getsockopt (s_rtt.fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return;
    pthread_mutex_lock (&s_rtt.lock);
    if (s_rtt.n < s_rtt.cap)
        s_rtt.v[s_rtt.n++] =
            (s_sample_t){s_mono (), ti.tcpi_rtt, ti.tcpi_rttvar, ti.tcpi_total_retrans};
    pthread_mutex_unlock (&s_rtt.lock);
}

static void *s_rtt_thread (void *arg)
{
    (void) arg;
    double next = s_mono ();
    while (!atomic_load (&s_rtt.stop)) {
        s_rtt_sample ();
        next += s_rtt.every_ms / 1000.0;
        double wait = next - s_mono ();
        if (wait > 0) {
            struct timespec ts = {(time_t) wait, (long) ((wait - (time_t) wait) * 1e9)};
            nanosleep (&ts, NULL);
        }
    }
    return NULL;
}

/* ---- client ------------------------------------------------------------------------------- */

static struct {
    const char *connect, *target;
    uint64_t bytes;
    double seconds, timeout_s;
    size_t chunk;
    long period_ms;
    bool go_on_stdin, stop_on_eof, quickack;
} o = {.seconds = 0, .timeout_s = 120, .chunk = S_IO};

/* Whether stdin was closed (or said "stop"); waits up to ms for it. */
static bool s_stdin_closed (int ms)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    if (poll (&p, 1, ms) <= 0)
        return false;
    char buf[256];
    ssize_t n = read (0, buf, sizeof buf);
    return n <= 0 || memmem (buf, (size_t) n, "stop", 4) != NULL;
}

/* Paced writes, each timed until the peer acknowledged its last byte: one unsmoothed round
 * trip per write, also when it took longer than the period (a loss, a retransmission). */
static struct {
    double (*v)[3]; /* write time, offset of its end in the stream, seconds to acked (-1) */
    size_t n, cap, first_open;
    uint64_t written; /* every byte written to the socket (CONNECT head and header too) */
} s_acks;

static void s_acks_poll (int fd)
{
    int outq = 0;
    if (s_acks.first_open >= s_acks.n || ioctl (fd, SIOCOUTQ, &outq) != 0)
        return;
    double now = s_mono ();
    uint64_t acked = s_acks.written - (uint64_t) outq;
    while (s_acks.first_open < s_acks.n && s_acks.v[s_acks.first_open][1] <= (double) acked) {
        s_acks.v[s_acks.first_open][2] = now - s_acks.v[s_acks.first_open][0];
        s_acks.first_open++;
    }
}

/* Waits until the next paced write (*next, advanced by one period), watching the open
 * writes meanwhile (every ms while one is open). Returns true when streaming must stop
 * (stdin closed with --stop-on-stdin-eof, or --seconds passed). */
static bool s_pace (int fd, double *next, double t_end)
{
    *next += o.period_ms / 1000.0;
    double until = t_end && *next > t_end ? t_end : *next;
    for (;;) {
        s_acks_poll (fd);
        double now = s_mono ();
        if (now >= until)
            break;
        int ms = s_acks.first_open < s_acks.n ? 1 : (int) ((until - now) * 1000) + 1;
        if (o.stop_on_eof) {
            if (s_stdin_closed (ms))
                return true;
        } else {
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            nanosleep (&ts, NULL);
        }
    }
    return t_end && s_mono () >= t_end;
}

static int s_send (void)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (bench_parse_hostport (o.connect, &ss, &len) != 0)
        s_die ("bad --connect %s", o.connect);
    if (o.chunk == 0 || o.chunk > S_PERIOD)
        s_die ("--chunk must be 1..%d", S_PERIOD);
    signal (SIGPIPE, SIG_IGN);
    signal (SIGALRM, s_on_alarm);
    alarm ((unsigned) (o.timeout_s + 0.999));

    uint64_t seed;
    {
        struct timespec ts;
        clock_gettime (CLOCK_REALTIME, &ts);
        seed = ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) ts.tv_sec ^ ((uint64_t) getpid () << 40);
    }
    s_pat = s_pattern_new (seed);

    int fd = socket (ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        s_die ("socket: %s", strerror (errno));
    double t_connect = s_mono ();
    if (connect (fd, (struct sockaddr *) &ss, len) != 0)
        s_die ("cannot connect to %s: %s", o.connect, strerror (errno));
    double t_connected = s_mono ();
    pthread_t rtt_thread;
    bool rtt_running = false;
    if (s_rtt.every_ms > 0) {
        s_rtt.fd = fd;
        s_rtt.cap = (size_t) (o.timeout_s * 1000 / s_rtt.every_ms) + 16;
        s_rtt.v = calloc (s_rtt.cap, sizeof *s_rtt.v);
        if (!s_rtt.v)
            abort ();
        rtt_running = pthread_create (&rtt_thread, NULL, s_rtt_thread, NULL) == 0;
    }
    char line[512];
    if (o.target) {
        snprintf (line, sizeof line, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", o.target, o.target);
        if (s_send_all (fd, line, strlen (line)) < 0)
            s_die ("cannot send CONNECT: %s", strerror (errno));
        s_acks.written += strlen (line);
        /* the head, byte by byte: nothing after it is consumed */
        size_t n = 0;
        while (n < 4 || memcmp (line + n - 4, "\r\n\r\n", 4) != 0) {
            if (n + 1 >= sizeof line)
                s_die ("CONNECT answer head too long");
            ssize_t r = recv (fd, line + n, 1, 0);
            if (r <= 0)
                s_die ("proxy closed during the CONNECT answer (%zu bytes)", n);
            n++;
        }
        line[n] = 0;
        if (strncmp (line, "HTTP/1.1 200", 12) != 0 && strncmp (line, "HTTP/1.0 200", 12) != 0)
            s_die ("CONNECT refused: %.*s", (int) strcspn (line, "\r"), line);
    }
    snprintf (line, sizeof line, "HBS1 %" PRIx64 "%s\n", seed, o.quickack ? " q" : "");
    s_acks.written += strlen (line);
    if (s_send_all (fd, line, strlen (line)) < 0 || s_read_line (fd, line, sizeof line) < 0 ||
        strcmp (line, "OK\n") != 0)
        s_die ("no OK from the server");
    struct sockaddr_in local;
    socklen_t llen = sizeof local;
    getsockname (fd, (struct sockaddr *) &local, &llen);
    char addr[64];
    inet_ntop (AF_INET, &local.sin_addr, addr, sizeof addr);
    printf ("{\"event\": \"ready\", \"local\": \"%s:%u\", \"t_connect\": %.6f, "
            "\"t_connected\": %.6f, \"t_ready\": %.6f}\n",
            addr, ntohs (local.sin_port), t_connect, t_connected, s_mono ());
    fflush (stdout);
    double t_go = s_mono ();
    if (o.go_on_stdin) {
        char go[64];
        if (!fgets (go, sizeof go, stdin))
            s_die ("stdin closed before go");
        t_go = s_mono ();
    }

    /* stream */
    uint64_t sent = 0;
    if (o.period_ms > 0) {
        s_acks.cap = (size_t) (o.timeout_s * 1000 / o.period_ms) + 16;
        s_acks.v = calloc (s_acks.cap, sizeof *s_acks.v);
        if (!s_acks.v)
            abort ();
    }
    double t_first = s_mono ();
    double t_end = o.seconds > 0 ? t_first + o.seconds : 0;
    double next = t_first;
    for (;;) {
        if (o.bytes && sent >= o.bytes)
            break;
        if (t_end && s_mono () >= t_end)
            break;
        size_t want = o.chunk;
        if (o.bytes && o.bytes - sent < want)
            want = (size_t) (o.bytes - sent);
        double t_write = s_mono ();
        if (s_send_all (fd, s_pat + sent % S_PERIOD, want) < 0)
            s_die ("send failed after %" PRIu64 " bytes: %s", sent, strerror (errno));
        sent += want;
        s_acks.written += want;
        if (o.period_ms > 0 && s_acks.n < s_acks.cap) {
            s_acks.v[s_acks.n][0] = t_write;
            s_acks.v[s_acks.n][1] = (double) s_acks.written;
            s_acks.v[s_acks.n][2] = -1;
            s_acks.n++;
        }
        if (o.period_ms > 0 && s_pace (fd, &next, t_end))
            break;
    }
    double t_sent = s_mono ();
    shutdown (fd, SHUT_WR);
    if (s_read_line (fd, line, sizeof line) < 0)
        s_die ("no DONE from the server after %" PRIu64 " bytes", sent);
    double t_done = s_mono ();
    uint64_t got = 0;
    int64_t bad = -2;
    if (sscanf (line, "DONE %" SCNu64 " %" SCNd64, &got, &bad) != 2)
        s_die ("bad answer from the server: %.60s", line);
    if (rtt_running) {
        s_rtt_sample ();
        atomic_store (&s_rtt.stop, true);
        pthread_join (rtt_thread, NULL);
    }
    struct tcp_info ti;
    socklen_t tlen = sizeof ti;
    memset (&ti, 0, sizeof ti);
    getsockopt (fd, IPPROTO_TCP, TCP_INFO, &ti, &tlen);
    close (fd);

    double secs = t_done - t_first;
    printf ("{\"event\": \"done\", \"sent\": %" PRIu64 ", \"received\": %" PRIu64
            ", \"first_bad_offset\": %" PRId64 ", \"exact\": %s, \"t_go\": %.6f, \"t_first\": %.6f,"
            " \"t_sent\": %.6f, \"t_done\": %.6f, \"seconds\": %.6f, \"gbit_s\": %.4f,"
            " \"total_retrans\": %u, \"rtt_samples\": [",
            sent, got, bad, got == sent && bad == -1 ? "true" : "false", t_go, t_first, t_sent,
            t_done, secs, secs > 0 ? sent * 8 / secs / 1e9 : 0.0, ti.tcpi_total_retrans);
    for (size_t i = 0; i < s_rtt.n; i++)
        printf ("%s[%.6f, %u, %u, %u]", i ? ", " : "", s_rtt.v[i].t, s_rtt.v[i].rtt_us,
                s_rtt.v[i].rttvar_us, s_rtt.v[i].retrans);
    printf ("], \"ack_samples\": [");
    for (size_t i = 0; i < s_acks.n; i++)
        printf ("%s[%.6f, %.6f]", i ? ", " : "", s_acks.v[i][0], s_acks.v[i][2]);
    printf ("]}\n");
    fflush (stdout);
    return got == sent && bad == -1 ? 0 : 3;
}

/* ---- main ----------------------------------------------------------------------------------- */

static void s_usage (void)
{
    fprintf (stderr,
             "usage: hermes-bypass-stream serve --listen HOST:PORT [--listen HOST:PORT ...]\n"
             "       hermes-bypass-stream send --connect HOST:PORT [--target HOST:PORT]\n"
             "              [--bytes N] [--seconds S] [--chunk BYTES] [--period-ms MS]\n"
             "              [--go-on-stdin] [--stop-on-stdin-eof] [--server-quickack]\n"
             "              [--rtt-every-ms MS]\n"
             "              [--timeout-s S]\n");
    exit (2);
}

int main (int argc, char **argv)
{
    if (argc < 2)
        s_usage ();
    const char *listen_at[S_MAX_LIST];
    int nlisten = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "--go-on-stdin") == 0) {
            o.go_on_stdin = true;
            continue;
        }
        if (strcmp (a, "--stop-on-stdin-eof") == 0) {
            o.stop_on_eof = true;
            continue;
        }
        if (strcmp (a, "--server-quickack") == 0) {
            o.quickack = true;
            continue;
        }
        if (i + 1 >= argc)
            s_usage ();
        const char *v = argv[++i];
        if (strcmp (a, "--listen") == 0 && nlisten < S_MAX_LIST)
            listen_at[nlisten++] = v;
        else if (strcmp (a, "--connect") == 0)
            o.connect = v;
        else if (strcmp (a, "--target") == 0)
            o.target = v;
        else if (strcmp (a, "--bytes") == 0)
            o.bytes = strtoull (v, NULL, 10);
        else if (strcmp (a, "--seconds") == 0)
            o.seconds = atof (v);
        else if (strcmp (a, "--chunk") == 0)
            o.chunk = (size_t) strtoull (v, NULL, 10);
        else if (strcmp (a, "--period-ms") == 0)
            o.period_ms = atol (v);
        else if (strcmp (a, "--rtt-every-ms") == 0)
            s_rtt.every_ms = atol (v);
        else if (strcmp (a, "--timeout-s") == 0)
            o.timeout_s = atof (v);
        else
            s_usage ();
    }
    if (strcmp (argv[1], "serve") == 0) {
        if (nlisten == 0)
            s_usage ();
        return s_serve (listen_at, nlisten);
    }
    if (strcmp (argv[1], "send") == 0) {
        if (!o.connect || (!o.bytes && o.seconds <= 0 && !(o.stop_on_eof && o.period_ms > 0)))
            s_usage ();
        return s_send ();
    }
    s_usage ();
    return 2;
}
