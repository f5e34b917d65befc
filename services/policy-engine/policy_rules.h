/* policy_rules: checks a policy set completely before the engine takes it, by compiling it
 * with hms_policy (every document against schemas/config/policy.v1, then what a schema
 * cannot say: prefix numbers, port ranges, actions that need parameters, empty lists,
 * targets, unique ids). */
#ifndef POLICY_RULES_H_INCLUDED
#define POLICY_RULES_H_INCLUDED

#include <jansson.h>
#include <stddef.h>

/* hms_validate_fn for the policy engine's snapshot: 0, or -1 with err naming the policy
 * and the field. */
int policy_rules_check (void *arg, const json_t *config, char *err, size_t errlen);

/* Parses "10.0.0.0/8", "2001:db8::/32" or a bare address. 0 or -1 with err. */
int policy_prefix_parse (const char *text, int *family, unsigned char addr[16], int *len, char *err,
                         size_t errlen);
/* Parses "443" or "8000-8100". 0 or -1 with err. */
int policy_ports_parse (const char *text, int *lo, int *hi, char *err, size_t errlen);

#endif
