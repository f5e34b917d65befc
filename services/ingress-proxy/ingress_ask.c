/* ingress_ask: one policy decision for a flow or a request whose destination may be a name.
 * When the engine says the answer depends on the name's address (a policy with a dst
 * condition comes first), the name is resolved here and the engine asked again with the
 * address as dst and the name as host, so that "dst": ["10.0.0.0/8"] holds for
 * intranet.example as much as for 10.1.2.3. A name that cannot be resolved is decided as a
 * name (a dst condition does not hold for it); dialing it then fails as it would have. */
#include "hms_alloc.h"
#include "hms_log.h"
#include "hms_resolve.h"
#include "ingress_int.h"

#include <stdlib.h>
#include <string.h>

static void s_go (ingress_ask_t *a);

/* The query's strings, copied: it may be asked again after its asker's stack is gone. */
static void s_keep (ingress_ask_t *a)
{
    const char **fields[] = {&a->q.src,    &a->q.dst,  &a->q.protocol, &a->q.host,    &a->q.sni,
                             &a->q.method, &a->q.path, &a->q.user,     &a->q.service, &a->q.ns};
    size_t n = sizeof fields / sizeof fields[0], total = 0;
    for (size_t i = 0; i < n; i++)
        total += *fields[i] ? strlen (*fields[i]) + 1 : 0;
    a->copy = hms_alloc_raw (total ? total : 1);
    char *p = a->copy;
    for (size_t i = 0; i < n; i++)
        if (*fields[i]) {
            size_t len = strlen (*fields[i]) + 1;
            memcpy (p, *fields[i], len);
            *fields[i] = p;
            p += len;
        }
}

static void s_deliver (ingress_ask_t *a, const hms_decision_t *d)
{
    free (a->copy);
    a->copy = NULL;
    a->fn (d, a->arg); /* may free a */
}

/* The policy is asked with the name's first address, and that address is what is dialed
 * then (a dst condition holds for what the flow reaches). */
static void s_resolved (const hms_addrs_t *addrs, const char *why, void *arg)
{
    ingress_ask_t *a = arg;
    a->resolve = NULL;
    if (addrs) {
        hms_addr_ip (&addrs->addr[0], a->dst_ip, sizeof a->dst_ip);
        if (!a->q.host)
            a->q.host = a->q.dst;
        a->q.dst = a->dst_ip;
    } else
        hms_debug ("ingress.policy", "policy on addresses: %s; %s is decided as a name", why,
                   a->q.dst);
    a->q.dst_pending = false;
    s_go (a);
}

static void s_decided (const hms_decision_t *d, void *arg)
{
    ingress_ask_t *a = arg;
    a->decide = NULL;
    if (d->needs_dst && a->q.dst_pending && !d->unavailable) {
        a->resolve = hms_resolve (a->w->loop, a->q.dst, (uint16_t) a->q.port, s_resolved, a);
        return;
    }
    s_deliver (a, d);
}

static void s_go (ingress_ask_t *a)
{
    /* s_decided may run (and the asker end) before hms_decide returns NULL */
    hms_decide_req_t *req = hms_decide (a->w->decider, &a->q, s_decided, a);
    if (req)
        a->decide = req;
}

void ingress_ask (ingress_ask_t *a, ingress_worker_t *w, const hms_query_t *q, ingress_ask_fn *fn,
                  void *arg)
{
    *a = (ingress_ask_t){.w = w, .q = *q, .fn = fn, .arg = arg};
    hms_addr_t literal;
    if (q->dst && *q->dst && hms_addr_from (q->dst, 0, &literal) != 0) {
        a->q.dst_pending = true; /* a name: its address may matter */
        s_keep (a);
    }
    s_go (a);
}

const char *ingress_ask_checked_addr (const ingress_ask_t *a, const hms_decision_t *d)
{
    return a->dst_ip[0] && !d->target[0] ? a->dst_ip : NULL;
}

void ingress_ask_cancel (ingress_ask_t *a)
{
    if (a->decide)
        hms_decide_cancel (a->decide);
    if (a->resolve)
        hms_resolve_cancel (a->resolve);
    a->decide = NULL;
    a->resolve = NULL;
    free (a->copy);
    a->copy = NULL;
}
