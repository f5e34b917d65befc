/* JSON Schema validation for a checked subset of draft 2020-12 / draft-07 (see hms_schema.h),
 * and the registry of the schemas that embed_schemas.cmake compiles into hms_schemas_data.c.
 *
 * A schema document is compiled once into a graph of nodes, one per (sub)schema; $ref edges
 * are linked after the whole document is compiled, so references may be recursive. */

#include "hms_schema.h"

#include <assert.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Defined in the generated hms_schemas_data.c: parallel arrays, names NULL-terminated; each
 * text is followed by a NUL byte that sizes[] does not count. */
extern const char *const hms_schemas_embedded_names[];
extern const unsigned char *const hms_schemas_embedded_texts[];
extern const size_t hms_schemas_embedded_sizes[];

/* Nested schema applications allowed while validating one document. */
#define HMS_SCHEMA_MAX_DEPTH 1000

enum {
    HMS_SCHEMA_T_OBJECT = 1u << 0,
    HMS_SCHEMA_T_ARRAY = 1u << 1,
    HMS_SCHEMA_T_STRING = 1u << 2,
    HMS_SCHEMA_T_INTEGER = 1u << 3,
    HMS_SCHEMA_T_NUMBER = 1u << 4,
    HMS_SCHEMA_T_BOOLEAN = 1u << 5,
    HMS_SCHEMA_T_NULL = 1u << 6,
};

static const struct {
    const char *name;
    unsigned bit;
} s_types[] = {
    {"object", HMS_SCHEMA_T_OBJECT}, {"array", HMS_SCHEMA_T_ARRAY},
    {"string", HMS_SCHEMA_T_STRING}, {"integer", HMS_SCHEMA_T_INTEGER},
    {"number", HMS_SCHEMA_T_NUMBER}, {"boolean", HMS_SCHEMA_T_BOOLEAN},
    {"null", HMS_SCHEMA_T_NULL},
};

typedef struct s_node s_node_t;

typedef struct {
    const char *name; /* borrowed from the schema's copy of the document */
    s_node_t *schema;
} s_prop_t;

typedef struct {
    s_node_t **items;
    size_t size;
} s_list_t;

struct s_node {
    s_node_t *next;    /* every node of a schema, for linking and destroy */
    const json_t *src; /* the JSON this node was compiled from */
    char *spath;       /* JSON pointer in the schema, for compile errors */
    int boolean;       /* 1 true schema, 0 false schema, -1 object schema */
    unsigned types;    /* 0: any type */
    s_prop_t *props;   /* sorted by name */
    size_t nprops;
    const char **required;
    size_t nrequired;
    s_node_t *additional; /* NULL: any */
    s_node_t *items;      /* NULL: any */
    const json_t *enum_values;
    const json_t *const_value;
    const json_t *minimum;
    const json_t *maximum;
    const json_t *exclusive_minimum;
    const json_t *exclusive_maximum;
    json_int_t min_length; /* -1: absent, likewise below */
    json_int_t max_length;
    json_int_t min_items;
    json_int_t max_items;
    json_int_t min_props;
    json_int_t max_props;
    bool unique_items;
    bool has_pattern;
    regex_t pattern;
    const char *pattern_text;
    s_list_t all_of;
    s_list_t any_of;
    s_list_t one_of;
    const char *ref;
    s_node_t *ref_target;
    int mark; /* cycle check: 0 unseen, 1 on the stack, 2 done */
};

struct hms_schema {
    json_t *doc; /* our own deep copy; nodes borrow strings and values from it */
    s_node_t *root;
    s_node_t *nodes;
};

typedef struct {
    hms_schema_t *schema;
    char *err;
    size_t errlen;
} s_compile_t;

typedef int (s_keyword_fn) (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                            size_t offset);

typedef struct {
    const char *name;
    s_keyword_fn *fn; /* NULL: annotation, ignored */
    size_t offset;    /* field of s_node_t the handler fills */
} s_keyword_t;

typedef struct {
    char *buf; /* path of the current value, "" at the root */
    size_t len;
    size_t cap;
    char *err; /* NULL: the caller wants no message */
    size_t errlen;
    int depth;
} s_run_t;

static s_node_t *s_compile (s_compile_t *c, json_t *js, const char *spath);
static int s_check (s_run_t *run, const s_node_t *node, const json_t *inst);

static void *s_alloc (size_t size)
{
    void *p = calloc (1, size ? size : 1);
    if (!p)
        abort ();
    return p;
}

static void *s_realloc (void *p, size_t size)
{
    p = realloc (p, size ? size : 1);
    if (!p)
        abort ();
    return p;
}

static char *s_strdup (const char *s)
{
    size_t n = strlen (s) + 1;
    char *copy = s_alloc (n);
    memcpy (copy, s, n);
    return copy;
}

static void s_vformat (char *buf, size_t buflen, const char *prefix, const char *fmt, va_list ap)
{
    if (!buf || buflen == 0)
        return;
    int n = snprintf (buf, buflen, "%s", prefix);
    if (n >= 0 && (size_t) n < buflen)
        vsnprintf (buf + n, buflen - (size_t) n, fmt, ap);
}

/* Writes "prefix fmt..." to buf, truncated to buflen; does nothing if buf is NULL. */
static void s_format (char *buf, size_t buflen, const char *prefix, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));
static void s_format (char *buf, size_t buflen, const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    s_vformat (buf, buflen, prefix, fmt, ap);
    va_end (ap);
}

static const char *s_type_name (const json_t *v)
{
    switch (json_typeof (v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
    default:
        return "null";
    }
}

/* Every double at or beyond 2^53 in magnitude is a whole number; jansson has no NaN or inf. */
static bool s_is_integral (double d)
{
    if (d >= 9007199254740992.0 || d <= -9007199254740992.0)
        return true;
    return d == (double) (long long) d;
}

static unsigned s_type_bits (const json_t *v)
{
    switch (json_typeof (v)) {
    case JSON_OBJECT:
        return HMS_SCHEMA_T_OBJECT;
    case JSON_ARRAY:
        return HMS_SCHEMA_T_ARRAY;
    case JSON_STRING:
        return HMS_SCHEMA_T_STRING;
    case JSON_INTEGER:
        return HMS_SCHEMA_T_INTEGER | HMS_SCHEMA_T_NUMBER;
    case JSON_REAL:
        return HMS_SCHEMA_T_NUMBER |
               (s_is_integral (json_real_value (v)) ? HMS_SCHEMA_T_INTEGER : 0);
    case JSON_TRUE:
    case JSON_FALSE:
        return HMS_SCHEMA_T_BOOLEAN;
    case JSON_NULL:
    default:
        return HMS_SCHEMA_T_NULL;
    }
}

static int s_num_cmp (const json_t *a, const json_t *b)
{
    if (json_is_integer (a) && json_is_integer (b)) {
        json_int_t x = json_integer_value (a), y = json_integer_value (b);
        return (x > y) - (x < y);
    }
    /* long double holds every int64 exactly on the platforms we build for */
    long double x = json_is_integer (a) ? (long double) json_integer_value (a)
                                        : (long double) json_real_value (a);
    long double y = json_is_integer (b) ? (long double) json_integer_value (b)
                                        : (long double) json_real_value (b);
    return (x > y) - (x < y);
}

/* JSON Schema equality: like json_equal, but 1 and 1.0 are the same number. */
static bool s_equal (const json_t *a, const json_t *b)
{
    if (json_is_number (a) && json_is_number (b))
        return s_num_cmp (a, b) == 0;
    if (json_typeof (a) != json_typeof (b))
        return false;
    if (json_is_array (a)) {
        size_t n = json_array_size (a);
        if (n != json_array_size (b))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!s_equal (json_array_get (a, i), json_array_get (b, i)))
                return false;
        return true;
    }
    if (json_is_object (a)) {
        if (json_object_size (a) != json_object_size (b))
            return false;
        const char *key;
        json_t *value;
        json_object_foreach ((json_t *) a, key, value)
        {
            const json_t *other = json_object_get (b, key);
            if (!other || !s_equal (value, other))
                return false;
        }
        return true;
    }
    return json_equal (a, b);
}

/* Compact JSON text of v for a message, shortened to fit in buf. */
static const char *s_dump (const json_t *v, char *buf, size_t buflen)
{
    char *text = json_dumps (v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION (15));
    if (!text)
        abort ();
    size_t n = strlen (text);
    if (n < buflen)
        memcpy (buf, text, n + 1);
    else
        snprintf (buf, buflen, "%.*s...", (int) (buflen - 4), text);
    free (text);
    return buf;
}

static size_t s_utf8_length (const char *s, size_t bytes)
{
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++)
        if (((unsigned char) s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* --- compiling ------------------------------------------------------------------------- */

static int s_compile_fail (s_compile_t *c, const char *spath, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
static int s_compile_fail (s_compile_t *c, const char *spath, const char *fmt, ...)
{
    char prefix[512];
    snprintf (prefix, sizeof prefix, "schema %s: ", spath);
    va_list ap;
    va_start (ap, fmt);
    s_vformat (c->err, c->errlen, prefix, fmt, ap);
    va_end (ap);
    return -1;
}

/* base + "/" + seg, with seg escaped as a JSON pointer token. Caller owns return value. */
static char *s_pointer_join (const char *base, const char *seg)
{
    size_t blen = strlen (base), n = blen + 2;
    for (const char *p = seg; *p; p++)
        n += (*p == '~' || *p == '/') ? 2 : 1;
    char *out = s_alloc (n), *o = out + blen;
    memcpy (out, base, blen);
    *o++ = '/';
    for (const char *p = seg; *p; p++) {
        if (*p == '~' || *p == '/') {
            *o++ = '~';
            *o++ = *p == '~' ? '0' : '1';
        } else
            *o++ = *p;
    }
    *o = '\0';
    return out;
}

static s_node_t *s_node_new (hms_schema_t *self, const json_t *src, const char *spath)
{
    s_node_t *node = s_alloc (sizeof *node);
    node->src = src;
    node->spath = s_strdup (spath);
    node->boolean = -1;
    node->min_length = node->max_length = -1;
    node->min_items = node->max_items = -1;
    node->min_props = node->max_props = -1;
    node->next = self->nodes;
    self->nodes = node;
    return node;
}

static void s_node_destroy (s_node_t *node)
{
    free (node->spath);
    free (node->props);
    free (node->required);
    free (node->all_of.items);
    free (node->any_of.items);
    free (node->one_of.items);
    if (node->has_pattern)
        regfree (&node->pattern);
    free (node);
}

static s_node_t *s_compile_child (s_compile_t *c, json_t *js, const char *base, const char *seg)
{
    char *spath = s_pointer_join (base, seg);
    s_node_t *node = s_compile (c, js, spath);
    free (spath);
    return node;
}

static int s_kw_defs (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                      size_t offset)
{
    (void) node;
    (void) offset;
    if (!json_is_object (value))
        return s_compile_fail (c, kpath, "must be an object of schemas, got %s",
                               s_type_name (value));
    const char *name;
    json_t *sub;
    json_object_foreach (value, name, sub)
    {
        if (!s_compile_child (c, sub, kpath, name))
            return -1;
    }
    return 0;
}

static int s_kw_type (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                      size_t offset)
{
    (void) offset;
    if (!json_is_string (value) && !(json_is_array (value) && json_array_size (value) > 0))
        return s_compile_fail (c, kpath, "must be a type name or a non-empty array of them");
    size_t n = json_is_array (value) ? json_array_size (value) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *name = json_is_array (value) ? json_array_get (value, i) : value;
        size_t t = 0;
        while (t < sizeof s_types / sizeof s_types[0] &&
               !(json_is_string (name) && strcmp (json_string_value (name), s_types[t].name) == 0))
            t++;
        if (t == sizeof s_types / sizeof s_types[0])
            return s_compile_fail (c, kpath,
                                   "unknown type %s (use object, array, string, integer, number, "
                                   "boolean or null)",
                                   json_is_string (name) ? json_string_value (name)
                                                         : "(not a string)");
        node->types |= s_types[t].bit;
    }
    return 0;
}

static int s_prop_cmp (const void *a, const void *b)
{
    return strcmp (((const s_prop_t *) a)->name, ((const s_prop_t *) b)->name);
}

static int s_kw_properties (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                            size_t offset)
{
    (void) offset;
    if (!json_is_object (value))
        return s_compile_fail (c, kpath, "must be an object of schemas, got %s",
                               s_type_name (value));
    node->props = s_alloc (json_object_size (value) * sizeof *node->props);
    const char *name;
    json_t *sub;
    json_object_foreach (value, name, sub)
    {
        s_node_t *schema = s_compile_child (c, sub, kpath, name);
        if (!schema)
            return -1;
        node->props[node->nprops].name = name;
        node->props[node->nprops].schema = schema;
        node->nprops++;
    }
    qsort (node->props, node->nprops, sizeof *node->props, s_prop_cmp);
    return 0;
}

static int s_kw_required (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                          size_t offset)
{
    (void) offset;
    if (!json_is_array (value))
        return s_compile_fail (c, kpath, "must be an array of property names, got %s",
                               s_type_name (value));
    node->required = s_alloc (json_array_size (value) * sizeof *node->required);
    size_t i;
    json_t *name;
    json_array_foreach (value, i, name)
    {
        if (!json_is_string (name))
            return s_compile_fail (c, kpath, "item %zu must be a string, got %s", i,
                                   s_type_name (name));
        node->required[node->nrequired++] = json_string_value (name);
    }
    return 0;
}

static int s_kw_schema (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                        size_t offset)
{
    s_node_t *sub = s_compile (c, value, kpath);
    if (!sub)
        return -1;
    *(s_node_t **) ((char *) node + offset) = sub;
    return 0;
}

static int s_kw_items (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                       size_t offset)
{
    if (json_is_array (value))
        return s_compile_fail (c, kpath,
                               "the array (tuple) form of items is not supported; use one schema");
    return s_kw_schema (c, node, value, kpath, offset);
}

static int s_kw_schema_list (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                             size_t offset)
{
    if (!json_is_array (value) || json_array_size (value) == 0)
        return s_compile_fail (c, kpath, "must be a non-empty array of schemas");
    s_list_t *list = (s_list_t *) ((char *) node + offset);
    list->items = s_alloc (json_array_size (value) * sizeof *list->items);
    size_t i;
    json_t *sub;
    json_array_foreach (value, i, sub)
    {
        char seg[32];
        snprintf (seg, sizeof seg, "%zu", i);
        if (!(list->items[list->size] = s_compile_child (c, sub, kpath, seg)))
            return -1;
        list->size++;
    }
    return 0;
}

static int s_kw_enum (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                      size_t offset)
{
    (void) offset;
    if (!json_is_array (value) || json_array_size (value) == 0)
        return s_compile_fail (c, kpath, "must be a non-empty array");
    node->enum_values = value;
    return 0;
}

static int s_kw_const (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                       size_t offset)
{
    (void) c;
    (void) kpath;
    (void) offset;
    node->const_value = value;
    return 0;
}

static int s_kw_number (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                        size_t offset)
{
    if (!json_is_number (value))
        return s_compile_fail (c, kpath, "must be a number, got %s", s_type_name (value));
    *(const json_t **) ((char *) node + offset) = value;
    return 0;
}

static int s_kw_count (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                       size_t offset)
{
    json_int_t n;
    if (json_is_integer (value))
        n = json_integer_value (value);
    else if (json_is_real (value) && s_is_integral (json_real_value (value)) &&
             json_real_value (value) < 9e18)
        n = (json_int_t) json_real_value (value);
    else
        return s_compile_fail (c, kpath, "must be a non-negative integer, got %s",
                               s_type_name (value));
    if (n < 0)
        return s_compile_fail (c, kpath,
                               "must be a non-negative integer, got %" JSON_INTEGER_FORMAT, n);
    *(json_int_t *) ((char *) node + offset) = n;
    return 0;
}

static int s_kw_unique_items (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                              size_t offset)
{
    (void) offset;
    if (!json_is_boolean (value))
        return s_compile_fail (c, kpath, "must be a boolean, got %s", s_type_name (value));
    node->unique_items = json_is_true (value);
    return 0;
}

/* Refuses ECMA-262 habits that POSIX ERE would silently read differently: \d and \D, and
 * backslashes inside a bracket expression (where they stand for themselves). */
static const char *s_pattern_lint (const char *p)
{
    for (size_t i = 0; p[i];) {
        if (p[i] == '\\') {
            if (p[i + 1] == 'd' || p[i + 1] == 'D')
                return "\\d and \\D are not POSIX ERE; use [0-9] or [^0-9]";
            i += p[i + 1] ? 2 : 1;
        } else if (p[i] == '[') {
            size_t j = i + 1;
            if (p[j] == '^')
                j++;
            if (p[j] == ']')
                j++;
            while (p[j] && p[j] != ']') {
                if (p[j] == '[' && (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
                    char close = p[j + 1];
                    j += 2;
                    while (p[j] && !(p[j] == close && p[j + 1] == ']'))
                        j++;
                    j += p[j] ? 2 : 0;
                } else if (p[j] == '\\')
                    return "a backslash inside [...] matches itself in POSIX ERE; write the "
                           "character plainly (put ] first and - last)";
                else
                    j++;
            }
            i = p[j] ? j + 1 : j;
        } else
            i++;
    }
    return NULL;
}

static int s_kw_pattern (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                         size_t offset)
{
    (void) offset;
    if (!json_is_string (value))
        return s_compile_fail (c, kpath, "must be a string, got %s", s_type_name (value));
    const char *text = json_string_value (value);
    const char *why = s_pattern_lint (text);
    if (why)
        return s_compile_fail (c, kpath, "unsupported regular expression '%s': %s", text, why);
    int rc = regcomp (&node->pattern, text, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[128];
        regerror (rc, &node->pattern, msg, sizeof msg);
        return s_compile_fail (c, kpath, "invalid POSIX extended regular expression '%s': %s", text,
                               msg);
    }
    node->has_pattern = true;
    node->pattern_text = text;
    return 0;
}

static int s_kw_ref (s_compile_t *c, s_node_t *node, json_t *value, const char *kpath,
                     size_t offset)
{
    (void) offset;
    if (!json_is_string (value))
        return s_compile_fail (c, kpath, "must be a string, got %s", s_type_name (value));
    node->ref = json_string_value (value);
    return 0;
}

/* Looked up by name once per keyword at compile time; fn NULL marks an ignored annotation. */
static const s_keyword_t s_keywords[] = {
    {"type", s_kw_type, 0},
    {"properties", s_kw_properties, 0},
    {"required", s_kw_required, 0},
    {"additionalProperties", s_kw_schema, offsetof (s_node_t, additional)},
    {"items", s_kw_items, offsetof (s_node_t, items)},
    {"enum", s_kw_enum, 0},
    {"const", s_kw_const, 0},
    {"minimum", s_kw_number, offsetof (s_node_t, minimum)},
    {"maximum", s_kw_number, offsetof (s_node_t, maximum)},
    {"exclusiveMinimum", s_kw_number, offsetof (s_node_t, exclusive_minimum)},
    {"exclusiveMaximum", s_kw_number, offsetof (s_node_t, exclusive_maximum)},
    {"minLength", s_kw_count, offsetof (s_node_t, min_length)},
    {"maxLength", s_kw_count, offsetof (s_node_t, max_length)},
    {"minItems", s_kw_count, offsetof (s_node_t, min_items)},
    {"maxItems", s_kw_count, offsetof (s_node_t, max_items)},
    {"uniqueItems", s_kw_unique_items, 0},
    {"pattern", s_kw_pattern, 0},
    {"minProperties", s_kw_count, offsetof (s_node_t, min_props)},
    {"maxProperties", s_kw_count, offsetof (s_node_t, max_props)},
    {"allOf", s_kw_schema_list, offsetof (s_node_t, all_of)},
    {"anyOf", s_kw_schema_list, offsetof (s_node_t, any_of)},
    {"oneOf", s_kw_schema_list, offsetof (s_node_t, one_of)},
    {"$ref", s_kw_ref, 0},
    {"definitions", s_kw_defs, 0},
    {"$defs", s_kw_defs, 0},
    {"$schema", NULL, 0},
    {"$id", NULL, 0},
    {"$comment", NULL, 0},
    {"title", NULL, 0},
    {"description", NULL, 0},
    {"default", NULL, 0},
    {"examples", NULL, 0},
    {"format", NULL, 0},
};

static s_node_t *s_compile (s_compile_t *c, json_t *js, const char *spath)
{
    if (!json_is_object (js) && !json_is_boolean (js)) {
        s_compile_fail (c, spath, "a schema must be an object or a boolean, got %s",
                        s_type_name (js));
        return NULL;
    }
    s_node_t *node = s_node_new (c->schema, js, spath);
    if (json_is_boolean (js)) {
        node->boolean = json_is_true (js);
        return node;
    }
    const char *key;
    json_t *value;
    json_object_foreach (js, key, value)
    {
        const s_keyword_t *kw = NULL;
        for (size_t i = 0; i < sizeof s_keywords / sizeof s_keywords[0] && !kw; i++)
            if (strcmp (s_keywords[i].name, key) == 0)
                kw = &s_keywords[i];
        if (!kw) {
            s_compile_fail (c, spath,
                            "unsupported keyword '%s' (hms_schema implements a subset of JSON "
                            "Schema, listed in common/hms_schema.h)",
                            key);
            return NULL;
        }
        if (!kw->fn)
            continue;
        char *kpath = s_pointer_join (spath, key);
        int rc = kw->fn (c, node, value, kpath, kw->offset);
        free (kpath);
        if (rc)
            return NULL;
    }
    return node;
}

/* The JSON a local $ref points to: "#", "#/definitions/NAME" or "#/$defs/NAME". */
static const json_t *s_ref_target (const hms_schema_t *self, const char *ref)
{
    if (strcmp (ref, "#") == 0)
        return self->doc;
    static const char *const containers[] = {"definitions", "$defs"};
    for (size_t i = 0; i < sizeof containers / sizeof containers[0]; i++) {
        size_t n = strlen (containers[i]);
        if (strncmp (ref, "#/", 2) != 0 || strncmp (ref + 2, containers[i], n) != 0 ||
            ref[2 + n] != '/')
            continue;
        const char *token = ref + 3 + n;
        char *name = s_alloc (strlen (token) + 1), *o = name;
        bool ok = *token != '\0';
        for (const char *p = token; *p && ok; p++) {
            if (*p == '/')
                ok = false;
            else if (*p == '~' && (p[1] == '0' || p[1] == '1'))
                *o++ = *++p == '0' ? '~' : '/';
            else if (*p == '~')
                ok = false;
            else
                *o++ = *p;
        }
        *o = '\0';
        const json_t *target =
            ok ? json_object_get (json_object_get (self->doc, containers[i]), name) : NULL;
        free (name);
        return target;
    }
    return NULL;
}

static int s_link (s_compile_t *c)
{
    for (s_node_t *node = c->schema->nodes; node; node = node->next) {
        if (!node->ref)
            continue;
        const json_t *target = s_ref_target (c->schema, node->ref);
        for (s_node_t *n = c->schema->nodes; n && target && !node->ref_target; n = n->next)
            if (n->src == target)
                node->ref_target = n;
        if (!node->ref_target)
            return s_compile_fail (c, node->spath,
                                   "cannot resolve $ref '%s' (only '#', '#/definitions/NAME' "
                                   "and '#/$defs/NAME' of this document are supported)",
                                   node->ref);
    }
    return 0;
}

/* Fails on a cycle of $ref / allOf / anyOf / oneOf edges: those apply to the same value, so
 * such a cycle would recurse for ever. */
static int s_check_cycles (s_compile_t *c, s_node_t *node)
{
    if (node->mark == 2)
        return 0;
    if (node->mark == 1)
        return s_compile_fail (c, node->spath, "$ref cycle that never descends into the document");
    node->mark = 1;
    if (node->ref_target && s_check_cycles (c, node->ref_target))
        return -1;
    const s_list_t *lists[] = {&node->all_of, &node->any_of, &node->one_of};
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++)
        for (size_t i = 0; i < lists[l]->size; i++)
            if (s_check_cycles (c, lists[l]->items[i]))
                return -1;
    node->mark = 2;
    return 0;
}

hms_schema_t *hms_schema_new (json_t *doc, char *err, size_t errlen)
{
    s_compile_t c = {NULL, err, errlen};
    if (!doc) {
        s_format (err, errlen, "", "schema: no schema document");
        return NULL;
    }
    hms_schema_t *self = s_alloc (sizeof *self);
    self->doc = json_deep_copy (doc);
    if (!self->doc)
        abort ();
    c.schema = self;
    self->root = s_compile (&c, self->doc, "#");
    int rc = self->root ? s_link (&c) : -1;
    for (s_node_t *node = self->nodes; node && rc == 0; node = node->next)
        rc = s_check_cycles (&c, node);
    if (rc) {
        hms_schema_destroy (&self);
        return NULL;
    }
    if (err && errlen)
        err[0] = '\0';
    return self;
}

void hms_schema_destroy (hms_schema_t **self_p)
{
    assert (self_p);
    hms_schema_t *self = *self_p;
    if (!self)
        return;
    while (self->nodes) {
        s_node_t *next = self->nodes->next;
        s_node_destroy (self->nodes);
        self->nodes = next;
    }
    json_decref (self->doc);
    free (self);
    *self_p = NULL;
}

/* --- validating ------------------------------------------------------------------------ */

static int s_fail (s_run_t *run, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
static int s_fail (s_run_t *run, const char *fmt, ...)
{
    if (!run->err)
        return -1;
    /* a very long path keeps its start and its end, so the message still fits */
    char prefix[256];
    if (run->len == 0)
        snprintf (prefix, sizeof prefix, "(root): ");
    else if (run->len <= 160)
        snprintf (prefix, sizeof prefix, "%s: ", run->buf);
    else {
        size_t head = 60, tail = run->len - 80;
        while (head > 0 && !strchr (".[", run->buf[head]))
            head--;
        while (tail < run->len && !strchr (".[", run->buf[tail]))
            tail++;
        tail += run->buf[tail] == '.';
        snprintf (prefix, sizeof prefix, "%.*s...%s: ", (int) (head ? head : 60), run->buf,
                  run->buf + (tail < run->len ? tail : run->len - 80));
    }
    va_list ap;
    va_start (ap, fmt);
    s_vformat (run->err, run->errlen, prefix, fmt, ap);
    va_end (ap);
    return -1;
}

static void s_path_append (s_run_t *run, const char *text, size_t n)
{
    if (run->len + n + 1 > run->cap) {
        run->cap = (run->len + n + 1) * 2;
        run->buf = s_realloc (run->buf, run->cap);
    }
    memcpy (run->buf + run->len, text, n);
    run->len += n;
    run->buf[run->len] = '\0';
}

/* Appends ".key", or ["key"] for a key that would not read back unambiguously. */
static void s_path_push_key (s_run_t *run, const char *key)
{
    bool plain = *key != '\0';
    for (const unsigned char *p = (const unsigned char *) key; *p && plain; p++)
        plain = *p > ' ' && !strchr (".[]\"\\", *p);
    if (plain) {
        if (run->len)
            s_path_append (run, ".", 1);
        s_path_append (run, key, strlen (key));
        return;
    }
    s_path_append (run, "[\"", 2);
    for (const char *p = key; *p; p++) {
        if (*p == '"' || *p == '\\')
            s_path_append (run, "\\", 1);
        s_path_append (run, p, 1);
    }
    s_path_append (run, "\"]", 2);
}

static void s_path_push_index (s_run_t *run, size_t index)
{
    char seg[32];
    int n = snprintf (seg, sizeof seg, "[%zu]", index);
    s_path_append (run, seg, (size_t) n);
}

static void s_path_pop (s_run_t *run, size_t len)
{
    run->len = len;
    if (run->buf)
        run->buf[len] = '\0';
}

static int s_check_key (s_run_t *run, const s_node_t *node, const char *key, const json_t *inst)
{
    size_t len = run->len;
    s_path_push_key (run, key);
    int rc = s_check (run, node, inst);
    s_path_pop (run, len);
    return rc;
}

static int s_check_index (s_run_t *run, const s_node_t *node, size_t index, const json_t *inst)
{
    size_t len = run->len;
    s_path_push_index (run, index);
    int rc = s_check (run, node, inst);
    s_path_pop (run, len);
    return rc;
}

/* Runs node on inst with its message, if any, going to buf instead of the caller's err. */
static int s_try (s_run_t *run, const s_node_t *node, const json_t *inst, char *buf, size_t buflen)
{
    char *err = run->err;
    size_t errlen = run->errlen;
    run->err = buf;
    run->errlen = buflen;
    int rc = s_check (run, node, inst);
    run->err = err;
    run->errlen = errlen;
    return rc;
}

static int s_check_type (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (!node->types || (node->types & s_type_bits (inst)))
        return 0;
    char expected[128] = "";
    size_t count = 0, total = 0;
    for (size_t t = 0; t < sizeof s_types / sizeof s_types[0]; t++)
        total += (node->types & s_types[t].bit) != 0;
    for (size_t t = 0; t < sizeof s_types / sizeof s_types[0]; t++) {
        if (!(node->types & s_types[t].bit))
            continue;
        const char *sep = count == 0 ? "" : count + 1 == total ? " or " : ", ";
        size_t used = strlen (expected);
        snprintf (expected + used, sizeof expected - used, "%s%s", sep, s_types[t].name);
        count++;
    }
    return s_fail (run, "expected %s, got %s", expected, s_type_name (inst));
}

static int s_check_ref (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    return node->ref_target ? s_check (run, node->ref_target, inst) : 0;
}

static int s_check_const (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (!node->const_value || s_equal (inst, node->const_value))
        return 0;
    char want[96], got[96];
    return s_fail (run, "expected %s, got %s", s_dump (node->const_value, want, sizeof want),
                   s_dump (inst, got, sizeof got));
}

static int s_check_enum (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (!node->enum_values)
        return 0;
    for (size_t i = 0; i < json_array_size (node->enum_values); i++)
        if (s_equal (inst, json_array_get (node->enum_values, i)))
            return 0;
    char want[256], got[96];
    return s_fail (run, "expected one of %s, got %s", s_dump (node->enum_values, want, sizeof want),
                   s_dump (inst, got, sizeof got));
}

static int s_check_number (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (!json_is_number (inst))
        return 0;
    char got[64], limit[64];
    if (node->minimum && s_num_cmp (inst, node->minimum) < 0)
        return s_fail (run, "%s is less than the minimum %s", s_dump (inst, got, sizeof got),
                       s_dump (node->minimum, limit, sizeof limit));
    if (node->maximum && s_num_cmp (inst, node->maximum) > 0)
        return s_fail (run, "%s is greater than the maximum %s", s_dump (inst, got, sizeof got),
                       s_dump (node->maximum, limit, sizeof limit));
    if (node->exclusive_minimum && s_num_cmp (inst, node->exclusive_minimum) <= 0)
        return s_fail (run, "%s is not greater than the exclusive minimum %s",
                       s_dump (inst, got, sizeof got),
                       s_dump (node->exclusive_minimum, limit, sizeof limit));
    if (node->exclusive_maximum && s_num_cmp (inst, node->exclusive_maximum) >= 0)
        return s_fail (run, "%s is not less than the exclusive maximum %s",
                       s_dump (inst, got, sizeof got),
                       s_dump (node->exclusive_maximum, limit, sizeof limit));
    return 0;
}

static int s_check_string (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (!json_is_string (inst))
        return 0;
    if (node->min_length >= 0 || node->max_length >= 0) {
        size_t n = s_utf8_length (json_string_value (inst), json_string_length (inst));
        if (node->min_length >= 0 && n < (size_t) node->min_length)
            return s_fail (run, "string is %zu characters long, minimum is %" JSON_INTEGER_FORMAT,
                           n, node->min_length);
        if (node->max_length >= 0 && n > (size_t) node->max_length)
            return s_fail (run, "string is %zu characters long, maximum is %" JSON_INTEGER_FORMAT,
                           n, node->max_length);
    }
    if (node->has_pattern && regexec (&node->pattern, json_string_value (inst), 0, NULL, 0) != 0) {
        char got[96];
        return s_fail (run, "%s does not match the pattern '%s'", s_dump (inst, got, sizeof got),
                       node->pattern_text);
    }
    return 0;
}

static const s_prop_t *s_find_prop (const s_node_t *node, const char *key)
{
    s_prop_t probe = {key, NULL};
    return node->nprops
               ? bsearch (&probe, node->props, node->nprops, sizeof *node->props, s_prop_cmp)
               : NULL;
}

static int s_check_object (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (!json_is_object (inst))
        return 0;
    for (size_t i = 0; i < node->nrequired; i++)
        if (!json_object_get (inst, node->required[i]))
            return s_fail (run, "missing required property '%s'", node->required[i]);
    size_t n = json_object_size (inst);
    if (node->min_props >= 0 && n < (size_t) node->min_props)
        return s_fail (run, "object has %zu properties, minimum is %" JSON_INTEGER_FORMAT, n,
                       node->min_props);
    if (node->max_props >= 0 && n > (size_t) node->max_props)
        return s_fail (run, "object has %zu properties, maximum is %" JSON_INTEGER_FORMAT, n,
                       node->max_props);
    const char *key;
    json_t *value;
    json_object_foreach ((json_t *) inst, key, value)
    {
        const s_prop_t *prop = s_find_prop (node, key);
        const s_node_t *schema = prop ? prop->schema : node->additional;
        if (!schema)
            continue;
        if (!prop && schema->boolean == 0)
            return s_fail (run, "unknown property '%s'", key);
        if (s_check_key (run, schema, key, value))
            return -1;
    }
    return 0;
}

static int s_check_array (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (!json_is_array (inst))
        return 0;
    size_t n = json_array_size (inst);
    if (node->min_items >= 0 && n < (size_t) node->min_items)
        return s_fail (run, "array has %zu items, minimum is %" JSON_INTEGER_FORMAT, n,
                       node->min_items);
    if (node->max_items >= 0 && n > (size_t) node->max_items)
        return s_fail (run, "array has %zu items, maximum is %" JSON_INTEGER_FORMAT, n,
                       node->max_items);
    for (size_t i = 0; node->items && i < n; i++)
        if (s_check_index (run, node->items, i, json_array_get (inst, i)))
            return -1;
    for (size_t i = 0; node->unique_items && i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (s_equal (json_array_get (inst, i), json_array_get (inst, j)))
                return s_fail (run, "items [%zu] and [%zu] are equal, items must be unique", i, j);
    return 0;
}

static int s_check_all_of (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    for (size_t i = 0; i < node->all_of.size; i++)
        if (s_check (run, node->all_of.items[i], inst))
            return -1;
    return 0;
}

/* anyOf and oneOf: counts the alternatives that match, up to two, and gathers the messages of
 * those that do not into "[0] why; [1] why". */
static int s_check_alternatives (s_run_t *run, const s_list_t *list, const json_t *inst, bool one,
                                 const char *keyword)
{
    if (list->size == 0)
        return 0;
    size_t buflen = run->err ? run->errlen : 0;
    char *why = buflen ? s_alloc (buflen) : NULL;
    char *all = buflen ? s_alloc (buflen) : NULL;
    size_t matches = 0, first = 0, second = 0;
    for (size_t i = 0; i < list->size && matches < 2; i++) {
        if (s_try (run, list->items[i], inst, why, buflen) == 0) {
            if (matches++ == 0)
                first = i;
            else
                second = i;
            if (!one)
                break;
        } else if (all) {
            size_t used = strlen (all);
            snprintf (all + used, buflen - used, "%s[%zu] %s", used ? "; " : "", i, why);
        }
    }
    int rc = 0;
    if (matches == 0)
        rc = s_fail (run, "matches none of the %s alternatives (%s)", keyword, all ? all : "");
    else if (one && matches > 1)
        rc = s_fail (run, "matches %s alternatives [%zu] and [%zu], expected exactly one", keyword,
                     first, second);
    free (why);
    free (all);
    return rc;
}

static int s_check_any_of (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    return s_check_alternatives (run, &node->any_of, inst, false, "anyOf");
}

static int s_check_one_of (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    return s_check_alternatives (run, &node->one_of, inst, true, "oneOf");
}

/* In the order their messages are most useful: a wrong type first. */
static int (*const s_checks[]) (s_run_t *run, const s_node_t *node, const json_t *inst) = {
    s_check_type,   s_check_ref,   s_check_const,  s_check_enum,   s_check_number, s_check_string,
    s_check_object, s_check_array, s_check_all_of, s_check_any_of, s_check_one_of,
};

static int s_check (s_run_t *run, const s_node_t *node, const json_t *inst)
{
    if (node->boolean == 1)
        return 0;
    if (node->boolean == 0)
        return s_fail (run, "no value is allowed here (the schema is false)");
    if (run->depth >= HMS_SCHEMA_MAX_DEPTH)
        return s_fail (run, "value nested too deeply to validate (more than %d nested schemas)",
                       HMS_SCHEMA_MAX_DEPTH);
    run->depth++;
    int rc = 0;
    for (size_t i = 0; i < sizeof s_checks / sizeof s_checks[0] && rc == 0; i++)
        rc = s_checks[i](run, node, inst);
    run->depth--;
    return rc;
}

int hms_schema_validate (const hms_schema_t *self, const json_t *doc, char *err, size_t errlen)
{
    assert (self);
    s_run_t run = {NULL, 0, 0, err && errlen ? err : NULL, errlen, 0};
    if (!doc)
        return s_fail (&run, "no document to validate");
    int rc = s_check (&run, self->root, doc);
    free (run.buf);
    if (rc == 0 && run.err)
        err[0] = '\0';
    return rc;
}

/* --- registry of embedded schemas ------------------------------------------------------ */

typedef struct {
    hms_schema_t *schema;
    int state; /* 0 not compiled yet, 1 compiled, -1 does not compile */
    char err[256];
} s_entry_t;

static pthread_mutex_t s_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static s_entry_t *s_registry; /* one per embedded name, allocated on first use */

/* The compiled entry for name, or NULL if there is no such schema. Call with the lock held. */
static s_entry_t *s_registry_entry (const char *name)
{
    size_t count = 0, index = SIZE_MAX;
    for (; hms_schemas_embedded_names[count]; count++)
        if (index == SIZE_MAX && strcmp (hms_schemas_embedded_names[count], name) == 0)
            index = count;
    if (index == SIZE_MAX)
        return NULL;
    if (!s_registry)
        s_registry = s_alloc (count * sizeof *s_registry);
    s_entry_t *entry = &s_registry[index];
    if (entry->state != 0)
        return entry;
    json_error_t jerr;
    json_t *doc = json_loadb ((const char *) hms_schemas_embedded_texts[index],
                              hms_schemas_embedded_sizes[index], JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf (entry->err, sizeof entry->err, "line %d: %s", jerr.line, jerr.text);
        entry->state = -1;
        return entry;
    }
    entry->schema = hms_schema_new (doc, entry->err, sizeof entry->err);
    entry->state = entry->schema ? 1 : -1;
    json_decref (doc);
    return entry;
}

const hms_schema_t *hms_schemas_get (const char *name)
{
    if (!name)
        return NULL;
    pthread_mutex_lock (&s_registry_lock);
    s_entry_t *entry = s_registry_entry (name);
    const hms_schema_t *schema = entry ? entry->schema : NULL;
    pthread_mutex_unlock (&s_registry_lock);
    return schema;
}

int hms_schemas_validate (const char *name, const json_t *doc, char *err, size_t errlen)
{
    if (!name) {
        s_format (err, errlen, "", "no schema named (null)");
        return -1;
    }
    pthread_mutex_lock (&s_registry_lock);
    s_entry_t *entry = s_registry_entry (name);
    const hms_schema_t *schema = entry ? entry->schema : NULL;
    if (!entry)
        s_format (err, errlen, "", "no schema named %s", name);
    else if (!schema)
        s_format (err, errlen, "",
                  "embedded schema %s does not compile: %s (fix schemas/%s.schema.json)", name,
                  entry->err, name);
    pthread_mutex_unlock (&s_registry_lock);
    return schema ? hms_schema_validate (schema, doc, err, errlen) : -1;
}

const char *const *hms_schemas_names (void)
{
    return hms_schemas_embedded_names;
}
