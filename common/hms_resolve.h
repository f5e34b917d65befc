/* hms_resolve: names to addresses for libev loops, without blocking them: getaddrinfo runs
 * on a small pool of resolver threads, one lookup per name however many flows wait for it,
 * and the answer (all of the name's addresses, or the failure) is kept for a while in a
 * process-wide cache, where an address that a connection found dead goes last. */
#ifndef HMS_RESOLVE_H_INCLUDED
#define HMS_RESOLVE_H_INCLUDED

#include "hms_config.h"
#include "hms_net.h"

#include <ev.h>
#include <jansson.h>
#include <stdint.h>

typedef struct hms_resolve hms_resolve_t;

/* A name's addresses, best first (at most this many are kept). */
#define HMS_RESOLVE_ADDRS_MAX 8
typedef struct {
    int n;
    hms_addr_t addr[HMS_RESOLVE_ADDRS_MAX];
} hms_addrs_t;

/* addrs on success (n >= 1, ports set); NULL with why ("cannot resolve 'NAME': ..."). */
typedef void (hms_resolve_fn) (const hms_addrs_t *addrs, const char *why, void *arg);

/* Resolves host:port (an IP literal too); fn always comes later from the loop, never from
 * this call, also for an answer from the cache. As RFC 6761 asks of resolver libraries,
 * names under .invalid fail at once, and names under .localhost are answered as localhost
 * (neither is sent to a DNS server). Caller does not own the return value (valid
 * until fn or a cancel). */
hms_resolve_t *hms_resolve (struct ev_loop *loop, const char *host, uint16_t port,
                            hms_resolve_fn *fn, void *arg);
/* fn will not be called. */
void hms_resolve_cancel (hms_resolve_t *r);
/* A connection to addr, one of host's addresses, failed: while host's answer is kept, addr
 * comes after its other addresses (a name with several addresses, one of them gone: a scaled
 * service whose instance stopped). Nothing when host is not kept or has one address. */
void hms_resolve_demote (const char *host, const hms_addr_t *addr);
/* No address of host could be connected to: its kept answer is dropped, so that the next
 * request looks it up again (the instances behind the name were replaced, with new
 * addresses). Nothing while a lookup of it is in progress, or when the answer is younger
 * than HMS_RESOLVE_FORGET_MS (a name whose service is down is asked of the resolver at
 * most that often, however many dials fail). */
#define HMS_RESOLVE_FORGET_MS 1000
void hms_resolve_forget (const char *host);

/* How long an answer is kept (ok_ms; 0: no cache, every request looks up), how long a
 * failure is (fail_ms, at most ok_ms), and how many names at most. For all loops of the
 * process; entries already kept keep their expiry. */
void hms_resolve_config (int ok_ms, int fail_ms, int max_names);
/* How long an answer is kept now (ok_ms of hms_resolve_config). */
int hms_resolve_lifetime_ms (void);

typedef struct {
    uint64_t lookups;     /* getaddrinfo calls */
    uint64_t cached;      /* requests answered from the cache */
    uint64_t joined;      /* requests that waited for a lookup another request started */
    uint64_t names;       /* names kept now */
    uint64_t threads;     /* resolver threads now */
    uint64_t threads_max; /* most resolver threads at once so far */
    uint64_t demoted;     /* addresses put last after a failed connection */
} hms_resolve_stats_t;
void hms_resolve_stats (hms_resolve_stats_t *out);
/* Adds them to a daemon's counters as PREFIX_dns_lookups, _dns_cached, _dns_joined,
 * _dns_names, _dns_threads and _dns_demoted. Returns into. */
json_t *hms_resolve_stats_add (json_t *into, const char *prefix);

/* Resolver threads at most. */
#define HMS_RESOLVE_THREADS 4
/* A failed lookup is tried again after at most this long. */
#define HMS_RESOLVE_FAIL_MS 2000

/* The daemon option that sets the cache's lifetime (hms_resolve_apply). */
#define HMS_RESOLVE_KEYS                                                                           \
    {                                                                                              \
        "dns_cache_s", HMS_CFG_INT, "10",                                                          \
            "a name's addresses are reused this many seconds, and a relay's name in use is "       \
            "looked up again at this pace (relays joining or leaving it are seen); a name that "   \
            "cannot be resolved is tried again after at most 2 s; 0 looks a name up for every "    \
            "connection"                                                                           \
    }

/* Applies HMS_RESOLVE_KEYS from a daemon's config; -1 with err when out of range. */
int hms_resolve_apply (const hms_config_t *cfg, char *err, size_t errlen);

#endif
