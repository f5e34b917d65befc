/* ingress_bypass: a worker's connection to the bypass agent on this host (bypass_client):
 * offers of paused flows, answers routed back to their flows, reconnection when the agent
 * comes back. */
#include "hms_log.h"
#include "ingress_int.h"

#include <errno.h>
#include <string.h>

typedef struct {
    void *flow;
    char id[BYPASS_PROTO_MAX_ID + 1];
} s_offer_t;

static void s_offer_free (void **item)
{
    free (*item);
    *item = NULL;
}

/* Every offer still open counts as refused: their flows go on relaying. */
static void s_refuse_all (ingress_worker_t *w)
{
    s_offer_t *o;
    while ((o = zlistx_first (w->offers))) {
        void *flow = o->flow;
        zlistx_delete (w->offers, zlistx_cursor (w->offers));
        ingress_flow_offered (flow, NULL);
    }
}

void ingress_bypass_close (ingress_worker_t *w)
{
    if (w->bypass) {
        ev_io_stop (w->loop, &w->bypass_w);
        bypass_client_destroy (&w->bypass);
    }
    if (w->offers)
        s_refuse_all (w);
}

static void s_on_answer (struct ev_loop *loop, ev_io *io, int revents)
{
    ingress_worker_t *w = io->data;
    for (;;) {
        bypass_answer_t ans;
        memset (&ans, 0, sizeof ans);
        int rc = bypass_client_recv (w->bypass, &ans);
        if (rc == 0)
            return;
        if (rc < 0) {
            hms_warning ("bypass agent connection lost (%s): its pending offers go on relaying",
                         strerror (errno));
            ingress_bypass_close (w);
            return;
        }
        for (s_offer_t *o = zlistx_first (w->offers); o; o = zlistx_next (w->offers))
            if (strcmp (o->id, ans.id) == 0) {
                void *flow = o->flow;
                zlistx_delete (w->offers, zlistx_cursor (w->offers));
                ingress_flow_offered (flow, &ans);
                break;
            }
        bypass_answer_clear (&ans);
    }
}

void ingress_bypass_connect (ingress_worker_t *w)
{
    if (!w->offers) {
        w->offers = zlistx_new ();
        zlistx_set_destructor (w->offers, s_offer_free);
    }
    if (w->bypass || !w->ingress->bypass_socket[0])
        return;
    char err[256];
    w->bypass = bypass_client_new (w->ingress->bypass_socket, err, sizeof err);
    if (!w->bypass) {
        hms_debug ("ingress.bypass", "no bypass agent: %s", err);
        return;
    }
    ev_io_init (&w->bypass_w, s_on_answer, bypass_client_fd (w->bypass), EV_READ);
    w->bypass_w.data = w;
    ev_io_start (w->loop, &w->bypass_w);
}

int ingress_bypass_offer (ingress_worker_t *w, void *flow, const char *id, int client_fd,
                          int server_fd, const char *rule, uint64_t up, uint64_t down)
{
    ingress_bypass_connect (w);
    if (!w->bypass)
        return -1;
    bypass_offer_t offer = {.id = id,
                            .client_fd = client_fd,
                            .server_fd = server_fd,
                            .policy_rule = rule && *rule ? rule : NULL,
                            .relayed_up = up,
                            .relayed_down = down};
    if (bypass_client_offer (w->bypass, &offer) != 0) {
        if (errno != EAGAIN && errno != EINVAL)
            ingress_bypass_close (w); /* the agent is gone: reconnect at the next offer */
        return -1;
    }
    s_offer_t *o = calloc (1, sizeof *o);
    if (!o)
        abort ();
    o->flow = flow;
    snprintf (o->id, sizeof o->id, "%s", id);
    zlistx_add_end (w->offers, o);
    atomic_fetch_add (&w->ingress->counters.offers, 1);
    return 0;
}

void ingress_bypass_forget (ingress_worker_t *w, void *flow)
{
    if (!w->offers)
        return;
    for (s_offer_t *o = zlistx_first (w->offers); o; o = zlistx_next (w->offers))
        if (o->flow == flow) {
            zlistx_delete (w->offers, zlistx_cursor (w->offers));
            return;
        }
}
