/* hms_resolve: names to addresses for libev loops. A request for a name that is kept is
 * answered from the cache; one for a name being looked up joins that lookup; otherwise the
 * name is queued for the resolver threads (at most HMS_RESOLVE_THREADS, started when needed,
 * ended when idle). Answers reach each request's own loop through its ev_async. */
#include "hms_resolve.h"
#include "hms_alloc.h"
#include "hms_soon.h"
#include "hms_time.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_BUCKETS         1024
#define S_THREAD_IDLE_S   10 /* a resolver thread with nothing to do this long ends */
#define S_MAX_NAMES_LIMIT 1000000

typedef struct s_name s_name_t;

/* One request. Its loop holds one reference; the waiters list of the name it waits for holds
 * another; whoever lets go last frees it. */
struct hms_resolve {
    atomic_int refs;
    uint16_t port;
    struct ev_loop *loop;
    ev_async async; /* the answer of a lookup (sent by a resolver thread) */
    hms_soon_t now; /* an answer known at once: a literal, the cache, no resolver */
    hms_resolve_fn *fn;
    void *arg;
    s_name_t *name;      /* the name it waits for (under s.lock) */
    hms_resolve_t *next; /* in that name's waiters */
    int rc;
    hms_addrs_t addrs;
    char err[256];
};

/* A name: its answer or failure, kept until expires, or a lookup in progress (pending). A
 * pending name is never dropped (a resolver thread uses it without the lock). */
struct s_name {
    char host[256]; /* lower case */
    bool pending;
    int rc;
    hms_addrs_t addrs; /* ports 0; demoted ones last */
    char err[256];
    int64_t expires, answered; /* monotonic ms */
    hms_resolve_t *waiters;
    s_name_t *next;   /* in its bucket */
    s_name_t *queued; /* in the lookup queue */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    s_name_t *buckets[S_BUCKETS];
    s_name_t *queue_head, *queue_tail;
    uint64_t names;
    int threads, idle_threads, threads_max;
    int ok_ms, fail_ms, max_names;
    uint64_t lookups, cached, joined, demoted;
} s = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .work = PTHREAD_COND_INITIALIZER,
       .ok_ms = 10000,
       .fail_ms = HMS_RESOLVE_FAIL_MS,
       .max_names = 4096};

/* ---- requests (loop side) ------------------------------------------------------------------ */

static void s_unref (hms_resolve_t *r)
{
    if (atomic_fetch_sub (&r->refs, 1) == 1)
        free (r);
}

/* Loop thread: stops the request's watchers and lets go of the loop's reference. */
static void s_stop (hms_resolve_t *r)
{
    ev_async_stop (r->loop, &r->async);
    hms_soon_stop (r->loop, &r->now);
    s_unref (r);
}

static void s_report (hms_resolve_t *r)
{
    hms_resolve_fn *fn = r->fn;
    void *arg = r->arg;
    /* written by a resolver thread under the lock; ev_async_send orders it too, but a race
     * detector cannot see inside libev */
    pthread_mutex_lock (&s.lock);
    hms_addrs_t addrs = r->addrs;
    char err[256];
    snprintf (err, sizeof err, "%s", r->err);
    bool ok = r->rc == 0;
    pthread_mutex_unlock (&s.lock);
    s_stop (r);
    fn (ok ? &addrs : NULL, ok ? NULL : err, arg);
}

static void s_on_async (struct ev_loop *loop, ev_async *w, int revents)
{
    s_report (w->data);
}

static void s_on_now (struct ev_loop *loop, hms_soon_t *soon)
{
    s_report (soon->data);
}

/* Under the lock: the request takes the name's answer. */
static void s_fill (hms_resolve_t *r, const s_name_t *n)
{
    r->rc = n->rc;
    if (n->rc == 0) {
        r->addrs = n->addrs;
        for (int i = 0; i < r->addrs.n; i++)
            hms_addr_set_port (&r->addrs.addr[i], r->port);
    } else
        snprintf (r->err, sizeof r->err, "%s", n->err);
}

/* ---- the cache (under s.lock) --------------------------------------------------------------- */

static uint32_t s_hash (const char *host)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *) host; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % S_BUCKETS;
}

static s_name_t *s_find (const char *host)
{
    for (s_name_t *n = s.buckets[s_hash (host)]; n; n = n->next)
        if (strcmp (n->host, host) == 0)
            return n;
    return NULL;
}

static void s_drop (s_name_t *n)
{
    s_name_t **p = &s.buckets[s_hash (n->host)];
    while (*p != n)
        p = &(*p)->next;
    *p = n->next;
    s.names--;
    free (n);
}

/* Keeps the cache under its bound: drops expired names, then, if that was not enough, the
 * one answered longest ago. Pending names stay. */
static void s_make_room (int64_t now)
{
    if (s.names < (uint64_t) s.max_names)
        return;
    s_name_t *oldest = NULL;
    for (int b = 0; b < S_BUCKETS; b++) {
        for (s_name_t *n = s.buckets[b], *next; n; n = next) {
            next = n->next;
            if (n->pending)
                continue;
            if (n->expires <= now)
                s_drop (n);
            else if (!oldest || n->answered < oldest->answered)
                oldest = n;
        }
    }
    if (s.names >= (uint64_t) s.max_names && oldest)
        s_drop (oldest);
}

/* Every waiter of n gets its answer (through its loop); n is kept, or dropped when nothing
 * is to be kept. */
static void s_answer (s_name_t *n)
{
    for (hms_resolve_t *r = n->waiters, *next; r; r = next) {
        next = r->next;
        s_fill (r, n);
        r->name = NULL;
        r->next = NULL;
        ev_async_send (r->loop, &r->async);
        s_unref (r); /* the list's reference */
    }
    n->waiters = NULL;
    if (n->expires <= n->answered)
        s_drop (n);
}

/* n's lookup is over; its answer is kept keep_ms. */
static void s_settle (s_name_t *n, int rc, const hms_addrs_t *addrs, const char *err, int keep_ms)
{
    int64_t now = hms_mono_ms ();
    n->pending = false;
    n->rc = rc;
    if (rc == 0)
        n->addrs = *addrs;
    else
        snprintf (n->err, sizeof n->err, "%s", err);
    n->answered = now;
    n->expires = now + keep_ms;
    s_answer (n);
}

/* ---- resolver threads --------------------------------------------------------------------- */

static void *s_thread (void *arg)
{
    pthread_mutex_lock (&s.lock);
    for (;;) {
        while (!s.queue_head) {
            struct timespec until;
            clock_gettime (CLOCK_REALTIME, &until);
            until.tv_sec += S_THREAD_IDLE_S;
            s.idle_threads++;
            int rc = pthread_cond_timedwait (&s.work, &s.lock, &until);
            s.idle_threads--;
            if (rc == ETIMEDOUT && !s.queue_head) {
                s.threads--;
                pthread_mutex_unlock (&s.lock);
                return NULL;
            }
        }
        s_name_t *n = s.queue_head;
        s.queue_head = n->queued;
        if (!s.queue_head)
            s.queue_tail = NULL;
        n->queued = NULL;
        s.lookups++;
        char host[256];
        snprintf (host, sizeof host, "%s", n->host);
        pthread_mutex_unlock (&s.lock);

        hms_addrs_t addrs;
        char err[256] = "";
        addrs.n =
            hms_addr_resolve_all (host, 0, addrs.addr, HMS_RESOLVE_ADDRS_MAX, err, sizeof err);
        int rc = addrs.n > 0 ? 0 : -1;

        pthread_mutex_lock (&s.lock);
        s_settle (n, rc, &addrs, err, rc == 0 ? s.ok_ms : s.fail_ms);
    }
}

/* Under the lock: a queued name gets a thread to look it up, if one can be had. */
static void s_wake (s_name_t *n)
{
    if (s.idle_threads > 0) {
        pthread_cond_signal (&s.work);
        return;
    }
    if (s.threads >= HMS_RESOLVE_THREADS)
        return; /* the busy ones take it next */
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init (&attr);
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create (&thread, &attr, s_thread, NULL);
    pthread_attr_destroy (&attr);
    if (rc == 0) {
        s.threads++;
        if (s.threads > s.threads_max)
            s.threads_max = s.threads;
        return;
    }
    if (s.threads > 0)
        return;
    /* no resolver at all: this name fails now, and is not kept */
    s_name_t **p = &s.queue_head;
    while (*p && *p != n)
        p = &(*p)->queued;
    if (*p) {
        *p = n->queued;
        s.queue_tail = NULL;
        for (s_name_t *q = s.queue_head; q; q = q->queued)
            s.queue_tail = q;
    }
    char err[300];
    snprintf (err, sizeof err, "cannot resolve '%s': no thread to look it up (%s)", n->host,
              strerror (rc));
    s_settle (n, -1, NULL, err, 0);
}

/* ---- the API -------------------------------------------------------------------------------- */

/* name is domain or a name under it (lower case, no trailing dot). */
static bool s_under (const char *name, size_t len, const char *domain)
{
    size_t dlen = strlen (domain);
    if (len < dlen || memcmp (name + len - dlen, domain, dlen) != 0)
        return false;
    return len == dlen || name[len - dlen - 1] == '.';
}

/* host as the cache knows it (lower case, no trailing dot, a name under .localhost as
 * localhost) into key; -1 with why for a name that is never looked up. */
static int s_key (const char *host, char key[256], char *why, size_t whylen)
{
    size_t len = strlen (host);
    if (len == 0 || len >= 256) {
        snprintf (why, whylen, "cannot resolve '%.200s': %s", host,
                  len ? "name too long" : "empty name");
        return -1;
    }
    for (size_t i = 0; i <= len; i++)
        key[i] = (char) tolower ((unsigned char) host[i]);
    /* RFC 6761 6.3 and 6.4: a .invalid name fails at once, and a name under .localhost is
     * the loopback address, whatever localhost is here; neither is asked of a DNS server */
    if (len > 1 && key[len - 1] == '.')
        key[--len] = '\0';
    if (s_under (key, len, "invalid")) {
        snprintf (why, whylen, "cannot resolve '%.200s': .invalid names never resolve (RFC 6761)",
                  host);
        return -1;
    }
    if (s_under (key, len, "localhost"))
        snprintf (key, 256, "localhost");
    return 0;
}

hms_resolve_t *hms_resolve (struct ev_loop *loop, const char *host, uint16_t port,
                            hms_resolve_fn *fn, void *arg)
{
    hms_resolve_t *r = hms_alloc (sizeof *r);
    atomic_init (&r->refs, 1);
    r->port = port;
    r->loop = loop;
    r->fn = fn;
    r->arg = arg;
    ev_async_init (&r->async, s_on_async);
    r->async.data = r;
    hms_soon_init (&r->now, s_on_now, r);
    if (hms_addr_from (host, port, &r->addrs.addr[0]) == 0) {
        r->addrs.n = 1;
        hms_soon_start (loop, &r->now);
        return r;
    }
    char key[256];
    if (s_key (host, key, r->err, sizeof r->err) != 0) {
        r->rc = -1;
        hms_soon_start (loop, &r->now);
        return r;
    }
    size_t len = strlen (key);

    pthread_mutex_lock (&s.lock);
    int64_t now = hms_mono_ms ();
    s_name_t *n = s_find (key);
    if (n && !n->pending && now < n->expires) {
        s.cached++;
        s_fill (r, n);
        pthread_mutex_unlock (&s.lock);
        hms_soon_start (loop, &r->now);
        return r;
    }
    ev_async_start (loop, &r->async); /* before a resolver can send to it */
    bool lookup = !n || !n->pending;
    if (!n) {
        s_make_room (now);
        n = hms_alloc (sizeof *n);
        memcpy (n->host, key, len + 1);
        s_name_t **bucket = &s.buckets[s_hash (key)];
        n->next = *bucket;
        *bucket = n;
        s.names++;
    }
    atomic_fetch_add (&r->refs, 1); /* the waiters list's */
    r->name = n;
    r->next = n->waiters;
    n->waiters = r;
    if (lookup) {
        n->pending = true;
        if (s.queue_tail)
            s.queue_tail->queued = n;
        else
            s.queue_head = n;
        s.queue_tail = n;
        s_wake (n);
    } else
        s.joined++;
    pthread_mutex_unlock (&s.lock);
    return r;
}

void hms_resolve_cancel (hms_resolve_t *r)
{
    pthread_mutex_lock (&s.lock);
    s_name_t *n = r->name;
    if (n) {
        hms_resolve_t **p = &n->waiters;
        while (*p != r)
            p = &(*p)->next;
        *p = r->next;
        r->name = NULL;
        s_unref (r); /* the list's; the loop's is still held */
    }
    pthread_mutex_unlock (&s.lock);
    s_stop (r);
}

void hms_resolve_demote (const char *host, const hms_addr_t *addr)
{
    char key[256], why[8];
    if (s_key (host, key, why, sizeof why) != 0)
        return;
    pthread_mutex_lock (&s.lock);
    s_name_t *n = s_find (key);
    if (n && !n->pending && n->rc == 0 && n->addrs.n > 1) {
        hms_addrs_t *a = &n->addrs;
        for (int i = 0; i < a->n - 1; i++)
            if (hms_addr_same_ip (&a->addr[i], addr)) {
                hms_addr_t gone = a->addr[i];
                memmove (&a->addr[i], &a->addr[i + 1], (size_t) (a->n - 1 - i) * sizeof gone);
                a->addr[a->n - 1] = gone;
                s.demoted++;
                break;
            }
    }
    pthread_mutex_unlock (&s.lock);
}

void hms_resolve_forget (const char *host)
{
    char key[256], why[8];
    if (s_key (host, key, why, sizeof why) != 0)
        return;
    pthread_mutex_lock (&s.lock);
    s_name_t *n = s_find (key);
    if (n && !n->pending && hms_mono_ms () - n->answered >= HMS_RESOLVE_FORGET_MS)
        s_drop (n);
    pthread_mutex_unlock (&s.lock);
}

int hms_resolve_lifetime_ms (void)
{
    pthread_mutex_lock (&s.lock);
    int ms = s.ok_ms;
    pthread_mutex_unlock (&s.lock);
    return ms;
}

void hms_resolve_config (int ok_ms, int fail_ms, int max_names)
{
    pthread_mutex_lock (&s.lock);
    s.ok_ms = ok_ms < 0 ? 0 : ok_ms;
    s.fail_ms = fail_ms < 0 ? 0 : fail_ms > s.ok_ms ? s.ok_ms : fail_ms;
    s.max_names = max_names < 1 ? 1 : max_names > S_MAX_NAMES_LIMIT ? S_MAX_NAMES_LIMIT : max_names;
    for (int b = 0; b < S_BUCKETS; b++)
        for (s_name_t *n = s.buckets[b], *next; n; n = next) {
            next = n->next;
            if (!n->pending)
                s_drop (n);
        }
    pthread_mutex_unlock (&s.lock);
}

void hms_resolve_stats (hms_resolve_stats_t *out)
{
    pthread_mutex_lock (&s.lock);
    *out = (hms_resolve_stats_t){.lookups = s.lookups,
                                 .cached = s.cached,
                                 .joined = s.joined,
                                 .names = s.names,
                                 .threads = (uint64_t) s.threads,
                                 .threads_max = (uint64_t) s.threads_max,
                                 .demoted = s.demoted};
    pthread_mutex_unlock (&s.lock);
}

json_t *hms_resolve_stats_add (json_t *into, const char *prefix)
{
    hms_resolve_stats_t st;
    hms_resolve_stats (&st);
    const char *names[6] = {"lookups", "cached", "joined", "names", "threads", "demoted"};
    uint64_t values[6] = {st.lookups, st.cached, st.joined, st.names, st.threads, st.demoted};
    for (int i = 0; i < 6 && into; i++) {
        char key[64];
        snprintf (key, sizeof key, "%s_dns_%s", prefix, names[i]);
        json_object_set_new (into, key, json_integer ((json_int_t) values[i]));
    }
    return into;
}

int hms_resolve_apply (const hms_config_t *cfg, char *err, size_t errlen)
{
    int64_t v = hms_config_int (cfg, "dns_cache_s");
    if (v < 0 || v > 86400) {
        snprintf (err, errlen, "dns_cache_s must be 0 to 86400, not %" PRId64, v);
        return -1;
    }
    hms_resolve_config ((int) v * 1000, HMS_RESOLVE_FAIL_MS, 4096);
    return 0;
}
