/* hms_metrics: a daemon's counters in the Prometheus text format, served over plain HTTP on
 * its metrics port (GET /metrics) by a small thread of its own. */
#ifndef HMS_METRICS_H_INCLUDED
#define HMS_METRICS_H_INCLUDED

#include "hms_service.h"

#include <stddef.h>

typedef struct hms_metrics hms_metrics_t;

/* Listens on listen ("IP:PORT"); every scrape calls stats (arg) and prints each counter as
 * hermes_<name>{kind="...",instance="..."} <value>. Caller owns return value; NULL with err. */
hms_metrics_t *hms_metrics_new (const char *listen, const char *kind, const char *instance,
                                hms_stats_fn *stats, void *arg, char *err, size_t errlen);
void hms_metrics_destroy (hms_metrics_t **self_p);

#endif
