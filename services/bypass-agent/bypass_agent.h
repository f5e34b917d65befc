/* bypass_agent: the bypass agent's service: the Unix socket where proxies offer connections
 * (protocol: bypass_proto.h), the offload state machine of each connection (bypass_flow), the
 * eBPF data plane (bpf/bypass_dp.h), cleanup on FIN/RST/idle, and the operator's view
 * (counters, flow list, P4 export). Everything runs on one worker thread (hms_worker); the
 * functions below may be called from any thread. */
#ifndef HMS_BYPASS_AGENT_H_INCLUDED
#define HMS_BYPASS_AGENT_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bypass_agent bypass_agent_t;

typedef struct {
    const char *socket_path;  /* the Unix socket (replaced if it exists, mode 0600) */
    int64_t idle_timeout_ms;  /* a spliced flow with no segment for this long is removed */
    int64_t fin_linger_ms;    /* after FIN from both sides, the flow stays this long */
    int64_t drain_timeout_ms; /* an offer not frozen after this long is refused ("busy") */
    int offload_retries;      /* freezes undone because data arrived, before giving up */
    int max_flows;            /* offers in progress plus spliced flows */
    bool no_dataplane;        /* never load the eBPF data plane (every offer is refused) */
    bool shape_syn;           /* the SYN shaper on every interface (bypass_maps.h) */
    /* the synthetic delay ramp (bypass_delay.h); off when delay_step_ms is 0 */
    int delay_step_ms;
    int delay_step_hold_ms; /* how long each step lasts */
    int delay_queue;        /* NFQUEUE number */
    int freeze_pause_ms;    /* tests only: legs stay frozen this long before the splice */
} bypass_agent_opts_t;

/* Starts the agent: loads the data plane (when it cannot, logs why and refuses every offer
 * with reason "dataplane"), binds the socket, starts the worker. Caller owns return value;
 * NULL with err when the socket cannot be made. */
bypass_agent_t *bypass_agent_new (const bypass_agent_opts_t *opts, char *err, size_t errlen);
/* Refuses offers in progress ("shutting_down": the proxies resume relaying), removes the
 * data plane (spliced flows stop), removes the socket; nulls *self_p. */
void bypass_agent_destroy (bypass_agent_t **self_p);

/* hms_service hooks (arg = the agent). */
int bypass_agent_validate (void *arg, const json_t *config, char *err, size_t errlen);
void bypass_agent_apply (void *arg, json_t *config, int64_t version);
/* Flat counters {"bypass_offers": N, ...} for heartbeats and the metrics port. Caller owns
 * return value. */
json_t *bypass_agent_stats (void *arg);

/* The operator's view: {"flows": [...], "closed": [...recently removed...], "stats": {...}}
 * (the body of the proposed bypass.flows message, see the README of bypass-agent). Caller
 * owns return value; NULL when the worker did not answer within a second. */
json_t *bypass_agent_flows (bypass_agent_t *self);
/* The data plane's table as simple_switch_CLI table_add lines (ports = ifindex). Caller owns
 * return value; NULL when the worker did not answer or there is no data plane. */
char *bypass_agent_export_p4 (bypass_agent_t *self);

/* The body of the agent's answer to an operator's query, the proposed bus message
 * bypass.query v1 (README.md): what "flows" -> bypass_agent_flows; "export_p4" ->
 * {"p4": "table_add ...\n..."}. Caller owns return value; NULL (with err) for an unknown
 * what, no data plane, or a worker that did not answer. */
json_t *bypass_agent_query (void *arg, const char *what, char *err, size_t errlen);

#endif
