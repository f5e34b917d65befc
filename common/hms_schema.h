/* JSON Schema validation (a checked subset of draft 2020-12 / draft-07) and the registry of
 * the schemas under schemas/ that the build embeds in hermes_common.
 *
 * Supported keywords: type, properties, required, additionalProperties, items (one schema),
 * enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength
 * (code points), minItems, maxItems, uniqueItems, pattern (POSIX extended regex, unanchored
 * search), minProperties, maxProperties, allOf, anyOf, oneOf, and $ref to "#",
 * "#/definitions/NAME" or "#/$defs/NAME" (recursion allowed; keywords beside $ref apply too).
 * Ignored annotations: $schema, $id, $comment, title, description, default, examples, format,
 * and definitions / $defs as containers. Any other keyword makes hms_schema_new fail, so a
 * schema never relies on a check that is silently skipped.
 *
 * Error paths name the offending value from the document root: "config.nodes[2].name",
 * "[0]", or "(root)" for the document itself. */

#ifndef HMS_SCHEMA_H_INCLUDED
#define HMS_SCHEMA_H_INCLUDED

#include <stddef.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hms_schema hms_schema_t;

/* Compiles the schema document doc. Does not take ownership of doc: the schema keeps its own
 * copy, so the caller may change or release doc afterwards. Returns NULL and writes
 * "schema <pointer>: <what is wrong>" to err (when err is not NULL) on a malformed schema, a
 * keyword outside the subset, an unresolvable $ref or a $ref cycle that never descends into
 * the document. Caller owns return value (hms_schema_destroy). */
hms_schema_t *hms_schema_new (json_t *doc, char *err, size_t errlen);

/* Destroys *self_p and nulls it; safe to call with *self_p already NULL. */
void hms_schema_destroy (hms_schema_t **self_p);

/* Returns 0 if doc is valid (err is then set to ""), or -1 and writes the first problem
 * found to err as "<path>: <what is wrong>", e.g. "config.nodes[2].name: expected string,
 * got integer", "(root): missing required property 'kind'", "(root): unknown property 'foo'".
 * err may be NULL. Thread-safe: a compiled schema is never modified. */
int hms_schema_validate (const hms_schema_t *self, const json_t *doc, char *err, size_t errlen);

/* Returns the embedded schema named name (its path under schemas/ without ".schema.json",
 * e.g. "msg/register.v1"), compiled on first use; NULL if there is none or if it does not
 * compile. The registry owns the schema and keeps it until exit. Thread-safe. */
const hms_schema_t *hms_schemas_get (const char *name);

/* Validates doc against the embedded schema name, as hms_schema_validate. Returns -1 with
 * err "no schema named NAME" if there is none. */
int hms_schemas_validate (const char *name, const json_t *doc, char *err, size_t errlen);

/* Returns the names of all embedded schemas, sorted by file path, as a static
 * NULL-terminated array. */
const char *const *hms_schemas_names (void);

#ifdef __cplusplus
}
#endif

#endif
