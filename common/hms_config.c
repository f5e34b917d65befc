/* hms_config: strict bootstrap config (JSON file, HERMES_* environment, flags). */
#include "hms_config.h"
#include "hms_alloc.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const hms_cfg_key_t *def;
    char *value;
} s_entry_t;

struct hms_config {
    s_entry_t *entries;
    size_t count;
};

static size_t s_count (const hms_cfg_key_t *t)
{
    size_t n = 0;
    while (t && t[n].key)
        n++;
    return n;
}

hms_config_t *hms_config_new (const hms_cfg_key_t *common, const hms_cfg_key_t *daemon)
{
    hms_config_t *self = hms_alloc (sizeof *self);
    size_t a = s_count (common), b = s_count (daemon);
    self->entries = hms_alloc ((a + b) * sizeof (s_entry_t));
    for (size_t i = 0; i < a; i++)
        self->entries[self->count++].def = &common[i];
    for (size_t i = 0; i < b; i++)
        self->entries[self->count++].def = &daemon[i];
    for (size_t i = 0; i < self->count; i++)
        self->entries[i].value = hms_strdup (self->entries[i].def->dflt);
    return self;
}

void hms_config_destroy (hms_config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_config_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free (self->entries[i].value);
    free (self->entries);
    free (self);
    *self_p = NULL;
}

static s_entry_t *s_find (const hms_config_t *self, const char *key)
{
    for (size_t i = 0; i < self->count; i++)
        if (strcmp (self->entries[i].def->key, key) == 0)
            return &self->entries[i];
    return NULL;
}

static int s_check (const s_entry_t *e, const char *value, const char *origin, char *err,
                    size_t errlen)
{
    if (e->def->type == HMS_CFG_INT) {
        char *end;
        errno = 0;
        long long v = strtoll (value, &end, 10);
        (void) v;
        if (errno || end == value || *end) {
            snprintf (err, errlen, "%s: %s must be an integer, got '%s'", origin, e->def->key,
                      value);
            return -1;
        }
    } else if (e->def->type == HMS_CFG_BOOL) {
        if (strcmp (value, "true") && strcmp (value, "false") && strcmp (value, "1") &&
            strcmp (value, "0")) {
            snprintf (err, errlen, "%s: %s must be true or false, got '%s'", origin, e->def->key,
                      value);
            return -1;
        }
    }
    return 0;
}

int hms_config_set (hms_config_t *self, const char *key, const char *value, const char *origin,
                    char *err, size_t errlen)
{
    s_entry_t *e = s_find (self, key);
    if (!e) {
        snprintf (err, errlen, "%s: unknown key '%s'", origin, key);
        return -1;
    }
    if (s_check (e, value, origin, err, errlen))
        return -1;
    free (e->value);
    e->value = hms_strdup (value);
    return 0;
}

int hms_config_load_file (hms_config_t *self, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_load_file (path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf (err, errlen, "config file %s: line %d column %d: %s", path, jerr.line,
                  jerr.column, jerr.text);
        return -1;
    }
    int rc = 0;
    if (!json_is_object (doc)) {
        snprintf (err, errlen, "config file %s: expected a JSON object at the top", path);
        rc = -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach (doc, key, val)
    {
        if (rc)
            break;
        s_entry_t *e = s_find (self, key);
        char origin[512];
        snprintf (origin, sizeof origin, "config file %s", path);
        if (!e) {
            snprintf (err, errlen, "config file %s: unknown key '%s'", path, key);
            rc = -1;
            break;
        }
        char buf[64];
        const char *text = NULL;
        if (e->def->type == HMS_CFG_STRING && json_is_string (val))
            text = json_string_value (val);
        else if (e->def->type == HMS_CFG_INT && json_is_integer (val)) {
            snprintf (buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value (val));
            text = buf;
        } else if (e->def->type == HMS_CFG_BOOL && json_is_boolean (val))
            text = json_is_true (val) ? "true" : "false";
        if (!text) {
            static const char *names[] = {"a string", "an integer", "a boolean"};
            snprintf (err, errlen, "config file %s: key '%s' must be %s", path, key,
                      names[e->def->type]);
            rc = -1;
            break;
        }
        rc = hms_config_set (self, key, text, origin, err, errlen);
    }
    json_decref (doc);
    return rc;
}

/* "api_bind" -> "HERMES_API_BIND" */
static void s_env_name (const char *key, char *out, size_t len)
{
    size_t n = (size_t) snprintf (out, len, "HERMES_");
    for (; *key && n + 1 < len; key++)
        out[n++] = (char) toupper ((unsigned char) *key);
    out[n] = 0;
}

/* "--api-bind" -> "api_bind"; NULL if not a long option */
static int s_flag_key (const char *arg, char *out, size_t len)
{
    if (strncmp (arg, "--", 2) != 0 || !arg[2])
        return -1;
    size_t n = 0;
    for (arg += 2; *arg && *arg != '=' && n + 1 < len; arg++)
        out[n++] = *arg == '-' ? '_' : *arg;
    out[n] = 0;
    return 0;
}

int hms_config_load (hms_config_t *self, int argc, char **argv, char *err, size_t errlen)
{
    /* The file first, so that environment and flags override it. */
    const char *file = getenv ("HERMES_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
            hms_config_usage (self, stdout, argv[0]);
            return 1;
        }
        if (strcmp (argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf (err, errlen, "option --config needs a file name");
                return -1;
            }
            file = argv[++i];
        } else if (strncmp (argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    if (file && *file && hms_config_load_file (self, file, err, errlen))
        return -1;
    for (size_t i = 0; i < self->count; i++) {
        char env[96];
        s_env_name (self->entries[i].def->key, env, sizeof env);
        const char *v = getenv (env);
        if (v && hms_config_set (self, self->entries[i].def->key, v, env, err, errlen))
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp (arg, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp (arg, "--config=", 9) == 0)
            continue;
        char key[96];
        if (s_flag_key (arg, key, sizeof key)) {
            snprintf (err, errlen, "unexpected argument '%s' (see --help)", arg);
            return -1;
        }
        s_entry_t *e = s_find (self, key);
        if (!e) {
            snprintf (err, errlen, "unknown option '%s' (see --help)", arg);
            return -1;
        }
        const char *eq = strchr (arg, '=');
        const char *value;
        if (eq)
            value = eq + 1;
        else if (e->def->type == HMS_CFG_BOOL &&
                 (i + 1 >= argc || strncmp (argv[i + 1], "--", 2) == 0))
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            snprintf (err, errlen, "option '%s' needs a value", arg);
            return -1;
        }
        char origin[128];
        snprintf (origin, sizeof origin, "option --%s", e->def->key);
        if (hms_config_set (self, key, value, origin, err, errlen))
            return -1;
    }
    return 0;
}

const char *hms_config_str (const hms_config_t *self, const char *key)
{
    s_entry_t *e = s_find (self, key);
    return e ? e->value : NULL;
}

int64_t hms_config_int (const hms_config_t *self, const char *key)
{
    const char *v = hms_config_str (self, key);
    return v ? strtoll (v, NULL, 10) : 0;
}

bool hms_config_bool (const hms_config_t *self, const char *key)
{
    const char *v = hms_config_str (self, key);
    return v && (strcmp (v, "true") == 0 || strcmp (v, "1") == 0);
}

void hms_config_usage (const hms_config_t *self, FILE *out, const char *progname)
{
    fprintf (out,
             "usage: %s [--config FILE] [OPTIONS]\n\noptions (also HERMES_<KEY> in the "
             "environment, or \"key\" in the config file):\n",
             progname);
    for (size_t i = 0; i < self->count; i++) {
        char flag[96];
        size_t n = 0;
        for (const char *k = self->entries[i].def->key; *k && n + 1 < sizeof flag; k++)
            flag[n++] = *k == '_' ? '-' : *k;
        flag[n] = 0;
        fprintf (out, "  --%-22s %s%s%s%s\n", flag, self->entries[i].def->help,
                 self->entries[i].def->dflt ? " (default " : "",
                 self->entries[i].def->dflt ? self->entries[i].def->dflt : "",
                 self->entries[i].def->dflt ? ")" : "");
    }
}
