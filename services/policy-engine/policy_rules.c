/* policy_rules: the policy engine's snapshot check, done by compiling the policy set. */
#include "policy_rules.h"
#include "hms_policy.h"

#include <string.h>

int policy_prefix_parse (const char *text, int *family, unsigned char addr[16], int *len, char *err,
                         size_t errlen)
{
    return hms_policy_prefix_parse (text, family, addr, len, err, errlen);
}

int policy_ports_parse (const char *text, int *lo, int *hi, char *err, size_t errlen)
{
    return hms_policy_ports_parse (text, lo, hi, err, errlen);
}

int policy_rules_check (void *arg, const json_t *config, char *err, size_t errlen)
{
    hms_policy_set_t *set = hms_policy_compile (json_object_get (config, "policies"), err, errlen);
    if (!set)
        return -1;
    hms_policy_destroy (&set);
    return 0;
}
