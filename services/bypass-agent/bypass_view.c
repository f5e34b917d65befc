/* bypass_view: the operator's view of the agent: flat counters (heartbeats, metrics port), the
 * flow list and the P4 export. */
#include "bypass_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hms_time.h"

static void s_set (json_t *o, const char *name, uint64_t v)
{
    json_object_set_new (o, name, json_integer ((json_int_t) v));
}

json_t *bypass_view_stats (bypass_agent_t *self)
{
    static const struct {
        const char *name;
        enum bypass_stat which;
    } dp_stats[] = {
        {"bypass_dp_spliced_segments", BYPASS_STAT_SPLICED},
        {"bypass_dp_observed_segments", BYPASS_STAT_OBSERVED},
        {"bypass_dp_missed_segments", BYPASS_STAT_MISS},
        {"bypass_dp_malformed_segments", BYPASS_STAT_MALFORMED},
        {"bypass_dp_dropped_segments", BYPASS_STAT_ERROR},
        {"bypass_dp_events_lost", BYPASS_STAT_EV_LOST},
        {"bypass_dp_gso_packets", BYPASS_STAT_GSO},
        {"bypass_dp_shaped_syns", BYPASS_STAT_SHAPED_SYN},
        {"bypass_dp_shaped_synacks", BYPASS_STAT_SHAPED_SYNACK},
    };
    bypass_counters_t *st = &self->st;
    json_t *o = json_object ();
    char name[64];

    s_set (o, "bypass_offers", atomic_load (&st->offers));
    s_set (o, "bypass_accepted", atomic_load (&st->accepted));
    s_set (o, "bypass_refused", atomic_load (&st->refused));
    for (int r = 0; r < BYPASS_R_MAX; r++) {
        snprintf (name, sizeof name, "bypass_refused_%s", bypass_reason_names[r]);
        s_set (o, name, atomic_load (&st->refused_by[r]));
    }
    s_set (o, "bypass_active_flows", atomic_load (&st->active));
    s_set (o, "bypass_offers_in_progress", atomic_load (&st->draining));
    for (int c = 0; c < BYPASS_C_MAX; c++) {
        snprintf (name, sizeof name, "bypass_removed_%s", bypass_cleanup_names[c]);
        s_set (o, name, atomic_load (&st->closed_by[c]));
    }
    s_set (o, "bypass_freeze_retries", atomic_load (&st->retries));
    s_set (o, "bypass_agent_relayed_bytes", atomic_load (&st->relayed_bytes));
    s_set (o, "bypass_spliced_bytes", atomic_load (&st->spliced_bytes));
    s_set (o, "bypass_spliced_packets", atomic_load (&st->spliced_packets));
    s_set (o, "bypass_proxies", atomic_load (&st->clients));
    s_set (o, "bypass_requests", atomic_load (&st->queries));
    s_set (o, "bypass_protocol_errors", atomic_load (&st->protocol_errors));
    s_set (o, "bypass_delay_ramps", atomic_load (&st->ramps));
    s_set (o, "bypass_delay_steps", atomic_load (&st->ramp_steps));
    s_set (o, "bypass_delayed_packets", atomic_load (&st->delayed_packets));
    s_set (o, "bypass_delayed_injected", atomic_load (&st->delayed_injected));
    s_set (o, "bypass_dataplane", self->dp ? 1 : 0);
    s_set (o, "bypass_shaper_interfaces", atomic_load (&st->shaper_ifaces));
    if (self->dp)
        for (size_t i = 0; i < sizeof dp_stats / sizeof dp_stats[0]; i++)
            s_set (o, dp_stats[i].name, bypass_dp_stat (self->dp, dp_stats[i].which));
    return o;
}

json_t *bypass_view_flows (bypass_agent_t *self, size_t max)
{
    int64_t now = hms_mono_ms ();
    json_t *flows = json_array (), *closed = json_array ();
    size_t n = self->nclosed < BYPASS_CLOSED_KEEP ? self->nclosed : BYPASS_CLOSED_KEEP;

    for (bypass_flow_t *f = self->flows; f && json_array_size (flows) < max; f = f->next)
        json_array_append_new (flows, bypass_flow_json (f, now));
    /* most recent first */
    for (size_t k = 0; k < n; k++) {
        const bypass_closed_t *c = &self->closed[(self->nclosed - 1 - k) % BYPASS_CLOSED_KEEP];
        json_array_append_new (
            closed,
            json_pack ("{s:I, s:s, s:s, s:s, s:s?, s:I, s:I, s:{s:{s:I, s:I}, s:{s:I, s:I}}}", "id",
                       (json_int_t) c->id, "client", c->client, "server", c->server, "reason",
                       c->reason, "policy_rule", c->policy_rule[0] ? c->policy_rule : NULL,
                       "spliced_at_ms", (json_int_t) c->spliced_wall_ms, "removed_at_ms",
                       (json_int_t) c->closed_wall_ms, "spliced", "up", "packets",
                       (json_int_t) c->packets[0], "bytes", (json_int_t) c->bytes[0], "down",
                       "packets", (json_int_t) c->packets[1], "bytes", (json_int_t) c->bytes[1]));
    }
    return json_pack ("{s:o, s:i, s:o, s:o}", "flows", flows, "flows_total", self->nflows, "closed",
                      closed, "stats", bypass_view_stats (self));
}

char *bypass_view_export_p4 (bypass_agent_t *self)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out;

    if (!self->dp)
        return NULL;
    out = open_memstream (&text, &len);
    if (!out)
        return NULL;
    bypass_dp_export_p4 (self->dp, out, NULL, NULL);
    fclose (out);
    return text;
}
