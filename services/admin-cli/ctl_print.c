/* ctl_print: column-aligned tables for hermesctl output. */
#include "ctl_print.h"
#include "hms_time.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CTL_MAX_COLS 8

/* Prints rows (array of objects) under the given column keys and headers. */
static void s_table (const json_t *rows, const char *const *keys, const char *const *heads,
                     int ncols)
{
    size_t width[CTL_MAX_COLS];
    size_t nrows = json_array_size (rows);
    char ***cells = calloc (nrows + 1, sizeof (char **));
    for (int c = 0; c < ncols; c++)
        width[c] = strlen (heads[c]);
    for (size_t r = 0; r < nrows; r++) {
        cells[r] = calloc (ncols, sizeof (char *));
        json_t *row = json_array_get (rows, r);
        for (int c = 0; c < ncols; c++) {
            json_t *v = json_object_get (row, keys[c]);
            if (json_is_string (v))
                cells[r][c] = strdup (json_string_value (v));
            else if (!v || json_is_null (v))
                cells[r][c] = strdup ("-");
            else
                cells[r][c] = json_dumps (v, JSON_COMPACT | JSON_ENCODE_ANY);
            size_t n = strlen (cells[r][c]);
            if (n > width[c])
                width[c] = n;
        }
    }
    for (int c = 0; c < ncols; c++)
        printf ("%-*s%s", (int) width[c], heads[c], c + 1 < ncols ? "  " : "\n");
    for (size_t r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            printf ("%-*s%s", (int) width[c], cells[r][c], c + 1 < ncols ? "  " : "\n");
            free (cells[r][c]);
        }
        free (cells[r]);
    }
    free (cells);
}

static void s_age (char *out, size_t len, json_int_t then_ms)
{
    json_int_t age = hms_wall_ms () - then_ms;
    if (then_ms <= 0)
        snprintf (out, len, "never");
    else if (age < 10000)
        snprintf (out, len, "%lldms ago", (long long) age);
    else
        snprintf (out, len, "%llds ago", (long long) (age / 1000));
}

static void s_when (char *out, size_t len, json_int_t ms)
{
    time_t t = (time_t) (ms / 1000);
    struct tm tm;
    gmtime_r (&t, &tm);
    strftime (out, len, "%Y-%m-%d %H:%M:%SZ", &tm);
}

void ctl_print_json (const json_t *result)
{
    char *text = json_dumps (result, JSON_INDENT (2) | JSON_ENCODE_ANY);
    printf ("%s\n", text ? text : "null");
    free (text);
}

void ctl_print_status (const json_t *result)
{
    json_int_t version = json_integer_value (json_object_get (result, "config_version"));
    json_t *rows = json_deep_copy (json_object_get (result, "services"));
    size_t i, up = 0, converged = 0;
    json_t *row;
    json_array_foreach (rows, i, row)
    {
        char age[64];
        s_age (age, sizeof age, json_integer_value (json_object_get (row, "last_seen_ms")));
        json_object_set_new (row, "seen", json_string (age));
        bool is_up = strcmp (json_string_value (json_object_get (row, "state")), "up") == 0;
        up += is_up;
        converged +=
            is_up && json_integer_value (json_object_get (row, "applied_version")) == version;
        json_t *rejected = json_object_get (row, "rejected_version");
        if (rejected)
            json_object_set_new (
                row, "note",
                json_sprintf ("rejected v%lld: %s", (long long) json_integer_value (rejected),
                              json_string_value (json_object_get (row, "reject_reason"))));
    }
    printf ("config version %lld: %zu of %zu services up, %zu running it\n\n", (long long) version,
            up, json_array_size (rows), converged);
    static const char *keys[] = {"kind", "instance", "state", "applied_version", "seen", "note"};
    static const char *heads[] = {"KIND", "INSTANCE", "STATE", "VERSION", "LAST SEEN", "NOTE"};
    s_table (rows, keys, heads, 6);
    json_decref (rows);
}

void ctl_print_stats (const json_t *result)
{
    json_t *rows = json_array ();
    size_t i;
    json_t *inst;
    json_array_foreach (result, i, inst)
    {
        const char *name;
        json_t *value;
        json_object_foreach (json_object_get (inst, "stats"), name, value) json_array_append_new (
            rows,
            json_pack ("{s:O, s:O, s:s, s:O}", "kind", json_object_get (inst, "kind"), "instance",
                       json_object_get (inst, "instance"), "counter", name, "value", value));
    }
    static const char *keys[] = {"kind", "instance", "counter", "value"};
    static const char *heads[] = {"KIND", "INSTANCE", "COUNTER", "VALUE"};
    s_table (rows, keys, heads, 4);
    json_decref (rows);
}

/* {"answers": [{"instance", "result": {"flows": [...]}} | {"instance", "error"}]} */
void ctl_print_bypass_flows (const json_t *result)
{
    json_t *rows = json_array ();
    size_t i, j;
    json_t *a, *flow;
    json_array_foreach (json_object_get (result, "answers"), i, a)
    {
        const char *instance = json_string_value (json_object_get (a, "instance"));
        json_t *err = json_object_get (a, "error");
        if (err) {
            fprintf (stderr, "hermesctl: bypass agent %s: %s\n", instance, json_string_value (err));
            continue;
        }
        json_array_foreach (json_object_get (json_object_get (a, "result"), "flows"), j, flow)
        {
            json_t *sp = json_object_get (flow, "spliced");
            json_int_t bytes =
                json_integer_value (json_object_get (json_object_get (sp, "up"), "bytes")) +
                json_integer_value (json_object_get (json_object_get (sp, "down"), "bytes"));
            json_array_append_new (
                rows,
                json_pack ("{s:s, s:O, s:O, s:O, s:O, s:I, s:I}", "instance", instance, "id",
                           json_object_get (flow, "id"), "client", json_object_get (flow, "client"),
                           "server", json_object_get (flow, "server"), "state",
                           json_object_get (flow, "state"), "age_s",
                           json_integer_value (json_object_get (flow, "age_ms")) / 1000, "bytes",
                           bytes));
        }
    }
    static const char *keys[] = {"instance", "id", "client", "server", "state", "age_s", "bytes"};
    static const char *heads[] = {"AGENT", "ID",    "CLIENT",       "SERVER",
                                  "STATE", "AGE S", "SPLICED BYTES"};
    s_table (rows, keys, heads, 7);
    json_decref (rows);
}

void ctl_print_p4 (const json_t *result)
{
    size_t i;
    json_t *a;
    json_array_foreach (json_object_get (result, "answers"), i, a)
    {
        json_t *err = json_object_get (a, "error");
        if (err)
            fprintf (stderr, "hermesctl: bypass agent %s: %s\n",
                     json_string_value (json_object_get (a, "instance")), json_string_value (err));
        else
            fputs (json_string_value (json_object_get (json_object_get (a, "result"), "p4")) ?: "",
                   stdout);
    }
}

void ctl_print_nodes (const json_t *result)
{
    json_t *rows = json_deep_copy (result);
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row)
    {
        json_int_t relays = json_integer_value (json_object_get (row, "relays"));
        json_t *avoided = json_object_get (row, "avoided");
        json_object_set_new (row, "relays_text",
                             relays ? json_sprintf ("%lld of %lld up",
                                                    (long long) json_integer_value (
                                                        json_object_get (row, "relays_up")),
                                                    (long long) relays)
                                    : json_string ("-"));
        json_object_set_new (row, "routes_text",
                             avoided ? json_sprintf ("avoided: %s", json_string_value (avoided))
                                     : json_string ("used"));
    }
    static const char *keys[] = {"name", "address", "site", "relays_text", "routes_text"};
    static const char *heads[] = {"NAME", "ADDRESS", "SITE", "RELAYS", "ROUTES"};
    s_table (rows, keys, heads, 5);
    json_decref (rows);
}

void ctl_print_links (const json_t *result)
{
    static const char *keys[] = {"from", "to", "cost", "transport"};
    static const char *heads[] = {"FROM", "TO", "COST", "TRANSPORT"};
    s_table (result, keys, heads, 4);
}

void ctl_print_policies (const json_t *result)
{
    json_t *rows = json_deep_copy (result);
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row)
    {
        json_t *match = json_object_get (row, "match");
        char *text = match ? json_dumps (match, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_object_set_new (row, "match_text", json_string (text ? text : "(any)"));
        free (text);
    }
    static const char *keys[] = {"id", "priority", "action", "route", "match_text"};
    static const char *heads[] = {"ID", "PRIORITY", "ACTION", "ROUTE", "MATCH"};
    s_table (rows, keys, heads, 5);
    json_decref (rows);
}

void ctl_print_routes (const json_t *result)
{
    json_t *rows = json_deep_copy (result);
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row)
    {
        char path[1024] = "";
        size_t j;
        json_t *hop;
        json_array_foreach (json_object_get (row, "path"), j, hop)
        {
            size_t n = strlen (path);
            snprintf (path + n, sizeof path - n, "%s%s", j ? " -> " : "", json_string_value (hop));
        }
        json_object_set_new (row, "path_text", json_string (path));
    }
    static const char *keys[] = {"from", "to", "cost", "path_text"};
    static const char *heads[] = {"FROM", "TO", "COST", "PATH"};
    s_table (rows, keys, heads, 4);
    json_decref (rows);
}

static void s_add_when (json_t *rows, const char *key)
{
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row)
    {
        char when[64];
        s_when (when, sizeof when, json_integer_value (json_object_get (row, key)));
        json_object_set_new (row, "when", json_string (when));
    }
}

void ctl_print_history (const json_t *result)
{
    json_t *rows = json_deep_copy (result);
    s_add_when (rows, "created_ms");
    static const char *keys[] = {"version", "when", "author", "reason"};
    static const char *heads[] = {"VERSION", "WHEN", "BY", "REASON"};
    s_table (rows, keys, heads, 4);
    json_decref (rows);
}

void ctl_print_audit (const json_t *result)
{
    json_t *rows = json_deep_copy (result);
    s_add_when (rows, "ts_ms");
    static const char *keys[] = {"id", "when", "who", "command", "result", "detail"};
    static const char *heads[] = {"ID", "WHEN", "WHO", "COMMAND", "RESULT", "DETAIL"};
    s_table (rows, keys, heads, 6);
    json_decref (rows);
}

void ctl_print_write (const json_t *result)
{
    json_t *version = json_object_get (result, "version");
    printf ("ok: config version %lld\n", (long long) json_integer_value (version));
}

static const char *s_get (const json_t *obj, const char *key)
{
    return json_string_value (json_object_get (obj, key));
}

void ctl_print_decision (const json_t *result)
{
    const char *action = s_get (result, "action");
    const char *rule = s_get (result, "rule");
    const char *route = s_get (result, "route");
    const char *target = s_get (result, "target");
    const char *reason = s_get (result, "reason");
    const char *retry = s_get (result, "retry_profile");
    if (!action)
        action = "?";
    if (strcmp (action, "deny") == 0) {
        if (rule)
            printf ("deny (rule %s: %s)\n", rule, reason ? reason : "");
        else
            printf ("deny (%s)\n", reason ? reason : "no rule matched");
    } else {
        printf ("%s via rule %s", action, rule ? rule : "-");
        if (route)
            printf (" to %s", route);
        if (target)
            printf (", target %s", target);
        printf ("\n");
        if (reason)
            printf ("  reason: %s\n", reason);
    }
    if (retry)
        printf ("  retry profile: %s\n", retry);
    if (json_is_true (json_object_get (result, "bypass")))
        printf ("  bypass: eligible\n");
    json_int_t ttl = json_integer_value (json_object_get (result, "ttl_ms"));
    if (ttl > 0)
        printf ("  cacheable for %lld ms", (long long) ttl);
    else
        printf ("  not cacheable");
    printf (" (config version %lld)\n",
            (long long) json_integer_value (json_object_get (result, "version")));
}
