/* Unit test for hms_schema: every supported keyword with valid and invalid documents, error
 * messages, $ref recursion, rejected schemas, and the embedded registry against the files
 * under $HERMES_SOURCE_DIR/schemas. Test schemas and documents are written with ' for " . */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strndup, nftw */
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hms_schema.h"

#include <ftw.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From the generated hms_schemas_data.c, to check that the embedded bytes are the files'. */
extern const unsigned char *const hms_schemas_embedded_texts[];
extern const size_t hms_schemas_embedded_sizes[];

typedef struct {
    const char *schema;
    const char *doc;
    const char *error; /* NULL: doc is valid */
} s_case_t;

static const s_case_t s_cases[] = {
    /* type */
    {"{'type':'string'}", "'x'", NULL},
    {"{'type':'string'}", "1", "(root): expected string, got integer"},
    {"{'type':'integer'}", "3", NULL},
    {"{'type':'integer'}", "3.0", NULL},
    {"{'type':'integer'}", "-1e3", NULL},
    {"{'type':'integer'}", "3.5", "(root): expected integer, got number"},
    {"{'type':'integer'}", "'3'", "(root): expected integer, got string"},
    {"{'type':'number'}", "3", NULL},
    {"{'type':'number'}", "3.5", NULL},
    {"{'type':'number'}", "'3'", "(root): expected number, got string"},
    {"{'type':'object'}", "{}", NULL},
    {"{'type':'object'}", "[]", "(root): expected object, got array"},
    {"{'type':'array'}", "[]", NULL},
    {"{'type':'array'}", "{}", "(root): expected array, got object"},
    {"{'type':'boolean'}", "false", NULL},
    {"{'type':'boolean'}", "0", "(root): expected boolean, got integer"},
    {"{'type':'null'}", "null", NULL},
    {"{'type':'null'}", "false", "(root): expected null, got boolean"},
    {"{'type':['string','null']}", "null", NULL},
    {"{'type':['string','null']}", "'a'", NULL},
    {"{'type':['string','null']}", "true", "(root): expected string or null, got boolean"},
    {"{'type':['null','array','object']}", "1",
     "(root): expected object, array or null, got integer"},
    /* properties */
    {"{'properties':{'a':{'type':'string'}}}", "{'a':'x','b':1}", NULL},
    {"{'properties':{'a':{'type':'string'}}}", "5", NULL},
    {"{'properties':{'a':{'type':'string'}}}", "{'a':1}", "a: expected string, got integer"},
    {"{'properties':{'config':{'properties':{'nodes':{'items':{'properties':{'name':{'type':"
     "'string'}}}}}}}}",
     "{'config':{'nodes':[{'name':'a'},{'name':'b'},{'name':7}]}}",
     "config.nodes[2].name: expected string, got integer"},
    {"{'properties':{'a.b':{'type':'string'}}}", "{'a.b':1}",
     "[\"a.b\"]: expected string, got integer"},
    {"{'properties':{'x':{'properties':{'':{'type':'string'}}}}}", "{'x':{'':1}}",
     "x[\"\"]: expected string, got integer"},
    /* required */
    {"{'required':['kind']}", "{'kind':null}", NULL},
    {"{'required':['kind']}", "'kind'", NULL},
    {"{'required':['kind']}", "{}", "(root): missing required property 'kind'"},
    {"{'properties':{'body':{'required':['kind']}}}", "{'body':{'kin':1}}",
     "body: missing required property 'kind'"},
    /* additionalProperties */
    {"{'properties':{'a':{}},'additionalProperties':false}", "{'a':1}", NULL},
    {"{'properties':{'a':{}},'additionalProperties':false}", "{'a':1,'foo':2}",
     "(root): unknown property 'foo'"},
    {"{'properties':{'body':{'additionalProperties':false}}}", "{'body':{'foo':2}}",
     "body: unknown property 'foo'"},
    {"{'properties':{'a':{}},'additionalProperties':{'type':'integer'}}", "{'a':'x','b':2}", NULL},
    {"{'properties':{'a':{}},'additionalProperties':{'type':'integer'}}", "{'b':'x'}",
     "b: expected integer, got string"},
    {"{'additionalProperties':true}", "{'x':1}", NULL},
    /* items */
    {"{'items':{'type':'integer'}}", "[1,2]", NULL},
    {"{'items':{'type':'integer'}}", "[]", NULL},
    {"{'items':{'type':'integer'}}", "[1,'x']", "[1]: expected integer, got string"},
    {"{'items':false}", "[]", NULL},
    {"{'items':false}", "[1]", "[0]: no value is allowed here (the schema is false)"},
    /* enum */
    {"{'enum':['a','b',1]}", "'a'", NULL},
    {"{'enum':['a','b',1]}", "1.0", NULL},
    {"{'enum':['a','b',1]}", "'c'", "(root): expected one of [\"a\",\"b\",1], got \"c\""},
    {"{'enum':[{'x':[1,2]}]}", "{'x':[1,2]}", NULL},
    {"{'enum':[{'x':[1,2]}]}", "{'x':[2,1]}",
     "(root): expected one of [{\"x\":[1,2]}], got "
     "{\"x\":[2,1]}"},
    /* const */
    {"{'const':'x'}", "'x'", NULL},
    {"{'const':'x'}", "'y'", "(root): expected \"x\", got \"y\""},
    {"{'const':null}", "null", NULL},
    {"{'const':null}", "0", "(root): expected null, got 0"},
    {"{'const':1}", "1.0", NULL},
    {"{'const':{'a':[true]}}", "{'a':[true]}", NULL},
    {"{'const':{'a':[true]}}", "{'a':[false]}", ""},
    /* minimum, maximum, exclusiveMinimum, exclusiveMaximum */
    {"{'minimum':5}", "5", NULL},
    {"{'minimum':5}", "'x'", NULL},
    {"{'minimum':5}", "4", "(root): 4 is less than the minimum 5"},
    {"{'minimum':5}", "4.5", "(root): 4.5 is less than the minimum 5"},
    {"{'maximum':5.5}", "5.5", NULL},
    {"{'maximum':5.5}", "6", "(root): 6 is greater than the maximum 5.5"},
    {"{'maximum':9007199254740992}", "9007199254740993",
     "(root): 9007199254740993 is greater than the maximum 9007199254740992"},
    {"{'exclusiveMinimum':0}", "0.1", NULL},
    {"{'exclusiveMinimum':0}", "0", "(root): 0 is not greater than the exclusive minimum 0"},
    {"{'exclusiveMaximum':10}", "9", NULL},
    {"{'exclusiveMaximum':10}", "10.0", "(root): 10.0 is not less than the exclusive maximum 10"},
    /* minLength, maxLength: code points, not bytes */
    {"{'minLength':2}", "'ab'", NULL},
    {"{'minLength':2}", "2", NULL},
    {"{'minLength':2}", "'a'", "(root): string is 1 characters long, minimum is 2"},
    {"{'minLength':2}", "'\xc3\xa9'", "(root): string is 1 characters long, minimum is 2"},
    {"{'maxLength':2}", "'\xc3\xa9\xe2\x82\xac'", NULL},
    {"{'maxLength':2}", "'abc'", "(root): string is 3 characters long, maximum is 2"},
    {"{'minLength':2.0}", "'ab'", NULL},
    /* minItems, maxItems */
    {"{'minItems':1}", "[1]", NULL},
    {"{'minItems':1}", "[]", "(root): array has 0 items, minimum is 1"},
    {"{'maxItems':1}", "[1]", NULL},
    {"{'maxItems':1}", "[1,2]", "(root): array has 2 items, maximum is 1"},
    /* uniqueItems */
    {"{'uniqueItems':true}", "[1,2,'1',[1],{'a':1}]", NULL},
    {"{'uniqueItems':true}", "[1,2,1.0]",
     "(root): items [0] and [2] are equal, items must be unique"},
    {"{'uniqueItems':true}", "[{'a':[1]},{'a':[1.0]}]",
     "(root): items [0] and [1] are equal, items must be unique"},
    {"{'uniqueItems':false}", "[1,1]", NULL},
    /* pattern: POSIX ERE, unanchored */
    {"{'pattern':'^[a-z]+$'}", "'abc'", NULL},
    {"{'pattern':'^[a-z]+$'}", "5", NULL},
    {"{'pattern':'^[a-z]+$'}", "'abC'", "(root): \"abC\" does not match the pattern '^[a-z]+$'"},
    {"{'pattern':'b+'}", "'abbc'", NULL},
    {"{'pattern':'b+'}", "'ac'", ""},
    {"{'pattern':'^[0-9]{1,3}(\\\\.[0-9]{1,3}){3}$'}", "'10.0.0.1'", NULL},
    {"{'pattern':'^[0-9]{1,3}(\\\\.[0-9]{1,3}){3}$'}", "'10.0.0x1'", ""},
    {"{'pattern':'^[[:alpha:]_-]+$'}", "'a_b-c'", NULL},
    /* minProperties, maxProperties */
    {"{'minProperties':1}", "{'a':1}", NULL},
    {"{'minProperties':1}", "{}", "(root): object has 0 properties, minimum is 1"},
    {"{'maxProperties':1}", "{'a':1}", NULL},
    {"{'maxProperties':1}", "{'a':1,'b':2}", "(root): object has 2 properties, maximum is 1"},
    /* allOf, anyOf, oneOf */
    {"{'allOf':[{'type':'integer'},{'minimum':3}]}", "3", NULL},
    {"{'allOf':[{'type':'integer'},{'minimum':3}]}", "2", "(root): 2 is less than the minimum 3"},
    {"{'allOf':[{'type':'integer'},{'minimum':3}]}", "'x'", "(root): expected integer, got string"},
    {"{'anyOf':[{'type':'string'},{'type':'integer','minimum':0}]}", "'x'", NULL},
    {"{'anyOf':[{'type':'string'},{'type':'integer','minimum':0}]}", "5", NULL},
    {"{'anyOf':[{'type':'string'},{'type':'integer','minimum':0}]}", "-1",
     "(root): matches none of the anyOf alternatives ([0] (root): expected string, got integer; "
     "[1] (root): -1 is less than the minimum 0)"},
    {"{'oneOf':[{'type':'integer'},{'minimum':2}]}", "1", NULL},
    {"{'oneOf':[{'type':'integer'},{'minimum':2}]}", "2.5", NULL},
    {"{'oneOf':[{'type':'integer'},{'minimum':2}]}", "3",
     "(root): matches oneOf alternatives [0] and [1], expected exactly one"},
    {"{'oneOf':[{'type':'integer'},{'minimum':2}]}", "1.5",
     "(root): matches none of the oneOf alternatives ([0] (root): expected integer, got number; "
     "[1] (root): 1.5 is less than the minimum 2)"},
    {"{'properties':{'v':{'oneOf':[{'type':'string'},{'type':'null'}]}}}", "{'v':1}",
     "v: matches none of the oneOf alternatives ([0] v: expected string, got integer; [1] v: "
     "expected null, got integer)"},
    /* boolean schemas and annotations */
    {"true", "{'anything':[1]}", NULL},
    {"false", "null", "(root): no value is allowed here (the schema is false)"},
    {"{'$schema':'https://json-schema.org/draft/2020-12/schema','$id':'urn:x','$comment':'c',"
     "'title':'t','description':'d','default':1,'examples':[1],'format':'email','type':'string'}",
     "'not an e-mail address'", NULL},
    /* $ref: to $defs / definitions, with siblings, escaped names, recursion */
    {"{'$defs':{'s':{'type':'string'}},'$ref':'#/$defs/s','maxLength':2}", "'ab'", NULL},
    {"{'$defs':{'s':{'type':'string'}},'$ref':'#/$defs/s','maxLength':2}", "'abc'",
     "(root): string is 3 characters long, maximum is 2"},
    {"{'$defs':{'s':{'type':'string'}},'$ref':'#/$defs/s','maxLength':2}", "1",
     "(root): expected string, got integer"},
    {"{'definitions':{'a/b~':{'type':'string'}},'items':{'$ref':'#/definitions/a~1b~0'}}",
     "['x',2]", "[1]: expected string, got integer"},
    {"{'definitions':{'t':true,'f':false},'properties':{'a':{'$ref':'#/definitions/t'},'b':{'$ref':"
     "'#/definitions/f'}}}",
     "{'a':1}", NULL},
    {"{'definitions':{'t':true,'f':false},'properties':{'a':{'$ref':'#/definitions/t'},'b':{'$ref':"
     "'#/definitions/f'}}}",
     "{'b':1}", "b: no value is allowed here (the schema is false)"},
    {"{'type':['integer','array'],'items':{'$ref':'#'}}", "[1,[2,[3,[]]]]", NULL},
    {"{'type':['integer','array'],'items':{'$ref':'#'}}", "[1,[2,[3,'x']]]",
     "[1][1][1]: expected array or integer, got string"},
    {"{'definitions':{'a':{'type':'object','properties':{'b':{'$ref':'#/definitions/b'}}},"
     "'b':{'type':'object','properties':{'a':{'$ref':'#/definitions/a'}}}},"
     "'$ref':'#/definitions/a'}",
     "{'b':{'a':{'b':5}}}", "b.a.b: expected object, got integer"},
};

/* Test node tree: each node has a name and children of the same shape. */
static const char *s_tree_schema =
    "{'$defs':{'node':{'type':'object','required':['name'],'additionalProperties':false,"
    "'properties':{'name':{'type':'string','minLength':1},"
    "'children':{'type':'array','items':{'$ref':'#/$defs/node'}}}}},"
    "'$ref':'#/$defs/node'}";

/* Parses text with ' standing for " . Caller owns return value. */
static json_t *s_json (const char *text)
{
    char *copy = strdup (text);
    assert_non_null (copy);
    for (char *p = copy; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *json = json_loads (copy, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!json)
        fail_msg ("bad test JSON %s: %s", copy, jerr.text);
    free (copy);
    return json;
}

static hms_schema_t *s_schema (const char *text)
{
    json_t *doc = s_json (text);
    char err[512];
    hms_schema_t *schema = hms_schema_new (doc, err, sizeof err);
    if (!schema)
        fail_msg ("schema %s does not compile: %s", text, err);
    json_decref (doc);
    return schema;
}

/* 0 if the schema compiles, else -1 with its message in err. */
static int s_compile_error (const char *text, char *err, size_t errlen)
{
    json_t *doc = s_json (text);
    hms_schema_t *schema = hms_schema_new (doc, err, errlen);
    json_decref (doc);
    int rc = schema ? 0 : -1;
    hms_schema_destroy (&schema);
    return rc;
}

static void test_keywords (void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        const s_case_t *c = &s_cases[i];
        hms_schema_t *schema = s_schema (c->schema);
        json_t *doc = s_json (c->doc);
        char err[512] = "untouched";
        int rc = hms_schema_validate (schema, doc, err, sizeof err);
        if (!c->error && rc != 0)
            fail_msg ("case %zu: schema %s rejects %s: %s", i, c->schema, c->doc, err);
        if (c->error && rc == 0)
            fail_msg ("case %zu: schema %s accepts %s", i, c->schema, c->doc);
        if (!c->error)
            assert_string_equal (err, "");
        else if (*c->error && strcmp (err, c->error) != 0)
            fail_msg ("case %zu: schema %s on %s:\n  got      %s\n  expected %s", i, c->schema,
                      c->doc, err, c->error);
        else
            assert_true (strlen (err) > 0);
        json_decref (doc);
        hms_schema_destroy (&schema);
    }
}

static void test_ref_recursive_tree (void **state)
{
    (void) state;
    hms_schema_t *schema = s_schema (s_tree_schema);
    char err[256];
    json_t *doc = s_json ("{'name':'root','children':[{'name':'a','children':[{'name':'a1'},"
                          "{'name':'a2','children':[]}]},{'name':'b'}]}");
    assert_int_equal (hms_schema_validate (schema, doc, err, sizeof err), 0);
    json_decref (doc);

    doc =
        s_json ("{'name':'root','children':[{'name':'a','children':[{'name':'a1'},{'nam':'x'}]}]}");
    assert_int_equal (hms_schema_validate (schema, doc, err, sizeof err), -1);
    assert_string_equal (err, "children[0].children[1]: missing required property 'name'");
    json_decref (doc);

    doc = s_json ("{'name':'root','children':[{'name':'a','children':[{'name':''}]}]}");
    assert_int_equal (hms_schema_validate (schema, doc, err, sizeof err), -1);
    assert_string_equal (err,
                         "children[0].children[0].name: string is 0 characters long, minimum is 1");
    json_decref (doc);

    doc = s_json ("{'name':'root','children':[{'name':'a','colour':'red'}]}");
    assert_int_equal (hms_schema_validate (schema, doc, err, sizeof err), -1);
    assert_string_equal (err, "children[0]: unknown property 'colour'");
    json_decref (doc);
    hms_schema_destroy (&schema);
}

static void test_deep_document (void **state)
{
    (void) state;
    hms_schema_t *schema = s_schema ("{'type':'array','items':{'$ref':'#'}}");
    json_t *doc = json_array ();
    for (int i = 0; i < 100; i++) {
        json_t *outer = json_array ();
        json_array_append_new (outer, doc);
        doc = outer;
    }
    char err[256];
    assert_int_equal (hms_schema_validate (schema, doc, err, sizeof err), 0);
    for (int i = 0; i < 2000; i++) {
        json_t *outer = json_array ();
        json_array_append_new (outer, doc);
        doc = outer;
    }
    assert_int_equal (hms_schema_validate (schema, doc, err, sizeof err), -1);
    assert_non_null (strstr (err, "nested too deeply"));
    /* the long path keeps its start and its end */
    assert_int_equal (strncmp (err, "[0][0][0]", 9), 0);
    assert_non_null (strstr (err, "][0]...["));
    assert_true (strlen (err) < 250);
    json_decref (doc);
    hms_schema_destroy (&schema);
}

typedef struct {
    const char *schema;
    const char *error; /* exact message, or a prefix when it ends with '*' */
} s_bad_t;

static const s_bad_t s_bad_schemas[] = {
    {"{'type':'string','foo':1}", "schema #: unsupported keyword 'foo' (hms_schema implements a "
                                  "subset of JSON Schema, listed in common/hms_schema.h)"},
    {"{'properties':{'a':{'patternProperties':{}}}}",
     "schema #/properties/a: unsupported keyword 'patternProperties'*"},
    {"{'properties':{'a/b':{'items':{'if':{}}}}}",
     "schema #/properties/a~1b/items: unsupported keyword 'if'*"},
    {"{'$defs':{'x':{'not':{}}}}", "schema #/$defs/x: unsupported keyword 'not'*"},
    {"{'anyOf':[{},{'dependentRequired':{}}]}",
     "schema #/anyOf/1: unsupported keyword 'dependentRequired'*"},
    {"{'prefixItems':[{}]}", "schema #: unsupported keyword 'prefixItems'*"},
    {"'object'", "schema #: a schema must be an object or a boolean, got string"},
    {"{'properties':{'a':1}}",
     "schema #/properties/a: a schema must be an object or a boolean, got integer"},
    {"{'items':[{}]}",
     "schema #/items: the array (tuple) form of items is not supported; use one schema"},
    {"{'additionalProperties':'no'}",
     "schema #/additionalProperties: a schema must be an object or a boolean, got string"},
    {"{'type':'str'}", "schema #/type: unknown type str*"},
    {"{'type':[]}", "schema #/type: must be a type name or a non-empty array of them"},
    {"{'type':['string',1]}", "schema #/type: unknown type (not a string)*"},
    {"{'properties':[]}", "schema #/properties: must be an object of schemas, got array"},
    {"{'$defs':[]}", "schema #/$defs: must be an object of schemas, got array"},
    {"{'required':'a'}", "schema #/required: must be an array of property names, got string"},
    {"{'required':['a',1]}", "schema #/required: item 1 must be a string, got integer"},
    {"{'enum':[]}", "schema #/enum: must be a non-empty array"},
    {"{'enum':'a'}", "schema #/enum: must be a non-empty array"},
    {"{'minimum':'1'}", "schema #/minimum: must be a number, got string"},
    {"{'exclusiveMaximum':true}", "schema #/exclusiveMaximum: must be a number, got boolean"},
    {"{'minLength':-1}", "schema #/minLength: must be a non-negative integer, got -1"},
    {"{'maxItems':1.5}", "schema #/maxItems: must be a non-negative integer, got number"},
    {"{'minProperties':'1'}", "schema #/minProperties: must be a non-negative integer, got string"},
    {"{'uniqueItems':1}", "schema #/uniqueItems: must be a boolean, got integer"},
    {"{'pattern':1}", "schema #/pattern: must be a string, got integer"},
    {"{'pattern':'a('}", "schema #/pattern: invalid POSIX extended regular expression 'a(': *"},
    {"{'pattern':'^\\\\d+$'}", "schema #/pattern: unsupported regular expression '^\\d+$': \\d and "
                               "\\D are not POSIX ERE; use [0-9] or [^0-9]"},
    {"{'pattern':'^[\\\\w.]+$'}",
     "schema #/pattern: unsupported regular expression '^[\\w.]+$': a backslash inside [...]*"},
    {"{'allOf':[]}", "schema #/allOf: must be a non-empty array of schemas"},
    {"{'oneOf':{}}", "schema #/oneOf: must be a non-empty array of schemas"},
    {"{'$ref':1}", "schema #/$ref: must be a string, got integer"},
    {"{'$ref':'#/$defs/missing','$defs':{'there':{}}}",
     "schema #: cannot resolve $ref '#/$defs/missing' (only '#', '#/definitions/NAME' and "
     "'#/$defs/NAME' of this document are supported)"},
    {"{'properties':{'a':{'$ref':'other.schema.json#/$defs/x'}}}",
     "schema #/properties/a: cannot resolve $ref 'other.schema.json#/$defs/x'*"},
    {"{'properties':{'a':{}},'items':{'$ref':'#/properties/a'}}",
     "schema #/items: cannot resolve $ref '#/properties/a'*"},
    {"{'definitions':{'x':{}},'$ref':'#/$defs/x'}", "schema #: cannot resolve $ref '#/$defs/x'*"},
    {"{'$defs':{'a':{'x':{}}},'$ref':'#/$defs/a/x'}", "schema #/$defs/a: unsupported keyword 'x'*"},
    {"{'$defs':{'a':{}},'$ref':'#/$defs/a/b'}", "schema #: cannot resolve $ref '#/$defs/a/b'*"},
    {"{'$ref':'#'}", "schema #: $ref cycle that never descends into the document"},
    {"{'$defs':{'a':{'$ref':'#/$defs/b'},'b':{'allOf':[{'$ref':'#/$defs/a'}]}}}",
     "*$ref cycle that never descends into the document"},
    {"{'anyOf':[{'type':'string'},{'$ref':'#'}]}",
     "*$ref cycle that never descends into the document"},
};

static void test_rejected_schemas (void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_bad_schemas / sizeof s_bad_schemas[0]; i++) {
        const s_bad_t *b = &s_bad_schemas[i];
        char err[512] = "";
        if (s_compile_error (b->schema, err, sizeof err) == 0)
            fail_msg ("case %zu: schema %s compiles", i, b->schema);
        size_t n = strlen (b->error);
        bool ok;
        if (b->error[0] == '*')
            ok = strstr (err, b->error + 1) != NULL;
        else if (b->error[n - 1] == '*')
            ok = strncmp (err, b->error, n - 1) == 0;
        else
            ok = strcmp (err, b->error) == 0;
        if (!ok)
            fail_msg ("case %zu: schema %s:\n  got      %s\n  expected %s", i, b->schema, err,
                      b->error);
    }
}

static void test_accepted_patterns (void **state)
{
    (void) state;
    /* bracket expressions the pattern check must not mistake for backslashes inside [...] */
    const char *patterns[] = {
        "{'pattern':'^[]a]+$'}",          "{'pattern':'^[^]a]+$'}",
        "{'pattern':'[[:digit:]]\\\\.'}", "{'pattern':'^[a-z0-9_.-]*$'}",
        "{'pattern':'\\\\[x\\\\]'}",      "{'pattern':'^\\\\w+\\\\s'}",
    };
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        char err[256];
        if (s_compile_error (patterns[i], err, sizeof err))
            fail_msg ("%s: %s", patterns[i], err);
    }
    hms_schema_t *schema = s_schema ("{'pattern':'^[]a]+$'}");
    json_t *ok = s_json ("']a]'"), *bad = s_json ("'ab'");
    assert_int_equal (hms_schema_validate (schema, ok, NULL, 0), 0);
    assert_int_equal (hms_schema_validate (schema, bad, NULL, 0), -1);
    json_decref (ok);
    json_decref (bad);
    hms_schema_destroy (&schema);
}

static void test_ownership_and_buffers (void **state)
{
    (void) state;
    json_t *doc = s_json ("{'type':'object','required':['a'],'properties':{'a':{'enum':[1,2]}}}");
    char err[256];
    hms_schema_t *schema = hms_schema_new (doc, err, sizeof err);
    assert_non_null (schema);
    assert_int_equal (doc->refcount, 1);
    /* the schema has its own copy: changing or freeing doc does not change it */
    json_object_set_new (doc, "type", json_string ("string"));
    json_decref (doc);

    json_t *good = s_json ("{'a':2}"), *bad = s_json ("{'a':3}");
    assert_int_equal (hms_schema_validate (schema, good, NULL, 0), 0);
    assert_int_equal (hms_schema_validate (schema, bad, NULL, 0), -1);
    assert_int_equal (hms_schema_validate (schema, bad, err, 0), -1);

    char small[12];
    memset (small, 'x', sizeof small);
    assert_int_equal (hms_schema_validate (schema, bad, small, sizeof small), -1);
    assert_string_equal (small, "a: expected");
    assert_int_equal (hms_schema_validate (schema, NULL, err, sizeof err), -1);
    assert_string_equal (err, "(root): no document to validate");
    json_decref (good);
    json_decref (bad);

    hms_schema_destroy (&schema);
    assert_null (schema);
    hms_schema_destroy (&schema);

    assert_null (hms_schema_new (NULL, err, sizeof err));
    assert_string_equal (err, "schema: no schema document");
    json_t *unknown = s_json ("{'nope':1}");
    assert_null (hms_schema_new (unknown, NULL, 0));
    json_decref (unknown);
}

static void test_registry_unknown_name (void **state)
{
    (void) state;
    char err[256];
    json_t *doc = json_object ();
    assert_null (hms_schemas_get ("no/such.v1"));
    assert_null (hms_schemas_get (NULL));
    assert_int_equal (hms_schemas_validate ("no/such.v1", doc, err, sizeof err), -1);
    assert_string_equal (err, "no schema named no/such.v1");
    json_decref (doc);
    assert_non_null (hms_schemas_names ());
}

/* Files found under $HERMES_SOURCE_DIR/schemas by s_on_file. */
#define S_MAX_FILES 1024
static char *s_files[S_MAX_FILES];
static size_t s_nfiles;
static size_t s_root_len;

static int s_on_file (const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void) sb;
    (void) ftw;
    const char *suffix = ".schema.json";
    size_t n = strlen (path), sn = strlen (suffix);
    if (type == FTW_F && n > sn && strcmp (path + n - sn, suffix) == 0) {
        assert_true (s_nfiles < S_MAX_FILES);
        s_files[s_nfiles++] = strdup (path);
    }
    return 0;
}

static int s_strcmp (const void *a, const void *b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static char *s_read_file (const char *path, size_t *size)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        fail_msg ("cannot open %s", path);
    char *data = NULL;
    size_t cap = 0;
    *size = 0;
    for (;;) {
        if (*size == cap) {
            cap = cap ? cap * 2 : 4096;
            data = realloc (data, cap);
            assert_non_null (data);
        }
        size_t n = fread (data + *size, 1, cap - *size, f);
        if (n == 0)
            break;
        *size += n;
    }
    fclose (f);
    return data;
}

static void test_project_schemas (void **state)
{
    (void) state;
    const char *source = getenv ("HERMES_SOURCE_DIR");
    if (!source || !*source)
        skip ();
    char dir[4096];
    snprintf (dir, sizeof dir, "%s/schemas", source);
    s_root_len = strlen (dir) + 1;
    s_nfiles = 0;
    assert_int_equal (nftw (dir, s_on_file, 16, FTW_PHYS), 0);

    const char *const *names = hms_schemas_names ();
    size_t nnames = 0;
    while (names[nnames])
        nnames++;
    char **files_by_name = calloc (s_nfiles + 1, sizeof *files_by_name);
    for (size_t i = 0; i < s_nfiles; i++) {
        const char *path = s_files[i];
        /* every file compiles */
        json_error_t jerr;
        json_t *doc = json_load_file (path, JSON_REJECT_DUPLICATES, &jerr);
        if (!doc)
            fail_msg ("%s:%d: %s", path, jerr.line, jerr.text);
        char err[512];
        hms_schema_t *schema = hms_schema_new (doc, err, sizeof err);
        if (!schema)
            fail_msg ("%s: %s", path, err);
        hms_schema_destroy (&schema);
        json_decref (doc);

        /* its name is embedded, with the file's exact bytes */
        const char *rel = path + s_root_len;
        size_t len = strlen (rel) - strlen (".schema.json");
        size_t index = 0;
        while (index < nnames &&
               !(strlen (names[index]) == len && !strncmp (names[index], rel, len)))
            index++;
        if (index == nnames)
            fail_msg ("%s is not embedded (re-run cmake so the schema list is up to date)", path);
        size_t size;
        char *data = s_read_file (path, &size);
        assert_int_equal (hms_schemas_embedded_sizes[index], size);
        assert_memory_equal (hms_schemas_embedded_texts[index], data, size);
        assert_int_equal (hms_schemas_embedded_texts[index][size], '\0');
        free (data);
        files_by_name[i] = strndup (rel, len);
        assert_non_null (hms_schemas_get (names[index]));
    }
    /* and no name is embedded without its file */
    assert_int_equal (nnames, s_nfiles);
    const char **sorted = calloc (nnames + 1, sizeof *sorted);
    memcpy (sorted, names, nnames * sizeof *sorted);
    qsort (sorted, nnames, sizeof *sorted, s_strcmp);
    qsort (files_by_name, s_nfiles, sizeof *files_by_name, s_strcmp);
    for (size_t i = 0; i < nnames; i++)
        assert_string_equal (sorted[i], files_by_name[i]);
    for (size_t i = 0; i < s_nfiles; i++) {
        free (s_files[i]);
        free (files_by_name[i]);
    }
    free (files_by_name);
    free (sorted);
}

#define S_THREADS 8

static void *s_registry_worker (void *arg)
{
    const hms_schema_t **seen = arg;
    const char *const *names = hms_schemas_names ();
    json_t *empty = json_object ();
    for (size_t i = 0; names[i]; i++) {
        seen[i] = hms_schemas_get (names[i]);
        char err[256];
        hms_schemas_validate (names[i], empty, err, sizeof err); /* result depends on schema */
    }
    json_decref (empty);
    return NULL;
}

static void test_registry_threads (void **state)
{
    (void) state;
    const char *const *names = hms_schemas_names ();
    size_t n = 0;
    while (names[n])
        n++;
    const hms_schema_t **seen[S_THREADS];
    pthread_t threads[S_THREADS];
    for (int t = 0; t < S_THREADS; t++) {
        seen[t] = calloc (n + 1, sizeof *seen[t]);
        assert_int_equal (pthread_create (&threads[t], NULL, s_registry_worker, seen[t]), 0);
    }
    for (int t = 0; t < S_THREADS; t++)
        assert_int_equal (pthread_join (threads[t], NULL), 0);
    for (size_t i = 0; i < n; i++) {
        assert_non_null (seen[0][i]);
        assert_ptr_equal (seen[0][i], hms_schemas_get (names[i]));
        for (int t = 1; t < S_THREADS; t++)
            assert_ptr_equal (seen[t][i], seen[0][i]);
    }
    for (int t = 0; t < S_THREADS; t++)
        free (seen[t]);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_keywords),
        cmocka_unit_test (test_ref_recursive_tree),
        cmocka_unit_test (test_deep_document),
        cmocka_unit_test (test_rejected_schemas),
        cmocka_unit_test (test_accepted_patterns),
        cmocka_unit_test (test_ownership_and_buffers),
        cmocka_unit_test (test_registry_unknown_name),
        cmocka_unit_test (test_project_schemas),
        cmocka_unit_test (test_registry_threads),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
