/* hermes-nfq-delay: a userspace delay line on NFQUEUE, the WAN emulation of the data-path
 * benchmark (these kernels have no netem). Every packet that iptables sends to the queue
 * is held for --delay-ms (plus up to --jitter-ms, uniform) and then accepted.
 *
 *   hermes-nfq-delay --queue N --delay-ms D [--jitter-ms J] [--max-held M]
 *
 * Run it in the namespace whose iptables rule feeds the queue, e.g. in a router namespace
 * between two others: iptables -A FORWARD -j NFQUEUE --queue-num N (both directions: the
 * round trip grows by 2 D). Held packets wait in a min-heap by due time (bounded: a packet
 * that finds M packets held is dropped, as a full router queue would); with no jitter the
 * due order is the arrival order, so one batch verdict accepts every due packet at once.
 * Prints "ready" on stdout once bound; on SIGTERM/SIGINT it accepts what it still holds and
 * prints its counters as one JSON line. */
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

typedef struct {
    int64_t due;
    uint32_t id;
} s_item_t;

static struct {
    s_item_t *heap;
    size_t len, cap;
    int64_t delay_ns, jitter_ns;
    uint64_t packets, dropped, accepted, max_held, enobufs;
    /* lateness of each verdict behind its due time, in a log2 histogram of ns */
    uint64_t late_hist[40];
    int64_t late_max;
} s;

static volatile sig_atomic_t s_stop;

static void s_on_signal (int sig)
{
    s_stop = 1;
}

static int64_t s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static bool s_before (const s_item_t *a, const s_item_t *b)
{
    return a->due < b->due || (a->due == b->due && (int32_t) (a->id - b->id) < 0);
}

static void s_push (int64_t due, uint32_t id)
{
    size_t i = s.len++;
    s.heap[i] = (s_item_t){due, id};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!s_before (&s.heap[i], &s.heap[p]))
            break;
        s_item_t t = s.heap[i];
        s.heap[i] = s.heap[p];
        s.heap[p] = t;
        i = p;
    }
    if (s.len > s.max_held)
        s.max_held = s.len;
}

static s_item_t s_pop (void)
{
    s_item_t top = s.heap[0];
    s.heap[0] = s.heap[--s.len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s.len && s_before (&s.heap[l], &s.heap[m]))
            m = l;
        if (r < s.len && s_before (&s.heap[r], &s.heap[m]))
            m = r;
        if (m == i)
            break;
        s_item_t t = s.heap[i];
        s.heap[i] = s.heap[m];
        s.heap[m] = t;
        i = m;
    }
    return top;
}

static uint64_t s_rand (void)
{
    static uint64_t x = 0x9E3779B97F4A7C15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static int s_on_packet (struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                        void *data)
{
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr (nfa);
    if (!ph)
        return 0;
    uint32_t id = ntohl (ph->packet_id);
    s.packets++;
    if (s.len == s.cap) {
        s.dropped++;
        nfq_set_verdict (qh, id, NF_DROP, 0, NULL);
        return 0;
    }
    int64_t due = s_now () + s.delay_ns;
    if (s.jitter_ns > 0)
        due += (int64_t) (s_rand () % (uint64_t) s.jitter_ns);
    s_push (due, id);
    return 0;
}

static void s_note_late (int64_t late)
{
    if (late < 0)
        late = 0;
    if (late > s.late_max)
        s.late_max = late;
    int b = 0;
    while (b < 39 && (1LL << (b + 1)) <= late)
        b++;
    s.late_hist[b]++;
}

/* Accepts every due packet; returns ns until the next one is due (or -1: none held). */
static int64_t s_release (struct nfq_q_handle *qh, bool all)
{
    int64_t now = s_now ();
    bool batch = s.jitter_ns == 0;
    uint32_t last = 0;
    bool any = false;
    while (s.len > 0 && (all || s.heap[0].due <= now)) {
        s_item_t it = s_pop ();
        s_note_late (now - it.due);
        s.accepted++;
        if (batch) {
            last = it.id;
            any = true;
        } else
            nfq_set_verdict (qh, it.id, NF_ACCEPT, 0, NULL);
    }
    if (any)
        nfq_set_verdict_batch (qh, last, NF_ACCEPT);
    if (s.len == 0)
        return -1;
    int64_t wait = s.heap[0].due - s_now ();
    return wait < 0 ? 0 : wait;
}

static double s_late_pct (double p)
{
    uint64_t total = 0;
    for (int i = 0; i < 40; i++)
        total += s.late_hist[i];
    if (!total)
        return 0;
    uint64_t rank = (uint64_t) (p / 100.0 * (double) total + 0.999999), seen = 0;
    for (int i = 0; i < 40; i++) {
        seen += s.late_hist[i];
        if (seen >= rank)
            return (double) (1LL << (i + 1)) / 1000.0; /* upper edge of the bucket */
    }
    return 0;
}

int main (int argc, char **argv)
{
    int queue = -1;
    double delay_ms = -1, jitter_ms = 0;
    long max_held = 100000;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            goto usage;
        if (strcmp (argv[i], "--queue") == 0)
            queue = atoi (v);
        else if (strcmp (argv[i], "--delay-ms") == 0)
            delay_ms = atof (v);
        else if (strcmp (argv[i], "--jitter-ms") == 0)
            jitter_ms = atof (v);
        else if (strcmp (argv[i], "--max-held") == 0)
            max_held = atol (v);
        else
            goto usage;
        i++;
    }
    if (queue < 0 || queue > 65535 || delay_ms < 0 || jitter_ms < 0 || max_held < 1)
        goto usage;
    s.delay_ns = (int64_t) (delay_ms * 1e6);
    s.jitter_ns = (int64_t) (jitter_ms * 1e6);
    s.cap = (size_t) max_held;
    s.heap = calloc (s.cap, sizeof *s.heap);
    if (!s.heap)
        return 1;
    prctl (PR_SET_TIMERSLACK, 1000UL); /* wake within ~1 us of the due time, not 50 */
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGINT, &sa, NULL);

    struct nfq_handle *h = nfq_open ();
    if (!h) {
        fprintf (stderr, "hermes-nfq-delay: nfq_open: %s\n", strerror (errno));
        return 1;
    }
    struct nfq_q_handle *qh = nfq_create_queue (h, (uint16_t) queue, s_on_packet, NULL);
    if (!qh) {
        fprintf (stderr, "hermes-nfq-delay: cannot bind queue %d: %s\n", queue, strerror (errno));
        nfq_close (h);
        return 1;
    }
    if (nfq_set_mode (qh, NFQNL_COPY_META, 0) < 0)
        fprintf (stderr, "hermes-nfq-delay: cannot set copy mode: %s\n", strerror (errno));
    nfq_set_queue_maxlen (qh, (uint32_t) (max_held + 1024));
    /* GSO super-packets as they are: no segmentation in the kernel for our sake */
    nfq_set_queue_flags (qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO);
    int fd = nfq_fd (h);
    nfnl_rcvbufsiz (nfq_nfnlh (h), 32 * 1024 * 1024);
    int one = 1;
    setsockopt (fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    printf ("ready\n");
    fflush (stdout);

    /* one netlink message per packet: take up to S_BATCH of them per system call */
    enum { S_BATCH = 64, S_MSG = 4096 };
    static char bufs[S_BATCH][S_MSG] __attribute__ ((aligned));
    static struct iovec iov[S_BATCH];
    static struct mmsghdr msgs[S_BATCH];
    for (int k = 0; k < S_BATCH; k++) {
        iov[k] = (struct iovec){bufs[k], S_MSG};
        msgs[k].msg_hdr = (struct msghdr){.msg_iov = &iov[k], .msg_iovlen = 1};
    }
    int64_t wait = -1;
    while (!s_stop) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        struct timespec ts, *tsp = NULL;
        int64_t w = wait < 0 || wait > 200000000LL ? 200000000LL : wait;
        ts.tv_sec = (time_t) (w / 1000000000LL);
        ts.tv_nsec = (long) (w % 1000000000LL);
        tsp = &ts;
        int rc = ppoll (&p, 1, tsp, NULL);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0) {
            for (int k = 0; k < 64; k++) {
                int n = recvmmsg (fd, msgs, S_BATCH, MSG_DONTWAIT, NULL);
                if (n < 0) {
                    if (errno == ENOBUFS) {
                        s.enobufs++;
                        continue;
                    }
                    break;
                }
                for (int m = 0; m < n; m++)
                    nfq_handle_packet (h, bufs[m], (int) msgs[m].msg_len);
                if (n < S_BATCH)
                    break;
            }
        }
        wait = s_release (qh, false);
    }
    s_release (qh, true);
    printf ("{\"packets\": %llu, \"accepted\": %llu, \"dropped_full\": %llu, \"max_held\": %llu, "
            "\"enobufs\": %llu, \"late_p50_us\": %.0f, \"late_p99_us\": %.0f, "
            "\"late_max_us\": %.0f}\n",
            (unsigned long long) s.packets, (unsigned long long) s.accepted,
            (unsigned long long) s.dropped, (unsigned long long) s.max_held,
            (unsigned long long) s.enobufs, s_late_pct (50), s_late_pct (99),
            (double) s.late_max / 1000.0);
    fflush (stdout);
    nfq_destroy_queue (qh);
    nfq_close (h);
    return 0;

usage:
    fprintf (stderr, "usage: hermes-nfq-delay --queue N --delay-ms D [--jitter-ms J] "
                     "[--max-held M]\n");
    return 2;
}
