/* hms_policy: the policy engine's decision path. A policy set (documents of
 * schemas/config/policy.v1) is compiled into match structures: prefixes by length with binary
 * search, merged port ranges, hash sets of exact and suffix names, globs, method and path
 * lists; rules sorted by priority (lower first, 1000 when absent) then id. A query is decided
 * by the first rule whose every condition holds; when none does, the answer is deny ("no rule
 * matched"): Hermes is never an open proxy.
 *
 * Matching:
 * - a condition on a field the query does not carry never holds (unknown is not "any");
 * - src / dst: IPv4 and IPv6 prefixes; IPv4-mapped IPv6 addresses (::ffff:a.b.c.d), in queries
 *   and in prefixes of length 96 or more, count as IPv4. A dst that is not an address is a
 *   name: it matches no dst prefix and stands for host when the query has no host;
 * - host, sni, user, service, namespace: "name" exact, ".example.com" any name ending so
 *   (subdomains), "*" globs ("*" matches any run of characters); all case-insensitive; a
 *   host loses its ":port" and host and sni a trailing dot before matching;
 * - method: exact; path_prefix: byte prefix of the path; ports: N or N-M; protocol: one of.
 *
 * Actions: allow, deny, route (decision route = the rule's route), rate_limit (allow while
 * the token bucket of the rule and key - src, user or host - holds a token, else deny "rate
 * limited by ID"; never cacheable). Every decision carries the rule's target ("host:port"
 * replacing the destination: per-user address spaces), retry_profile, bypass and ttl_ms.
 *
 * Evaluation uses an index (rules whose host list is all exact names are found by the
 * query's host, rules on a few ports by its port, the rest in order) whose result always
 * equals that of testing every rule in order (HMS_POLICY_SCAN). A compiled set is read-only
 * apart from its rate-limit buckets, which a mutex guards: hms_policy_evaluate may be called
 * from any thread. */
#ifndef HMS_POLICY_H_INCLUDED
#define HMS_POLICY_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HMS_POLICY_DEFAULT_TTL_MS   5000
#define HMS_POLICY_DEFAULT_PRIORITY 1000
/* Rate-limit buckets a set keeps (rule x key) unless told otherwise. */
#define HMS_POLICY_DEFAULT_RATE_SLOTS 65536

/* Flags of hms_policy_evaluate. */
#define HMS_POLICY_SCAN    1 /* test every rule in order, without the index (reference) */
#define HMS_POLICY_DRY_RUN 2 /* rate-limit rules neither take nor check tokens: allow */

typedef enum { HMS_POLICY_ALLOW = 0, HMS_POLICY_DENY, HMS_POLICY_ROUTE } hms_policy_action_t;

/* A question to the engine; NULL strings and port 0 are unknown. Not copied. */
typedef struct {
    const char *src;      /* client address, IPv4 or IPv6 text */
    const char *dst;      /* destination address, or a name */
    int port;             /* destination port, 1..65535 */
    const char *protocol; /* tcp, udp, ip or http */
    const char *host;     /* HTTP Host / CONNECT authority, ":port" allowed */
    const char *sni;
    bool sni_pending; /* sni unknown, but the asker can read it if the answer depends on it */
    bool dst_pending; /* dst is a name the asker can resolve if the answer depends on it */
    const char *method;
    const char *path;
    const char *user; /* identity headers */
    const char *service;
    const char *ns; /* namespace */
} hms_policy_query_t;

/* An answer. The strings belong to the set that decided and live as long as it does. */
typedef struct {
    hms_policy_action_t action;
    const char *rule;  /* id of the deciding rule; NULL when the default applied */
    const char *route; /* route or node name, for action route */
    const char *target;
    const char *retry_profile;
    bool bypass;
    int64_t ttl_ms; /* how long the answer may be cached; 0 means not at all */
    const char *reason;
    /* Only for a query with sni_pending: a rule with an sni condition would decide for some
     * names, so ask again with the SNI (action deny, no rule: not an answer to act on). */
    bool needs_sni;
    /* The same for dst_pending: a rule with a dst condition would decide for some address of
     * the name, so resolve it and ask again with the address (and the name as host). */
    bool needs_dst;
} hms_policy_decision_t;

/* Monotonic milliseconds, for the token buckets. */
typedef int64_t (hms_policy_clock_fn) (void *arg);

typedef struct hms_policy_set hms_policy_set_t;

/* Compiles policies, a JSON array of policy documents (NULL: no policies). Each document is
 * checked against schemas/config/policy.v1 and for what a schema cannot say (prefix numbers,
 * port ranges, actions that need parameters, empty lists, targets, unique ids). Caller owns
 * return value; NULL with err "policy ID (policies[I]): what is wrong" for the first bad
 * document, or "policy ID appears twice (policies[I] and [J])". */
hms_policy_set_t *hms_policy_compile (const json_t *policies, char *err, size_t errlen);
/* Frees the set and nulls *self_p; safe with NULL. */
void hms_policy_destroy (hms_policy_set_t **self_p);

/* How many rules the set has. */
size_t hms_policy_size (const hms_policy_set_t *self);
/* Replaces the clock of the rate-limit buckets (default: hms_mono_ms). */
void hms_policy_set_clock (hms_policy_set_t *self, hms_policy_clock_fn *fn, void *arg);
/* Sets how many rate-limit buckets the set keeps (rounded up to a power of two, at least
 * 64), before its first evaluation. When full, a new key takes the slot, among a few, whose
 * bucket is fullest (nothing is lost when it is full) and least recently used. */
void hms_policy_set_rate_slots (hms_policy_set_t *self, size_t slots);
/* Takes over the rate-limit state of old for every rule that both sets have with the same
 * id and rate, so that a new config does not refill every bucket. */
void hms_policy_inherit (hms_policy_set_t *self, hms_policy_set_t *old);

/* Decides query into out (flags: HMS_POLICY_*). A src that is not an address is denied with
 * rule NULL, ttl_ms 0 and a reason saying so. */
void hms_policy_evaluate (hms_policy_set_t *self, const hms_policy_query_t *query, int flags,
                          hms_policy_decision_t *out);

/* "allow", "deny" or "route". */
const char *hms_policy_action_name (hms_policy_action_t action);
/* Fills query from a JSON object with the fields src, dst, port, protocol, host, sni,
 * sni_pending, method, path, user, service and namespace (a policy.decide query, a policy.test
 * body); the strings are borrowed from obj. */
void hms_policy_query_from_json (const json_t *obj, hms_policy_query_t *query);
/* {action, rule, route, target, retry_profile, bypass, ttl_ms, reason[, needs_sni: true]},
 * absent strings as null. Caller owns return value. */
json_t *hms_policy_decision_to_json (const hms_policy_decision_t *decision);

/* Parses "10.0.0.0/8", "2001:db8::/32" or a bare address. 0, or -1 with err. */
int hms_policy_prefix_parse (const char *text, int *family, unsigned char addr[16], int *len,
                             char *err, size_t errlen);
/* Parses "443" or "8000-8100" (1 <= N <= M <= 65535). 0, or -1 with err and the outputs
 * untouched. */
int hms_policy_ports_parse (const char *text, int *lo, int *hi, char *err, size_t errlen);

#endif
