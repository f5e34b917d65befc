/* hms_current: the config a daemon runs now, swapped in whole by the service thread and
 * read by any other thread (a reference-counted JSON document under a mutex). */
#ifndef HMS_CURRENT_H_INCLUDED
#define HMS_CURRENT_H_INCLUDED

#include "hms_config.h"

#include <jansson.h>
#include <stdint.h>

typedef struct hms_current hms_current_t;

/* Caller owns return value. */
hms_current_t *hms_current_new (void);
void hms_current_destroy (hms_current_t **self_p);
/* Replaces the config; takes ownership of config. */
void hms_current_set (hms_current_t *self, json_t *config, int64_t version);
/* A new reference to the config (NULL before the first), and its version. */
json_t *hms_current_get (hms_current_t *self, int64_t *version);

/* Hooks for hms_daemon_def_t, for daemons whose whole state is their current config. */
void *hms_current_start (hms_config_t *cfg, char *err, size_t errlen);
void hms_current_stop (void *state);
void hms_current_apply (void *state, json_t *config, int64_t version);

#endif
