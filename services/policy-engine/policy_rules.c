/* policy_rules: semantic checks of policy documents. */
#include "policy_rules.h"
#include "hms_schema.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int policy_prefix_parse (const char *text, int *family, unsigned char addr[16], int *len, char *err,
                         size_t errlen)
{
    char buf[64];
    snprintf (buf, sizeof buf, "%s", text);
    char *slash = strchr (buf, '/');
    if (slash)
        *slash = 0;
    *family = strchr (buf, ':') ? AF_INET6 : AF_INET;
    int max = *family == AF_INET6 ? 128 : 32;
    if (inet_pton (*family, buf, addr) != 1) {
        snprintf (err, errlen, "'%s' is not an IPv%d address", text, max == 32 ? 4 : 6);
        return -1;
    }
    *len = max;
    if (slash) {
        char *end;
        long v = strtol (slash + 1, &end, 10);
        if (end == slash + 1 || *end || v < 0 || v > max) {
            snprintf (err, errlen, "prefix length in '%s' must be 0 to %d", text, max);
            return -1;
        }
        *len = (int)v;
    }
    return 0;
}

int policy_ports_parse (const char *text, int *lo, int *hi, char *err, size_t errlen)
{
    char *end;
    long a = strtol (text, &end, 10), b = a;
    if (*end == '-')
        b = strtol (end + 1, &end, 10);
    if (*end || a < 1 || b > 65535 || a > b) {
        snprintf (err, errlen, "port range '%s' must be N or N-M with 1 <= N <= M <= 65535", text);
        return -1;
    }
    *lo = (int)a;
    *hi = (int)b;
    return 0;
}

static int s_check_one (const json_t *doc, char *err, size_t errlen)
{
    char why[512];
    if (hms_schemas_validate ("config/policy.v1", doc, why, sizeof why)) {
        snprintf (err, errlen, "%s", why);
        return -1;
    }
    json_t *match = json_object_get (doc, "match");
    const char *fields[] = {"src", "dst"};
    for (int f = 0; f < 2; f++) {
        size_t i;
        json_t *v;
        json_array_foreach (json_object_get (match, fields[f]), i, v)
        {
            int family, len;
            unsigned char addr[16];
            if (policy_prefix_parse (json_string_value (v), &family, addr, &len, why, sizeof why)) {
                snprintf (err, errlen, "match.%s[%zu]: %s", fields[f], i, why);
                return -1;
            }
        }
    }
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get (match, "ports"), i, v)
    {
        int lo, hi;
        if (policy_ports_parse (json_string_value (v), &lo, &hi, why, sizeof why)) {
            snprintf (err, errlen, "match.ports[%zu]: %s", i, why);
            return -1;
        }
    }
    const char *action = json_string_value (json_object_get (doc, "action"));
    if (strcmp (action, "route") == 0 && !json_object_get (doc, "route")) {
        snprintf (err, errlen, "action route needs \"route\" (a route or node name)");
        return -1;
    }
    if (strcmp (action, "rate_limit") == 0 && !json_object_get (doc, "rate")) {
        snprintf (err, errlen, "action rate_limit needs \"rate\" {per_second, burst}");
        return -1;
    }
    return 0;
}

int policy_rules_check (void *arg, const json_t *config, char *err, size_t errlen)
{
    json_t *policies = json_object_get (config, "policies");
    size_t i;
    json_t *doc;
    json_array_foreach (policies, i, doc)
    {
        const char *id = json_string_value (json_object_get (doc, "id"));
        char why[768];
        if (s_check_one (doc, why, sizeof why)) {
            snprintf (err, errlen, "policy %s (policies[%zu]): %s", id ? id : "?", i, why);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (json_equal (json_object_get (json_array_get (policies, j), "id"),
                            json_object_get (doc, "id"))) {
                snprintf (err, errlen, "policy %s appears twice (policies[%zu] and [%zu])", id, j,
                          i);
                return -1;
            }
    }
    return 0;
}
