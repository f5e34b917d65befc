/* hms_config: the bootstrap layer of a daemon's config: a strict JSON file, HERMES_*
 * environment variables over it, and command-line flags over both. */
#ifndef HMS_CONFIG_H_INCLUDED
#define HMS_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { HMS_CFG_STRING, HMS_CFG_INT, HMS_CFG_BOOL } hms_cfg_type_t;

/* One bootstrap key: "api_bind" in the file, --api-bind on the command line and
 * HERMES_API_BIND in the environment. dflt may be NULL (no default). */
typedef struct {
    const char *key;
    hms_cfg_type_t type;
    const char *dflt;
    const char *help;
} hms_cfg_key_t;

typedef struct hms_config hms_config_t;

/* Creates a config over one or two key tables, each ended by an entry with key NULL
 * (daemon keys may be NULL). Caller owns return value. */
hms_config_t *hms_config_new (const hms_cfg_key_t *common, const hms_cfg_key_t *daemon);
void hms_config_destroy (hms_config_t **self_p);

/* Applies, in order, --config FILE (or HERMES_CONFIG), the environment, then flags.
 * Returns 0 when loaded, 1 when --help was asked (usage printed), -1 on an error described
 * in err (unknown key naming the file, wrong type, unknown flag, missing value). */
int hms_config_load (hms_config_t *self, int argc, char **argv, char *err, size_t errlen);
/* Loads a JSON file strictly (for tests and for --config). */
int hms_config_load_file (hms_config_t *self, const char *path, char *err, size_t errlen);
/* Sets one key from text, checking its type; origin names where the value came from. */
int hms_config_set (hms_config_t *self, const char *key, const char *value, const char *origin,
                    char *err, size_t errlen);

/* The value of a key, or NULL / 0 / false when unset. Pointers stay valid until the
 * next set or destroy. */
const char *hms_config_str (const hms_config_t *self, const char *key);
int64_t hms_config_int (const hms_config_t *self, const char *key);
bool hms_config_bool (const hms_config_t *self, const char *key);

void hms_config_usage (const hms_config_t *self, FILE *out, const char *progname);

#endif
