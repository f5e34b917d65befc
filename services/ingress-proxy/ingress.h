/* ingress: where traffic enters the overlay. Listens as an HTTP/1.1 forward proxy
 * (CONNECT), an HTTP/2 proxy over TLS (CONNECT streams) and a transparent TCP proxy
 * (iptables REDIRECT); asks the policy engine about every new flow (cached, asynchronous);
 * then connects to the target itself (direct) or opens a stream on a warm, multiplexed
 * HTTP/2 connection to the first relay of the route to the flow's exit node. */
#ifndef INGRESS_H_INCLUDED
#define INGRESS_H_INCLUDED

#include "hms_config.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ingress ingress_t;

extern const hms_cfg_key_t ingress_keys[];

/* Caller owns return value; NULL with err. */
ingress_t *ingress_new (hms_config_t *cfg, char *err, size_t errlen);
void ingress_destroy (ingress_t **self_p);

int ingress_validate (void *self, const json_t *config, char *err, size_t errlen);
void ingress_apply (void *self, json_t *config, int64_t version);
/* hms_stats_fn: flows, direct, overlay, denied, failed, bad requests. Caller owns. */
json_t *ingress_stats (void *self);
/* The graceful stop (hms_daemon_def_t drain and busy). */
void ingress_drain (void *self);
int ingress_busy (void *self);

#endif
