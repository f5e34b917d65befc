/* ctl_print: hermesctl's human-readable tables of controller results. */
#ifndef CTL_PRINT_H_INCLUDED
#define CTL_PRINT_H_INCLUDED

#include <jansson.h>

void ctl_print_json (const json_t *result);
void ctl_print_status (const json_t *result);
void ctl_print_stats (const json_t *result);
void ctl_print_bypass_flows (const json_t *result);
void ctl_print_p4 (const json_t *result);
void ctl_print_nodes (const json_t *result);
void ctl_print_links (const json_t *result);
void ctl_print_policies (const json_t *result);
void ctl_print_routes (const json_t *result);
void ctl_print_history (const json_t *result);
void ctl_print_audit (const json_t *result);
/* Result of a write: the new config version. */
void ctl_print_write (const json_t *result);
/* A policy decision (policy test): "allow via rule X, target Y", "deny (rule X: why)". */
void ctl_print_decision (const json_t *result);

#endif
