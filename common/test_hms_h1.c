/* Unit test for hms_h1: request and response heads (every error status, limits exactly at and
 * over, pipelining, byte-by-byte feeding), smuggling patterns, CONNECT and absolute-form
 * targets, body framing and chunked decoding, Basic credentials and error responses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hms_h1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static hms_h1_head_t s_head;
static char s_err[256];

static void s_assert_contains (const char *text, const char *part)
{
    if (!strstr (text, part))
        fail_msg ("expected \"%s\" in \"%s\"", part, text);
}

static ssize_t s_parse (bool request, const char *buf, size_t len, hms_h1_head_t *head, int *status,
                        char *err, size_t errlen)
{
    return request ? hms_h1_parse_request (buf, len, head, status, err, errlen)
                   : hms_h1_parse_response (buf, len, head, status, err, errlen);
}

/* Offset of p in base, or -1 for a pointer outside it (static strings). */
static long s_off (const char *base, size_t len, const char *p)
{
    return p >= base && p <= base + len ? (long) (p - base) : -1;
}

/* Feeds every prefix of text (a sample of them for long texts, to keep the test fast) in a
 * buffer of exactly that size (so that ASan sees any read past the end): each must give 0, or
 * the one-shot error; the whole must give the one-shot head. */
static void s_check_prefixes (bool request, const char *text, size_t n)
{
    hms_h1_head_t *whole = malloc (sizeof *whole), *part = malloc (sizeof *part);
    char err[256], perr[256];
    int status, pstatus;
    ssize_t r = s_parse (request, text, n, whole, &status, err, sizeof err);
    for (size_t k = 1; k <= n; k++) {
        if (n > 1024 && k > 256 && n - k > 256 && k % (n / 64) != 0)
            continue;
        char *buf = malloc (k);
        memcpy (buf, text, k);
        ssize_t pr = s_parse (request, buf, k, part, &pstatus, perr, sizeof perr);
        if (k < n && pr == 0) {
            assert_int_equal (pstatus, 0);
        } else if (pr < 0 || r < 0) {
            if (pr != r || pstatus != status || strcmp (err, perr) != 0)
                fail_msg ("prefix %zu of %zu: %zd %d \"%s\", whole: %zd %d \"%s\"", k, n, pr,
                          pstatus, perr, r, status, err);
        } else {
            /* a complete head in a prefix: the same head as in the whole buffer */
            assert_int_equal (pr, r);
            assert_int_equal (s_off (buf, k, part->method), s_off (text, n, whole->method));
            assert_int_equal (part->method_len, whole->method_len);
            assert_int_equal (s_off (buf, k, part->target), s_off (text, n, whole->target));
            assert_int_equal (part->target_len, whole->target_len);
            assert_int_equal (part->form, whole->form);
            assert_int_equal (part->version_minor, whole->version_minor);
            assert_int_equal (part->status, whole->status);
            assert_int_equal (s_off (buf, k, part->reason), s_off (text, n, whole->reason));
            assert_int_equal (part->reason_len, whole->reason_len);
            assert_int_equal (part->nheaders, whole->nheaders);
            for (size_t i = 0; i < part->nheaders; i++) {
                assert_int_equal (s_off (buf, k, part->headers[i].name),
                                  s_off (text, n, whole->headers[i].name));
                assert_int_equal (part->headers[i].name_len, whole->headers[i].name_len);
                assert_int_equal (s_off (buf, k, part->headers[i].value),
                                  s_off (text, n, whole->headers[i].value));
                assert_int_equal (part->headers[i].value_len, whole->headers[i].value_len);
            }
            assert_int_equal (part->content_length, whole->content_length);
            assert_int_equal (part->chunked, whole->chunked);
            assert_int_equal (part->head_len, whole->head_len);
            free (buf);
            break;
        }
        free (buf);
    }
    free (whole);
    free (part);
}

/* Parses text, which must be one complete head; s_head holds it. */
static void s_ok_as (bool request, const char *text)
{
    int status = -1;
    ssize_t r = s_parse (request, text, strlen (text), &s_head, &status, s_err, sizeof s_err);
    if (r != (ssize_t) strlen (text))
        fail_msg ("refused (%zd, %d, \"%s\"): %s", r, status, s_err, text);
    assert_int_equal (status, 0);
    assert_int_equal (s_head.head_len, strlen (text));
    s_check_prefixes (request, text, strlen (text));
    s_parse (request, text, strlen (text), &s_head, &status, s_err, sizeof s_err);
}

static void s_ok (const char *text)
{
    s_ok_as (true, text);
}

/* Parses text, which must be refused with status and an error containing part. */
static void s_bad_as (bool request, const char *text, size_t len, int want, const char *part)
{
    int status = -1;
    s_err[0] = 0;
    ssize_t r = s_parse (request, text, len, &s_head, &status, s_err, sizeof s_err);
    if (r != -1 || status != want)
        fail_msg ("expected %d, got %zd / %d (\"%s\") for: %.*s", want, r, status, s_err,
                  (int) (len > 200 ? 200 : len), text);
    s_assert_contains (s_err, part);
    s_check_prefixes (request, text, len);
}

static void s_bad (const char *text, int status, const char *part)
{
    s_bad_as (true, text, strlen (text), status, part);
}

static void s_bad_response (const char *text, const char *part)
{
    s_bad_as (false, text, strlen (text), 502, part);
}

static bool s_header_is (size_t i, const char *name, const char *value)
{
    const hms_h1_header_t *h = &s_head.headers[i];
    return i < s_head.nheaders && h->name_len == strlen (name) &&
           memcmp (h->name, name, h->name_len) == 0 && h->value_len == strlen (value) &&
           memcmp (h->value, value, h->value_len) == 0;
}

static bool s_span_is (const char *p, size_t n, const char *want)
{
    return n == strlen (want) && memcmp (p, want, n) == 0;
}

static void test_request_basic (void **state)
{
    (void) state;
    const char *text = "GET http://example.com/a?b=c HTTP/1.1\r\n"
                       "Host: example.com\r\n"
                       "User-Agent:curl/8.0\r\n"
                       "X-Empty:\r\n"
                       "X-Spaces: \t  a b \t \r\n"
                       "X-High: caf\xc3\xa9\r\n"
                       "\r\n";
    s_ok (text);
    assert_true (s_span_is (s_head.method, s_head.method_len, "GET"));
    assert_true (s_span_is (s_head.target, s_head.target_len, "http://example.com/a?b=c"));
    assert_int_equal (s_head.form, HMS_H1_FORM_ABSOLUTE);
    assert_int_equal (s_head.version_minor, 1);
    assert_int_equal (s_head.nheaders, 5);
    assert_true (s_header_is (0, "Host", "example.com"));
    assert_true (s_header_is (1, "User-Agent", "curl/8.0"));
    assert_true (s_header_is (2, "X-Empty", ""));
    assert_true (s_header_is (3, "X-Spaces", "a b"));
    assert_true (s_header_is (4, "X-High", "caf\xc3\xa9"));
    assert_int_equal (s_head.content_length, -1);
    assert_false (s_head.chunked);
    assert_true (s_head.method >= text && s_head.method < text + strlen (text));

    /* a body after the head is not part of it */
    const char *post = "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    int status;
    assert_int_equal (
        hms_h1_parse_request (post, strlen (post), &s_head, &status, s_err, sizeof s_err),
        strlen (post) - 5);
    assert_int_equal (s_head.content_length, 5);

    /* HTTP/1.0, and empty lines before the request line (RFC 9112 §2.2) */
    s_ok ("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal (s_head.version_minor, 0);
    assert_int_equal (s_head.nheaders, 0);
    s_ok ("\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n");
    assert_true (s_span_is (s_head.method, s_head.method_len, "GET"));
    assert_int_equal (s_head.head_len, 4 + 24 + 2);
    /* unknown methods are tokens too (the proxy decides about them) */
    s_ok ("M-SEARCH http://a/ HTTP/1.1\r\n\r\n");
    assert_true (s_span_is (s_head.method, s_head.method_len, "M-SEARCH"));
    /* incomplete heads */
    int st = -1;
    assert_int_equal (hms_h1_parse_request ("", 0, &s_head, &st, s_err, sizeof s_err), 0);
    assert_int_equal (st, 0);
    assert_int_equal (
        hms_h1_parse_request ("GET / HTTP/1.1\r\nHost: a\r\n\r", 26, &s_head, &st, NULL, 0), 0);
}

static void test_request_forms (void **state)
{
    (void) state;
    s_ok ("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_int_equal (s_head.form, HMS_H1_FORM_ORIGIN);
    s_ok ("CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    assert_int_equal (s_head.form, HMS_H1_FORM_AUTHORITY);
    s_ok ("CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n");
    assert_int_equal (s_head.form, HMS_H1_FORM_AUTHORITY);
    s_ok ("CONNECT 127.0.0.1:8080 HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    s_ok ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal (s_head.form, HMS_H1_FORM_ASTERISK);
    s_ok ("GET HTTPS://Example.COM HTTP/1.1\r\n\r\n");
    assert_int_equal (s_head.form, HMS_H1_FORM_ABSOLUTE);

    s_bad ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "OPTIONS only");
    s_bad ("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target");
    s_bad ("CONNECT example.com HTTP/1.1\r\n\r\n", 400, "missing port");
    s_bad ("CONNECT example.com:0 HTTP/1.1\r\n\r\n", 400, "invalid port");
    s_bad ("CONNECT example.com:65536 HTTP/1.1\r\n\r\n", 400, "invalid port");
    s_bad ("CONNECT http://example.com/ HTTP/1.1\r\n\r\n", 400, "CONNECT target");
    s_bad ("CONNECT user@example.com:443 HTTP/1.1\r\n\r\n", 400, "user info");
    s_bad ("CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n", 400, "CONNECT target");
    s_bad ("GET example.com/ HTTP/1.1\r\n\r\n", 400, "neither /path nor an absolute URL");
    s_bad ("GET 1http://a/ HTTP/1.1\r\n\r\n", 400, "neither");
    s_bad ("CONNECT a:1 HTTP/1.1\r\nContent-Length: 4\r\n\r\n", 400, "CONNECT request with a body");
    s_bad ("CONNECT a:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
           "CONNECT request with a body");
}

static void test_request_line_errors (void **state)
{
    (void) state;
    s_bad ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request line");
    s_bad ("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request line: malformed HTTP version");
    s_bad ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "malformed HTTP version");
    s_bad (" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid character 0x20 in method");
    s_bad ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid character 0x28 in method at byte 2");
    s_bad ("G\x80T / HTTP/1.1\r\n\r\n", 400, "in method");
    s_bad ("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "0x09 in method");
    s_bad ("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", 400, "0x09 in request target");
    s_bad ("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "0xc3 in request target");
    s_bad ("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "0x7f in request target");
    s_bad ("GET\r\n\r\n", 400, "no request target");
    s_bad ("GET /\r\nHost: a\r\n\r\n", 400, "no HTTP version");
    s_bad ("GET / http/1.1\r\nHost: a\r\n\r\n", 400, "malformed HTTP version");
    s_bad ("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "malformed HTTP version");
    s_bad ("GET / HTTP/11\r\nHost: a\r\n\r\n", 400, "malformed HTTP version");
    s_bad ("GET / HTTP/1\r\nHost: a\r\n\r\n", 400, "malformed HTTP version");
    s_bad ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "not supported");
    s_bad ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "not supported");
    s_bad ("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, "not supported");
    s_bad ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "not supported");
    s_bad ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "request line: bare LF");
    s_bad ("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400, "request line: bare CR");
    s_bad ("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare CR");
    s_bad_as (true, "GET /\0 HTTP/1.1\r\n\r\n", 20, 400, "request line: NUL byte");
    s_bad ("\n", 400, "bare LF");
}

static void test_header_errors (void **state)
{
    (void) state;
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400,
           "header line 2: whitespace before colon");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A\t: 5\r\n\r\n", 400,
           "header line 2: whitespace before colon");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n", 400,
           "header line 3: obs-fold");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tcontinued\r\n\r\n", 400, "obs-fold");
    s_bad ("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400,
           "header line 1: whitespace before the first header");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", 400,
           "header line 2: invalid character 0x28 in name at byte 2");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400, "header line 2: empty name");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A 1\r\n\r\n", 400, "whitespace before colon");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", 400, "header line 2: no colon");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x01\r\n\r\n", 400,
           "header line 2: control character 0x01 in value");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f\r\n\r\n", 400, "control character 0x7f");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400, "header line 2: bare CR");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\nb\r\n\r\n", 400, "header line 2: bare LF");
    s_bad ("GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400, "header line 1: bare LF");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "header line 2: bare LF");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400, "header line 2: bare CR");
    s_bad_as (true, "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 36, 400,
              "header line 2: NUL byte");
    /* LF-only messages are refused as a whole */
    s_bad ("GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF");
}

static void test_host (void **state)
{
    (void) state;
    s_bad ("GET / HTTP/1.1\r\n\r\n", 400, "without Host");
    s_bad ("OPTIONS * HTTP/1.1\r\n\r\n", 400, "without Host");
    s_ok ("GET / HTTP/1.0\r\n\r\n");
    s_ok ("GET http://a/ HTTP/1.1\r\n\r\n");
    s_ok ("CONNECT a:443 HTTP/1.1\r\n\r\n");
    s_ok ("GET / HTTP/1.1\r\nHost:\r\n\r\n");
    s_ok ("GET / HTTP/1.1\r\nHOST: Example.com:8080\r\n\r\n");
    s_ok ("GET / HTTP/1.1\r\nhost: [::1]\r\n\r\n");
    s_ok ("GET / HTTP/1.1\r\nHost: a:\r\n\r\n");
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400,
           "header line 2: more than one Host");
    s_bad ("GET http://a/ HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, "more than one Host");
    s_bad ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "header line 1: invalid Host");
    s_bad ("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400, "invalid Host");
    s_bad ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, "user info");
    s_bad ("GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400, "invalid port");
    s_bad ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, "without ']'");
    s_bad ("GET / HTTP/1.0\r\nHost: a/b\r\n\r\n", 400, "invalid Host");
}

static void test_framing (void **state)
{
    (void) state;
    const char *get = "GET http://a/ HTTP/1.1\r\n";
    char text[512];
#define S_REQ(headers) (snprintf (text, sizeof text, "%s%s\r\n", get, headers), text)
    s_ok (S_REQ ("Content-Length: 42\r\n"));
    assert_int_equal (s_head.content_length, 42);
    s_ok (S_REQ ("Content-Length: 0\r\n"));
    assert_int_equal (s_head.content_length, 0);
    s_ok (S_REQ ("Content-Length: 007\r\n"));
    assert_int_equal (s_head.content_length, 7);
    s_ok (S_REQ ("Content-Length: 5\r\ncontent-length: 5\r\n"));
    assert_int_equal (s_head.content_length, 5);
    s_ok (S_REQ ("Content-Length: 5, 5\r\n"));
    assert_int_equal (s_head.content_length, 5);
    s_ok (S_REQ ("Content-Length: 9223372036854775807\r\n"));
    assert_int_equal (s_head.content_length, INT64_MAX);
    s_ok (S_REQ ("Transfer-Encoding: chunked\r\n"));
    assert_true (s_head.chunked);
    assert_int_equal (s_head.content_length, -1);
    s_ok (S_REQ ("Transfer-Encoding: CHUNKED \r\n"));
    assert_true (s_head.chunked);

    s_bad (S_REQ ("Content-Length: 5\r\nContent-Length: 6\r\n"), 400,
           "header line 2: conflicting Content-Length");
    s_bad (S_REQ ("Content-Length: 5, 6\r\n"), 400, "conflicting Content-Length");
    s_bad (S_REQ ("Content-Length: +5\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length: -1\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length: 0x5\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length: 5 5\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length: 5,\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length:\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length: 1.0\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length: 9223372036854775808\r\n"), 400, "invalid Content-Length");
    s_bad (S_REQ ("Content-Length: 99999999999999999999999\r\n"), 400, "invalid Content-Length");

    /* smuggling: Content-Length and Transfer-Encoding together, in any spelling and order */
    s_bad (S_REQ ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400,
           "both Content-Length and Transfer-Encoding");
    s_bad (S_REQ ("transfer-encoding: chunked\r\ncontent-length: 0\r\n"), 400, "both");
    s_bad (S_REQ ("Transfer-Encoding: chunked\r\nX: y\r\nContent-Length: 5, 5\r\n"), 400, "both");
    s_bad (S_REQ ("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n"), 400,
           "whitespace before colon");
    s_bad (S_REQ ("Transfer-Encoding:\x0b chunked\r\nContent-Length: 5\r\n"), 400,
           "control character 0x0b");
    s_bad (S_REQ ("Content-Length: 5\r\nTransfer-Encoding:\r\n"), 400, "empty transfer coding");
    s_bad (S_REQ ("Transfer_Encoding: chunked\r\nContent-Length: 5\r\n"), 400,
           "Transfer_Encoding is ambiguous");
    s_bad (S_REQ ("content_length: 5\r\n"), 400, "content_length is ambiguous");
    s_bad (S_REQ ("Transfer-Encoding: chunked\r\nContent_Length: 5\r\n"), 400, "ambiguous");

    /* transfer codings other than one chunked */
    s_bad (S_REQ ("Transfer-Encoding: gzip\r\n"), 501, "header line 1: transfer coding");
    s_bad (S_REQ ("Transfer-Encoding: gzip, chunked\r\n"), 501, "only chunked");
    s_bad (S_REQ ("Transfer-Encoding: chunked, gzip\r\n"), 501, "only chunked");
    s_bad (S_REQ ("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"), 501,
           "header line 2");
    s_bad (S_REQ ("Transfer-Encoding: xchunked\r\n"), 501, "only chunked");
    s_bad (S_REQ ("Transfer-Encoding: chunked;q=1\r\n"), 501, "only chunked");
    s_bad (S_REQ ("Transfer-Encoding: \"chunked\"\r\n"), 501, "only chunked");
    s_bad (S_REQ ("Transfer-Encoding: chunked, chunked\r\n"), 400, "more than once");
    s_bad (S_REQ ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400,
           "more than once");
    s_bad (S_REQ ("Transfer-Encoding: , chunked\r\n"), 400, "empty transfer coding");
    s_bad (S_REQ ("Transfer-Encoding: chunked,\r\n"), 400, "empty transfer coding");
    s_bad ("POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
           "Transfer-Encoding in an HTTP/1.0 message");
#undef S_REQ
}

/* A request of exactly total bytes: request line, Host and filler headers of at most 8000 bytes
 * each. Caller owns return value. */
static char *s_head_of (size_t total)
{
    char *text = malloc (total + 1);
    size_t n = (size_t) sprintf (text, "GET / HTTP/1.1\r\nHost: a\r\n");
    size_t rem = total - n - 2;
    for (int line = 0; rem > 0; line++) {
        size_t content = rem > 8022 ? 8000 : rem - 2;
        int h = sprintf (text + n, "X-%04d: ", line);
        memset (text + n + h, 'v', content - (size_t) h);
        memcpy (text + n + content, "\r\n", 2);
        n += content + 2;
        rem -= content + 2;
    }
    memcpy (text + n, "\r\n", 3);
    assert_int_equal (strlen (text), total);
    return text;
}

static void test_limits (void **state)
{
    (void) state;
    int status;
    /* request line: 8192 bytes without CRLF is fine, 8193 is 414, complete or not */
    char *text = malloc (HMS_H1_MAX_LINE + 64);
    size_t tlen = HMS_H1_MAX_LINE - strlen ("GET ") - strlen (" HTTP/1.1");
    memcpy (text, "GET /", 5);
    memset (text + 5, 'a', tlen - 1);
    strcpy (text + 4 + tlen, " HTTP/1.1\r\nHost: a\r\n\r\n");
    s_ok (text);
    assert_int_equal (s_head.target_len, tlen);
    assert_int_equal (
        hms_h1_parse_request (text, HMS_H1_MAX_LINE, &s_head, &status, s_err, sizeof s_err), 0);
    memmove (text + 5, text + 4, strlen (text + 4) + 1);
    text[4] = '/';
    s_bad (text, 414, "request line: longer than 8192 bytes");
    assert_int_equal (
        hms_h1_parse_request (text, HMS_H1_MAX_LINE + 1, &s_head, &status, s_err, sizeof s_err),
        -1);
    assert_int_equal (status, 414);
    free (text);

    /* one header line: 8192 bytes, and 8193 */
    text = malloc (HMS_H1_MAX_LINE + 64);
    size_t n = (size_t) sprintf (text, "GET / HTTP/1.1\r\nX-Long: ");
    size_t vlen = HMS_H1_MAX_LINE - strlen ("X-Long: ");
    memset (text + n, 'v', vlen);
    strcpy (text + n + vlen, "\r\nHost: a\r\n\r\n");
    s_ok (text);
    assert_int_equal (s_head.headers[0].value_len, vlen);
    memmove (text + n + 1, text + n, strlen (text + n) + 1);
    s_bad (text, 431, "header line 1: longer than 8192 bytes");
    free (text);

    /* the head: 65536 bytes is fine, 65537 is 431, also before it is complete */
    text = s_head_of (HMS_H1_MAX_HEAD);
    assert_int_equal (
        hms_h1_parse_request (text, strlen (text), &s_head, &status, s_err, sizeof s_err),
        HMS_H1_MAX_HEAD);
    assert_int_equal (
        hms_h1_parse_request (text, strlen (text) - 1, &s_head, &status, s_err, sizeof s_err), 0);
    free (text);
    text = s_head_of (HMS_H1_MAX_HEAD + 1);
    assert_int_equal (
        hms_h1_parse_request (text, strlen (text), &s_head, &status, s_err, sizeof s_err), -1);
    assert_int_equal (status, 431);
    s_assert_contains (s_err, "head larger than 65536 bytes");
    /* refused as soon as the last header line cannot fit */
    assert_int_equal (
        hms_h1_parse_request (text, strlen (text) - 4, &s_head, &status, s_err, sizeof s_err), -1);
    assert_int_equal (status, 431);
    free (text);
    /* up to 10 empty lines before the request line */
    text = malloc (256);
    text[0] = 0;
    for (int i = 0; i < HMS_H1_MAX_EMPTY_LINES; i++)
        strcat (text, "\r\n");
    strcat (text, "GET http://a/ HTTP/1.1\r\n\r\n");
    s_ok (text);
    assert_int_equal (s_head.head_len, 2 * HMS_H1_MAX_EMPTY_LINES + 26);
    memmove (text + 2, text, strlen (text) + 1);
    s_bad (text, 400, "more than 10 empty lines before the request line");
    free (text);

    /* 100 headers, and 101 */
    text = malloc (4096);
    n = (size_t) sprintf (text, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < HMS_H1_MAX_HEADERS; i++)
        n += (size_t) sprintf (text + n, "X-%d: %d\r\n", i, i);
    strcpy (text + n, "\r\n");
    s_ok (text);
    assert_int_equal (s_head.nheaders, HMS_H1_MAX_HEADERS);
    assert_true (s_header_is (99, "X-99", "99"));
    strcpy (text + n, "X-Last: 1\r\n\r\n");
    s_bad (text, 431, "header line 101: more than 100 headers");
    free (text);
}

static void test_pipelined (void **state)
{
    (void) state;
    const char *two = "GET http://a/1 HTTP/1.1\r\n\r\n"
                      "POST http://a/2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                      "GET http://a/3 HTTP/1.1\r\n\r\n";
    size_t len = strlen (two), off = 0;
    int status;
    ssize_t r = hms_h1_parse_request (two, len, &s_head, &status, s_err, sizeof s_err);
    assert_int_equal (r, 27);
    assert_true (s_span_is (s_head.target, s_head.target_len, "http://a/1"));
    off += (size_t) r;
    r = hms_h1_parse_request (two + off, len - off, &s_head, &status, s_err, sizeof s_err);
    assert_true (r > 0);
    assert_true (s_span_is (s_head.target, s_head.target_len, "http://a/2"));
    off += (size_t) r;
    hms_h1_body_t body;
    assert_int_equal (hms_h1_body_init (&body, &s_head, false, false, s_err, sizeof s_err), 0);
    assert_int_equal (body.kind, HMS_H1_BODY_LENGTH);
    size_t used;
    assert_int_equal (
        hms_h1_body_feed (&body, two + off, len - off, &used, NULL, NULL, s_err, sizeof s_err), 1);
    assert_int_equal (used, 3);
    off += used;
    r = hms_h1_parse_request (two + off, len - off, &s_head, &status, s_err, sizeof s_err);
    assert_int_equal (r, (ssize_t) (len - off));
    assert_true (s_span_is (s_head.target, s_head.target_len, "http://a/3"));
    /* the body of a GET without framing is empty: the next bytes are the next request */
    assert_int_equal (hms_h1_body_init (&body, &s_head, false, false, s_err, sizeof s_err), 0);
    assert_int_equal (body.kind, HMS_H1_BODY_NONE);
    assert_int_equal (hms_h1_body_feed (&body, "GET", 3, &used, NULL, NULL, s_err, sizeof s_err),
                      1);
    assert_int_equal (used, 0);
}

static void test_incremental (void **state)
{
    (void) state;
    /* s_ok and s_bad feed every prefix; here a long valid head byte by byte, checked
     * against the one-shot parse by s_check_prefixes, and errors that show before the end */
    s_ok ("POST http://example.com:8080/upload?x=1 HTTP/1.1\r\n"
          "Host: example.com:8080\r\n"
          "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
          "Transfer-Encoding: chunked\r\n"
          "Connection: keep-alive\r\n"
          "\r\n");
    int status;
    /* an obs-fold is refused once its line is complete, not before */
    const char *fold = "GET / HTTP/1.1\r\nX-A: 1\r\n  fold\r\n";
    for (size_t k = 0; k < strlen (fold); k++)
        assert_int_equal (hms_h1_parse_request (fold, k, &s_head, &status, s_err, sizeof s_err), 0);
    assert_int_equal (
        hms_h1_parse_request (fold, strlen (fold), &s_head, &status, s_err, sizeof s_err), -1);
    assert_int_equal (status, 400);
    /* a bare LF is refused as soon as it arrives */
    assert_int_equal (
        hms_h1_parse_request ("GET / HTTP/1.1\n", 15, &s_head, &status, s_err, sizeof s_err), -1);
    assert_int_equal (status, 400);
    /* a lone CR at the end waits for its LF */
    assert_int_equal (
        hms_h1_parse_request ("GET / HTTP/1.1\r", 15, &s_head, &status, s_err, sizeof s_err), 0);
    s_bad ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
           "conflicting");
}

/* Feeds text in pieces of step bytes and parses only when hms_h1_parse_due says so; checks
 * that a skipped parse (a sample of them) would have answered 0 or what the next due parse
 * answers, and returns the number of parses. */
static int s_feed_due (const char *text, size_t n, size_t step, ssize_t want, int want_status)
{
    int parses = 0, status = 0, skipped_status = 0;
    size_t old = 0;
    ssize_t r = 0, skipped = 0;
    for (size_t len = step < n ? step : n;; len = len + step < n ? len + step : n) {
        if (hms_h1_parse_due (text, old, len)) {
            parses++;
            r = hms_h1_parse_request (text, len, &s_head, &status, s_err, sizeof s_err);
            if (skipped != 0) {
                assert_int_equal (skipped, r);
                assert_int_equal (skipped_status, status);
            }
            skipped = 0;
            if (r != 0)
                break;
            old = len;
        } else if (len % 61 == 0 || n - len < 64) {
            ssize_t s =
                hms_h1_parse_request (text, len, &s_head, &skipped_status, s_err, sizeof s_err);
            assert_true (s <= 0);
            if (s < 0)
                skipped = s;
        }
        if (len == n)
            break;
    }
    assert_int_equal (r, want);
    assert_int_equal (status, want_status);
    return parses;
}

static void test_parse_due (void **state)
{
    (void) state;
    assert_true (hms_h1_parse_due ("GET", 0, 3));
    assert_false (hms_h1_parse_due ("GET / HTTP/1.1", 3, 14));
    assert_true (hms_h1_parse_due ("GET / HTTP/1.1\r\n", 14, 16));
    assert_false (hms_h1_parse_due ("GET / HTTP/1.1\r\n", 16, 16));
    assert_true (hms_h1_parse_due ("GET / HTTP/1.1\r\n", 16, 15));

    /* a 60 KB head arriving byte by byte: about one parse per line, not one per byte */
    char *text = malloc (HMS_H1_MAX_HEAD);
    size_t n = (size_t) sprintf (text, "GET http://a/ HTTP/1.1\r\n");
    for (int i = 0; i < 60; i++) {
        n += (size_t) sprintf (text + n, "X-%02d: ", i);
        memset (text + n, 'v', 1000);
        n += 1000;
        n += (size_t) sprintf (text + n, "\r\n");
    }
    n += (size_t) sprintf (text + n, "\r\n");
    int parses = s_feed_due (text, n, 1, (ssize_t) n, 0);
    assert_true (parses <= 62 + (int) (n / 4096) + 1);
    for (size_t step = 2; step < 5000; step = step * 3 + 1)
        s_feed_due (text, n, step, (ssize_t) n, 0);
    /* errors inside a line surface at the next line end at the latest */
    text[3000] = 0;
    text[3000 + 1] = 'x';
    s_feed_due (text, n, 1, -1, 400);
    text[3000] = '\r';
    s_feed_due (text, n, 7, -1, 400);
    /* and limits at the next 4 KB boundary at the latest */
    memset (text, 'a', HMS_H1_MAX_HEAD);
    memcpy (text, "GET /", 5);
    s_feed_due (text, HMS_H1_MAX_HEAD, 1, -1, 414);
    s_assert_contains (s_err, "request line: longer than 8192 bytes");
    memcpy (text, "GET / HTTP/1.1\r\nX: ", 19);
    s_feed_due (text, HMS_H1_MAX_HEAD, 3, -1, 431);
    free (text);
}

static void test_response (void **state)
{
    (void) state;
    s_ok_as (false, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=b\r\n\r\n");
    assert_int_equal (s_head.status, 200);
    assert_true (s_span_is (s_head.reason, s_head.reason_len, "OK"));
    assert_int_equal (s_head.content_length, 5);
    assert_int_equal (s_head.version_minor, 1);
    s_ok_as (false, "HTTP/1.0 404 Not  Found \r\n\r\n");
    assert_int_equal (s_head.status, 404);
    assert_true (s_span_is (s_head.reason, s_head.reason_len, "Not  Found "));
    s_ok_as (false, "HTTP/1.1 204\r\n\r\n");
    assert_int_equal (s_head.reason_len, 0);
    s_ok_as (false, "HTTP/1.1 599 \r\n\r\n");
    s_ok_as (false, "HTTP/1.1 100 Continue\r\n\r\n");
    s_ok_as (false, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_true (s_head.chunked);
    s_ok_as (false, "HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\n\r\n"); /* Host is for requests */

    s_bad_response ("HTTP/1.1 600 Bad\r\n\r\n", "invalid status code");
    s_bad_response ("HTTP/1.1 099 Low\r\n\r\n", "invalid status code");
    s_bad_response ("HTTP/1.1 20 OK\r\n\r\n", "invalid status code");
    s_bad_response ("HTTP/1.1 2000 OK\r\n\r\n", "invalid status code");
    s_bad_response ("HTTP/1.1 200OK\r\n\r\n", "invalid status code");
    s_bad_response ("HTTP/1.1  200 OK\r\n\r\n", "invalid status code");
    s_bad_response ("HTTP/2 200 OK\r\n\r\n", "malformed HTTP version");
    s_bad_response ("HTTP/2.0 200 OK\r\n\r\n", "not supported");
    s_bad_response ("ICY 200 OK\r\n\r\n", "malformed");
    s_bad_response ("HTTP/1.1 200 O\x01K\r\n\r\n", "control character 0x01 in reason");
    s_bad_response ("\r\nHTTP/1.1 200 OK\r\n\r\n", "status line: empty");
    s_bad_response ("HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n", "status line: bare LF");
    s_bad_response ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "both");
    s_bad_response ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "only chunked");
    s_bad_response ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    "conflicting");
    s_bad_response ("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", "obs-fold");
    s_bad_response ("HTTP/1.1 200 OK\r\nX : a\r\n\r\n", "whitespace before colon");
    s_bad_response ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0");
    char *big = s_head_of (HMS_H1_MAX_HEAD + 1);
    memcpy (big, "HTTP/1.1 200 A\r\n", 16); /* as long as "GET / HTTP/1.1\r\n" */
    s_bad_as (false, big, strlen (big), 502, "head larger than");
    free (big);
}

static void test_find_and_tokens (void **state)
{
    (void) state;
    s_ok ("GET http://a/ HTTP/1.1\r\n"
          "Connection: Keep-Alive, Upgrade\r\n"
          "upgrade: websocket\r\n"
          "CONNECTION:  ,te ,\r\n"
          "X-Close: close\r\n"
          "\r\n");
    const hms_h1_header_t *h = hms_h1_find (&s_head, "connection");
    assert_non_null (h);
    assert_true (s_span_is (h->value, h->value_len, "Keep-Alive, Upgrade"));
    assert_non_null (hms_h1_find (&s_head, "UPGRADE"));
    assert_null (hms_h1_find (&s_head, "Upgrad"));
    assert_null (hms_h1_find (&s_head, "Upgrade-Insecure"));
    assert_true (hms_h1_has_token (&s_head, "Connection", "keep-alive"));
    assert_true (hms_h1_has_token (&s_head, "Connection", "upgrade"));
    assert_true (hms_h1_has_token (&s_head, "Connection", "TE"));
    assert_false (hms_h1_has_token (&s_head, "Connection", "close"));
    assert_false (hms_h1_has_token (&s_head, "Connection", "keep"));
    assert_false (hms_h1_has_token (&s_head, "Connection", ""));
    assert_true (hms_h1_has_token (&s_head, "Upgrade", "WebSocket"));
    assert_true (hms_h1_keep_alive (&s_head));

    s_ok ("GET http://a/ HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
    assert_false (hms_h1_keep_alive (&s_head));
    s_ok ("GET http://a/ HTTP/1.0\r\n\r\n");
    assert_false (hms_h1_keep_alive (&s_head));
    s_ok ("GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true (hms_h1_keep_alive (&s_head));
    s_ok_as (false, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    assert_false (hms_h1_keep_alive (&s_head));
}

static void s_authority_ok (const char *s, const char *host, unsigned port)
{
    char h[HMS_H1_MAX_HOST + 1], err[256] = "";
    uint16_t p = 0;
    if (hms_h1_parse_authority (s, strlen (s), h, sizeof h, &p, err, sizeof err) != 0)
        fail_msg ("refused %s: %s", s, err);
    assert_string_equal (h, host);
    assert_int_equal (p, port);
}

static void s_authority_bad (const char *s, const char *part)
{
    char h[HMS_H1_MAX_HOST + 1], err[256] = "";
    uint16_t p = 0;
    if (hms_h1_parse_authority (s, strlen (s), h, sizeof h, &p, err, sizeof err) != -1)
        fail_msg ("accepted %s", s);
    s_assert_contains (err, part);
}

static void test_authority (void **state)
{
    (void) state;
    s_authority_ok ("example.com:443", "example.com", 443);
    s_authority_ok ("Example.COM:1", "example.com", 1);
    s_authority_ok ("a:65535", "a", 65535);
    s_authority_ok ("127.0.0.1:8080", "127.0.0.1", 8080);
    s_authority_ok ("0.0.0.0:80", "0.0.0.0", 80);
    s_authority_ok ("[2001:db8::1]:443", "2001:db8::1", 443);
    s_authority_ok ("[2001:DB8::A]:443", "2001:db8::a", 443);
    s_authority_ok ("[::ffff:10.0.0.1]:22", "::ffff:10.0.0.1", 22);
    s_authority_ok ("[::]:1", "::", 1);
    s_authority_ok ("my_host-1.internal.:8443", "my_host-1.internal.", 8443);
    s_authority_ok ("1.2.3.4.example:80", "1.2.3.4.example", 80);
    s_authority_ok ("0x10.com:80", "0x10.com", 80);

    s_authority_ok ("a:0443", "a", 443);

    s_authority_bad ("", "empty host");
    s_authority_bad (":443", "empty host");
    s_authority_bad ("example.com", "missing port");
    s_authority_bad ("example.com:", "invalid port");
    s_authority_bad ("example.com:0", "invalid port");
    s_authority_bad ("example.com:65536", "invalid port");
    s_authority_bad ("example.com:100000", "invalid port");
    s_authority_bad ("example.com:+80", "invalid port");
    s_authority_bad ("example.com:80:80", "without brackets");
    s_authority_bad ("example.com:443/", "invalid port");
    s_authority_bad ("user@example.com:443", "user info");
    s_authority_bad ("exa mple.com:443", "invalid character 0x20 in host at character 4");
    s_authority_bad ("exa%41mple.com:443", "invalid character 0x25");
    s_authority_bad ("a..b:443", "empty label");
    s_authority_bad (".a:443", "empty label");
    s_authority_bad ("a.b..:443", "empty label");
    s_authority_bad (".:443", "not a name");
    s_authority_bad ("1.2.3:80", "dotted-quad");
    s_authority_bad ("1.2.3.4.5:80", "dotted-quad");
    s_authority_bad ("256.1.1.1:80", "dotted-quad");
    s_authority_bad ("010.0.0.1:80", "dotted-quad");
    s_authority_bad ("0x7f.1:80", "dotted-quad");
    s_authority_bad ("2130706433:80", "dotted-quad");
    s_authority_bad ("0x7f000001:80", "dotted-quad");
    s_authority_bad ("0x:80", "dotted-quad"); /* inet_aton reads "0x" as 0.0.0.0 */
    s_authority_bad ("a.0X:80", "dotted-quad");
    s_authority_bad ("a.0:80", "dotted-quad");
    s_authority_bad ("example.123:80", "dotted-quad");
    s_authority_bad ("1.2.3.4.:80", "dotted-quad");
    s_authority_bad ("2001:db8::1:443", "IPv6 address without brackets");
    s_authority_bad ("[2001:db8::1]", "missing port");
    s_authority_bad ("[2001:db8::1]443", "after ']'");
    s_authority_bad ("[2001:db8::1:443", "without ']'");
    s_authority_bad ("[2001:db8::g]:443", "invalid character 0x67 in IPv6");
    s_authority_bad ("[fe80::1%25eth0]:443", "invalid character 0x25 in IPv6");
    s_authority_bad ("[1:2:3:4:5:6:7:8:9]:443", "invalid IPv6");
    s_authority_bad ("[]:443", "invalid IPv6");
    s_authority_bad ("[127.0.0.1]:443", "invalid IPv6");

    char label[128], want[128], h[HMS_H1_MAX_HOST + 1], err[256];
    memset (label, 'a', 63);
    strcpy (label + 63, ".b:1");
    snprintf (want, sizeof want, "%.65s", label);
    s_authority_ok (label, want, 1);
    memset (label, 'a', 64);
    strcpy (label + 64, ".b:1");
    s_authority_bad (label, "label longer than 63");
    char name[300];
    size_t n = 0;
    while (n + 4 <= HMS_H1_MAX_HOST)
        n += (size_t) sprintf (name + n, "abc.");
    n += (size_t) sprintf (name + n, "%.*s", (int) (HMS_H1_MAX_HOST - n), "xyz");
    assert_int_equal (n, HMS_H1_MAX_HOST);
    strcpy (name + n, ":80");
    uint16_t port;
    assert_int_equal (
        hms_h1_parse_authority (name, strlen (name), h, sizeof h, &port, err, sizeof err), 0);
    assert_int_equal (strlen (h), HMS_H1_MAX_HOST);
    /* too small a buffer for the host */
    assert_int_equal (hms_h1_parse_authority ("example.com:1", 13, h, 11, &port, err, sizeof err),
                      -1);
    s_assert_contains (err, "buffer");
    memmove (name + 1, name, strlen (name) + 1);
    name[0] = 'x';
    s_authority_bad (name, "longer than 253");
}

static void test_absolute (void **state)
{
    (void) state;
    hms_h1_url_t url;
    char err[256];
    const char *s = "http://Example.com/a/b?x=1&y=%20";
    assert_int_equal (hms_h1_parse_absolute (s, strlen (s), &url, err, sizeof err), 0);
    assert_false (url.https);
    assert_string_equal (url.host, "example.com");
    assert_int_equal (url.port, 80);
    assert_true (s_span_is (url.authority, url.authority_len, "Example.com"));
    assert_true (s_span_is (url.path, url.path_len, "/a/b"));
    assert_true (s_span_is (url.query, url.query_len, "?x=1&y=%20"));

    s = "HTTP://[::1]:8080";
    assert_int_equal (hms_h1_parse_absolute (s, strlen (s), &url, err, sizeof err), 0);
    assert_string_equal (url.host, "::1");
    assert_int_equal (url.port, 8080);
    assert_true (s_span_is (url.authority, url.authority_len, "[::1]:8080"));
    assert_true (s_span_is (url.path, url.path_len, "/"));
    assert_int_equal (url.query_len, 0);

    s = "https://secure.example:443/";
    assert_int_equal (hms_h1_parse_absolute (s, strlen (s), &url, err, sizeof err), 0);
    assert_true (url.https);
    assert_int_equal (url.port, 443);
    s = "https://secure.example";
    assert_int_equal (hms_h1_parse_absolute (s, strlen (s), &url, err, sizeof err), 0);
    assert_int_equal (url.port, 443);

    s = "http://a?q";
    assert_int_equal (hms_h1_parse_absolute (s, strlen (s), &url, err, sizeof err), 0);
    assert_true (s_span_is (url.path, url.path_len, "/"));
    assert_true (s_span_is (url.query, url.query_len, "?q"));
    s = "http://a:/x";
    assert_int_equal (hms_h1_parse_absolute (s, strlen (s), &url, err, sizeof err), 0);
    assert_int_equal (url.port, 80);
    s = "http://10.1.2.3:81/x?";
    assert_int_equal (hms_h1_parse_absolute (s, strlen (s), &url, err, sizeof err), 0);
    assert_string_equal (url.host, "10.1.2.3");
    assert_int_equal (url.port, 81);
    assert_true (s_span_is (url.query, url.query_len, "?"));

    const struct {
        const char *url, *part;
    } bad[] = {
        {"ftp://a/", "unsupported URL scheme"},
        {"httpx://a/", "unsupported URL scheme"},
        {"http:/a/", "not an absolute URL"},
        {"http:a", "not an absolute URL"},
        {"/just/a/path", "not an absolute URL"},
        {"http://", "empty host"},
        {"http:///x", "empty host"},
        {"http://user:pw@a/", "user info"},
        {"http://a@b/", "user info"},
        {"http://a/x#frag", "fragment"},
        {"http://a#frag", "fragment"},
        {"http://a/x y", "invalid character 0x20"},
        {"http://a/\x7f", "invalid character 0x7f"},
        {"http://a:99999/", "invalid port"},
        {"http://a:8o/", "invalid port"},
        {"http://1.2.3/", "dotted-quad"},
        {"http://[::1/", "without ']'"},
        {"http://exa_mple%2ecom/", "invalid character 0x25"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (hms_h1_parse_absolute (bad[i].url, strlen (bad[i].url), &url, err, sizeof err) != -1)
            fail_msg ("accepted %s", bad[i].url);
        s_assert_contains (err, bad[i].part);
    }
}

/* Collects payload bytes. */
typedef struct {
    char data[8192];
    size_t len;
    int calls;
    bool refuse;
} s_sink_t;

static int s_on_data (void *arg, const char *data, size_t len)
{
    s_sink_t *sink = arg;
    if (sink->refuse)
        return -1;
    assert_true (sink->len + len <= sizeof sink->data);
    memcpy (sink->data + sink->len, data, len);
    sink->len += len;
    sink->calls++;
    return 0;
}

static hms_h1_body_t s_body_for (const char *head_text, bool response, bool was_head)
{
    s_ok_as (!response, head_text);
    hms_h1_body_t b;
    assert_int_equal (hms_h1_body_init (&b, &s_head, response, was_head, s_err, sizeof s_err), 0);
    return b;
}

static void test_body_framing (void **state)
{
    (void) state;
    assert_int_equal (s_body_for ("GET http://a/ HTTP/1.1\r\n\r\n", false, false).kind,
                      HMS_H1_BODY_NONE);
    assert_int_equal (
        s_body_for ("POST http://a/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n", false, false).kind,
        HMS_H1_BODY_NONE);
    assert_int_equal (
        s_body_for ("POST http://a/ HTTP/1.1\r\nContent-Length: 9\r\n\r\n", false, false).kind,
        HMS_H1_BODY_LENGTH);
    assert_int_equal (
        s_body_for ("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false, false)
            .kind,
        HMS_H1_BODY_CHUNKED);
    assert_int_equal (s_body_for ("HTTP/1.1 200 OK\r\n\r\n", true, false).kind, HMS_H1_BODY_CLOSE);
    assert_int_equal (s_body_for ("HTTP/1.0 200 OK\r\n\r\n", true, false).kind, HMS_H1_BODY_CLOSE);
    assert_int_equal (s_body_for ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true, false).kind,
                      HMS_H1_BODY_NONE);
    assert_int_equal (
        s_body_for ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, false).kind,
        HMS_H1_BODY_LENGTH);
    assert_int_equal (s_body_for ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, true).kind,
                      HMS_H1_BODY_NONE);
    assert_int_equal (
        s_body_for ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, false).kind,
        HMS_H1_BODY_CHUNKED);
    assert_int_equal (
        s_body_for ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, true).kind,
        HMS_H1_BODY_NONE);
    assert_int_equal (
        s_body_for ("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", true, false).kind,
        HMS_H1_BODY_NONE);
    assert_int_equal (
        s_body_for ("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", true, false).kind,
        HMS_H1_BODY_NONE);
    assert_int_equal (s_body_for ("HTTP/1.1 100 Continue\r\n\r\n", true, false).kind,
                      HMS_H1_BODY_NONE);
    assert_int_equal (s_body_for ("HTTP/1.1 101 Switching Protocols\r\n\r\n", true, false).kind,
                      HMS_H1_BODY_NONE);

    /* a head the parser cannot produce */
    hms_h1_head_t head = {0};
    head.content_length = 5;
    head.chunked = true;
    hms_h1_body_t b;
    assert_int_equal (hms_h1_body_init (&b, &head, false, false, s_err, sizeof s_err), -1);
    s_assert_contains (s_err, "both");
}

static void test_body_length (void **state)
{
    (void) state;
    hms_h1_body_t b =
        s_body_for ("PUT http://a/ HTTP/1.1\r\nContent-Length: 10\r\n\r\n", false, false);
    s_sink_t sink = {0};
    size_t used;
    assert_int_equal (
        hms_h1_body_feed (&b, "0123", 4, &used, s_on_data, &sink, s_err, sizeof s_err), 0);
    assert_int_equal (used, 4);
    assert_int_equal (hms_h1_body_eof (&b, s_err, sizeof s_err), -1);
    s_assert_contains (s_err, "6 bytes before its end");

    b = s_body_for ("PUT http://a/ HTTP/1.1\r\nContent-Length: 10\r\n\r\n", false, false);
    assert_int_equal (
        hms_h1_body_feed (&b, "0123", 4, &used, s_on_data, &sink, s_err, sizeof s_err), 0);
    assert_int_equal (
        hms_h1_body_feed (&b, "456789GET /", 11, &used, s_on_data, &sink, s_err, sizeof s_err), 1);
    assert_int_equal (used, 6);
    assert_int_equal (sink.len, 14);
    assert_memory_equal (sink.data + 4, "0123456789", 10);
    assert_int_equal (hms_h1_body_feed (&b, "x", 1, &used, s_on_data, &sink, s_err, sizeof s_err),
                      1);
    assert_int_equal (used, 0);
    assert_int_equal (hms_h1_body_eof (&b, s_err, sizeof s_err), 0);

    /* until close */
    b = s_body_for ("HTTP/1.0 200 OK\r\n\r\n", true, false);
    sink.len = 0;
    assert_int_equal (hms_h1_body_feed (&b, "abc", 3, &used, s_on_data, &sink, s_err, sizeof s_err),
                      0);
    assert_int_equal (hms_h1_body_feed (&b, "def", 3, &used, s_on_data, &sink, s_err, sizeof s_err),
                      0);
    assert_int_equal (used, 3);
    assert_int_equal (hms_h1_body_eof (&b, s_err, sizeof s_err), 0);
    assert_int_equal (hms_h1_body_feed (&b, "g", 1, &used, s_on_data, &sink, s_err, sizeof s_err),
                      1);
    assert_int_equal (sink.len, 6);
    assert_memory_equal (sink.data, "abcdef", 6);

    /* an output that refuses */
    b = s_body_for ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, false);
    sink.refuse = true;
    assert_int_equal (hms_h1_body_feed (&b, "abc", 3, &used, s_on_data, &sink, s_err, sizeof s_err),
                      -1);
    s_assert_contains (s_err, "output refused");
    sink.refuse = false;
    assert_int_equal (hms_h1_body_feed (&b, "abc", 3, &used, s_on_data, &sink, s_err, sizeof s_err),
                      -1);
    s_assert_contains (s_err, "failed before");
}

/* Decodes a chunked body fed in pieces of step bytes (0: all at once). Returns the feed result
 * at the end; *used is the total consumed. */
static int s_chunked (const char *in, size_t len, size_t step, s_sink_t *sink, size_t *used,
                      char *err, size_t errlen)
{
    hms_h1_body_t b;
    hms_h1_head_t head = {0};
    head.content_length = -1;
    head.chunked = true;
    assert_int_equal (hms_h1_body_init (&b, &head, false, false, err, errlen), 0);
    assert_int_equal (b.kind, HMS_H1_BODY_CHUNKED);
    memset (sink, 0, sizeof *sink);
    *used = 0;
    size_t off = 0;
    int r = 0;
    while (off < len) {
        size_t n = step && len - off > step ? step : len - off;
        char *piece = malloc (n);
        memcpy (piece, in + off, n);
        size_t c;
        r = hms_h1_body_feed (&b, piece, n, &c, s_on_data, sink, err, errlen);
        free (piece);
        if (r < 0)
            return r;
        assert_true (c <= n);
        *used += c;
        off += n;
        if (r == 1)
            break;
    }
    return r;
}

/* in must decode to want in every feeding pattern, and consume exactly body_len bytes. */
static void s_chunked_ok (const char *in, size_t len, size_t body_len, const char *want)
{
    for (size_t step = 0; step <= 7; step++) {
        s_sink_t sink;
        size_t used;
        char err[256] = "";
        int r = s_chunked (in, len, step, &sink, &used, err, sizeof err);
        if (r != 1)
            fail_msg ("step %zu: %d (%s) for %s", step, r, err, in);
        assert_int_equal (used, body_len);
        assert_int_equal (sink.len, strlen (want));
        assert_memory_equal (sink.data, want, sink.len);
    }
}

/* in must be refused in every feeding pattern with an error containing part. */
static void s_chunked_bad (const char *in, const char *part)
{
    for (size_t step = 0; step <= 3; step++) {
        s_sink_t sink;
        size_t used;
        char err[256] = "";
        int r = s_chunked (in, strlen (in), step, &sink, &used, err, sizeof err);
        if (r != -1)
            fail_msg ("step %zu: accepted %s", step, in);
        s_assert_contains (err, part);
    }
}

/* A chunked body whose first chunk-size line is len bytes with its CRLF. */
static void s_chunk_line (char *out, size_t len)
{
    memcpy (out, "1;", 2);
    memset (out + 2, 'e', len - 4);
    strcpy (out + len - 2, "\r\nx\r\n0\r\n\r\n");
}

/* An empty chunked body whose trailer section is len bytes with its final CRLF. */
static void s_trailer (char *out, size_t len)
{
    memcpy (out, "0\r\nX: ", 6);
    memset (out + 6, 't', len - 7);
    strcpy (out + 3 + len - 4, "\r\n\r\n");
    assert_int_equal (strlen (out), 3 + len);
}

static void test_chunked (void **state)
{
    (void) state;
    const char *in = "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
    s_chunked_ok (in, strlen (in), strlen (in), "hello, world");
    in = "A;name=value;q=\"quoted; \\\"x\"\r\n0123456789\r\n1 ; x\r\n!\r\n0;last\r\n\r\n";
    s_chunked_ok (in, strlen (in), strlen (in), "0123456789!");
    in = "00000000000000000000000003\r\nabc\r\n0\r\n\r\n";
    s_chunked_ok (in, strlen (in), strlen (in), "abc");
    in = "f\r\n0123456789abcde\r\n0\r\nExpires: never\r\nX-Checksum: abc\r\n\r\n";
    s_chunked_ok (in, strlen (in), strlen (in), "0123456789abcde");
    in = "0\r\n\r\n";
    s_chunked_ok (in, strlen (in), strlen (in), "");
    /* stops at the end of the body: what follows is the next request */
    const char *two = "3\r\nabc\r\n0\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n";
    s_chunked_ok (two, strlen (two), strlen ("3\r\nabc\r\n0\r\n\r\n"), "abc");
    /* a large chunk in one call arrives in one piece, and verbatim without out */
    char big[5000];
    int n = sprintf (big, "1000\r\n");
    memset (big + n, 'z', 4096);
    n += 4096;
    n += sprintf (big + n, "\r\n0\r\n\r\n");
    s_sink_t sink;
    size_t used;
    assert_int_equal (s_chunked (big, (size_t) n, 0, &sink, &used, s_err, sizeof s_err), 1);
    assert_int_equal (sink.calls, 1);
    assert_int_equal (sink.len, 4096);
    hms_h1_body_t b;
    hms_h1_head_t head = {.content_length = -1, .chunked = true};
    assert_int_equal (hms_h1_body_init (&b, &head, false, false, s_err, sizeof s_err), 0);
    assert_int_equal (
        hms_h1_body_feed (&b, big, (size_t) n + 3, &used, NULL, NULL, s_err, sizeof s_err), 1);
    assert_int_equal (used, (size_t) n);

    s_chunked_bad ("g\r\n", "expected a hex chunk size, got 0x67");
    s_chunked_bad ("\r\n", "expected a hex chunk size");
    s_chunked_bad (" 5\r\nhello\r\n0\r\n\r\n", "expected a hex chunk size");
    s_chunked_bad ("-1\r\n", "expected a hex chunk size");
    s_chunked_bad ("+5\r\n", "expected a hex chunk size");
    s_chunked_bad ("0x5\r\nhello\r\n", "invalid byte 0x78 in chunk size");
    s_chunked_bad ("5\nhello\r\n0\r\n\r\n", "invalid byte 0x0a in chunk size");
    s_chunked_bad ("5\rhello\r\n0\r\n\r\n", "bare CR");
    s_chunked_bad ("5 \r\nhello\r\n0\r\n\r\n", "whitespace after chunk size");
    s_chunked_bad ("5;a\nhello\r\n", "control character 0x0a in chunk extension");
    s_chunked_bad ("5;a\x01\r\nhello\r\n", "control character 0x01");
    s_chunked_bad ("5\r\nhelloX\r\n0\r\n\r\n", "not followed by CRLF");
    s_chunked_bad ("5\r\nhello\n0\r\n\r\n", "not followed by CRLF");
    s_chunked_bad ("5\r\nhello\r\r0\r\n\r\n", "not followed by CRLF");
    s_chunked_bad ("5\r\nhello\r\n0\r\n\n", "invalid trailer line");
    s_chunked_bad ("0\r\n\r\r", "bare CR in trailers");
    s_chunked_bad ("0\r\nX: a\r\n b\r\n\r\n", "invalid trailer line (byte 0x20)");
    s_chunked_bad ("0\r\nX : a\r\n\r\n", "invalid byte 0x20 in trailer name");
    s_chunked_bad ("0\r\nX: a\x01\r\n\r\n", "control character 0x01 in trailer value");
    s_chunked_bad ("0\r\nX: a\nY: b\r\n\r\n", "control character 0x0a in trailer value");
    s_chunked_bad ("0\r\nX: a\rY: b\r\n\r\n", "bare CR in trailers");
    /* chunk sizes that overflow 63 bits */
    s_chunked_bad ("10000000000000000\r\n", "overflows");
    s_chunked_bad ("ffffffffffffffffff\r\n", "overflows");
    s_chunked_bad ("8000000000000000\r\n", "overflows");
    /* the largest size is accepted (and then the body is simply long) */
    s_sink_t s2;
    assert_int_equal (s_chunked ("7fffffffffffffff\r\nab", 20, 0, &s2, &used, s_err, sizeof s_err),
                      0);
    assert_int_equal (s2.len, 2);

    /* chunk-size line and trailer limits */
    char *text = malloc (HMS_H1_MAX_TRAILER + 64);
    s_chunk_line (text, HMS_H1_MAX_CHUNK_LINE);
    s_chunked_ok (text, strlen (text), strlen (text), "x");
    s_chunk_line (text, HMS_H1_MAX_CHUNK_LINE + 1);
    s_chunked_bad (text, "chunk-size line longer than 4096 bytes");
    s_trailer (text, HMS_H1_MAX_TRAILER);
    s_chunked_ok (text, strlen (text), strlen (text), "");
    s_trailer (text, HMS_H1_MAX_TRAILER + 1);
    s_chunked_bad (text, "trailers larger than 8192 bytes");
    free (text);

    /* truncated bodies */
    assert_int_equal (s_chunked ("5\r\nhel", 6, 0, &s2, &used, s_err, sizeof s_err), 0);
    assert_int_equal (hms_h1_body_init (&b, &head, false, false, s_err, sizeof s_err), 0);
    assert_int_equal (hms_h1_body_feed (&b, "5\r\nhel", 6, &used, NULL, NULL, s_err, sizeof s_err),
                      0);
    assert_int_equal (hms_h1_body_eof (&b, s_err, sizeof s_err), -1);
    s_assert_contains (s_err, "closed inside a chunked body");
    /* after an error the decoder stays dead */
    assert_int_equal (hms_h1_body_init (&b, &head, false, false, s_err, sizeof s_err), 0);
    assert_int_equal (hms_h1_body_feed (&b, "z", 1, &used, NULL, NULL, s_err, sizeof s_err), -1);
    assert_int_equal (hms_h1_body_feed (&b, "0\r\n\r\n", 5, &used, NULL, NULL, s_err, sizeof s_err),
                      -1);
    assert_int_equal (used, 0);
}

/* Classic request smuggling payloads: each is refused, or framed only one way. */
static void test_smuggling (void **state)
{
    (void) state;
    /* CL.TE and TE.CL */
    s_bad ("POST http://a/ HTTP/1.1\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\n\r\nSMUGGLED",
           400, "both");
    s_bad ("POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
           "8\r\nSMUGGLED\r\n0\r\n\r\n",
           400, "both");
    /* TE obfuscation */
    s_bad ("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n",
           501, "only chunked");
    s_bad ("POST http://a/ HTTP/1.1\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n",
           400, "both");
    s_bad (
        "POST http://a/ HTTP/1.1\r\nX: X\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        400, "bare LF");
    s_bad ("POST http://a/ HTTP/1.1\r\nTransfer-Encoding\r\n : chunked\r\n\r\n", 400, "no colon");
    s_bad ("POST http://a/ HTTP/1.1\r\nFoo: bar\r\n Transfer-Encoding: chunked\r\n\r\n", 400,
           "obs-fold");
    s_bad (
        "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: cow\r\n\r\n",
        501, "only chunked");
    /* a chunked body whose chunk size hides a second request */
    s_chunked_bad ("5\r\nhello\r\n0\nGET /admin HTTP/1.1\r\n\r\n", "invalid byte 0x0a");
    s_chunked_bad ("2;\nxx\r\n0\r\n\r\n", "control character 0x0a in chunk extension");
    s_chunked_bad ("5\r\nhello\r\n\r\n0\r\n\r\n", "expected a hex chunk size");
    /* the body ends where the decoder says, and the rest is parsed as the next request */
    const char *body = "3\r\nabc\r\n0\r\n\r\nGET http://internal/ HTTP/1.1\r\n\r\n";
    s_chunked_ok (body, strlen (body), strlen ("3\r\nabc\r\n0\r\n\r\n"), "abc");
}

/* Standard padded base64 of in into out (NUL-terminated). */
static void s_base64 (const char *in, size_t n, char *out)
{
    const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = (uint32_t) (unsigned char) in[i] << 16;
        if (i + 1 < n)
            w |= (uint32_t) (unsigned char) in[i + 1] << 8;
        if (i + 2 < n)
            w |= (unsigned char) in[i + 2];
        out[o++] = abc[w >> 18 & 63];
        out[o++] = abc[w >> 12 & 63];
        out[o++] = i + 1 < n ? abc[w >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? abc[w & 63] : '=';
    }
    out[o] = 0;
}

static void test_basic_auth (void **state)
{
    (void) state;
    char user[64], pass[64];
    const char *v = "Basic dXNlcjpwYXNz"; /* user:pass */
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, sizeof user, pass, sizeof pass), 0);
    assert_string_equal (user, "user");
    assert_string_equal (pass, "pass");
    v = "basic   YWxhZGRpbjpvcGVuIHNlc2FtZQ=="; /* aladdin:open sesame */
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, sizeof user, pass, sizeof pass), 0);
    assert_string_equal (user, "aladdin");
    assert_string_equal (pass, "open sesame");
    v = "BASIC dTo="; /* "u:" */
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, sizeof user, pass, sizeof pass), 0);
    assert_string_equal (user, "u");
    assert_string_equal (pass, "");
    v = "Basic dTphOmI="; /* "u:a:b": the password may hold colons */
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, sizeof user, pass, sizeof pass), 0);
    assert_string_equal (pass, "a:b");
    v = "Basic dXNlcjpww6Rzcw=="; /* user:päss in UTF-8 */
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, sizeof user, pass, sizeof pass), 0);
    assert_string_equal (pass, "p\xc3\xa4ss");
    v = "Basic dTo+Pj4/"; /* "u:>>>?": the last two letters of the alphabet */
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, sizeof user, pass, sizeof pass), 0);
    assert_string_equal (pass, ">>>?");
    /* exactly fits, and one byte short */
    v = "Basic dXNlcjpwYXNz";
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, 5, pass, 5), 0);
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, 4, pass, 5), -1);
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, 5, pass, 4), -1);

    const char *bad[] = {
        "",
        "Basic",
        "Basic ",
        "Bearer dXNlcjpwYXNz",
        "Basicc dXNlcjpwYXNz",
        "Basic\tdXNlcjpwYXNz",
        "Basic dXNlcjpwYXNz ",
        "Basic dTp=",           /* non-canonical "u:": stray bits in the last character */
        "Basic dR==",           /* non-canonical "u" */
        "Basic dXNlcjpwYXM",    /* no padding */
        "Basic dXNlcjpwYX=",    /* bad length */
        "Basic dXNl=jpwYXNz",   /* padding in the middle */
        "Basic dXNlcjpwY===",   /* three pad characters */
        "Basic dXNlcjpw YXNz",  /* space inside */
        "Basic dXNlcjpwYXNz\n", /* control */
        "Basic dXNlcjpwYX-z",   /* base64url alphabet */
        "Basic dXNlcnBhc3M=",   /* "userpass": no colon */
        "Basic OnBhc3M=",       /* ":pass": empty user */
        "Basic dQlzOnA=",       /* "u\ts:p": control in the user */
        "Basic dTpwAA==",       /* "u:p\0": NUL in the password */
        "Basic dTpwfw==",       /* "u:p\x7f" */
        "Basic dTpw",           /* "u:p" ok... */
    };
    for (size_t i = 0; i + 1 < sizeof bad / sizeof bad[0]; i++)
        if (hms_h1_basic_auth (bad[i], strlen (bad[i]), user, sizeof user, pass, sizeof pass) != -1)
            fail_msg ("accepted \"%s\"", bad[i]);
    v = bad[sizeof bad / sizeof bad[0] - 1];
    assert_int_equal (hms_h1_basic_auth (v, strlen (v), user, sizeof user, pass, sizeof pass), 0);

    /* the length limit: 1024 base64 characters (768 bytes), and 1028 */
    char plain[800], value[1100], bigpass[1024];
    memset (plain, 'p', sizeof plain);
    memcpy (plain, "u:", 2);
    strcpy (value, "Basic ");
    s_base64 (plain, 768, value + 6);
    assert_int_equal (strlen (value + 6), 1024);
    assert_int_equal (
        hms_h1_basic_auth (value, strlen (value), user, sizeof user, bigpass, sizeof bigpass), 0);
    assert_int_equal (strlen (bigpass), 766);
    s_base64 (plain, 769, value + 6);
    assert_int_equal (
        hms_h1_basic_auth (value, strlen (value), user, sizeof user, bigpass, sizeof bigpass), -1);
}

static void test_error_response (void **state)
{
    (void) state;
    assert_string_equal (hms_h1_reason (400), "Bad Request");
    assert_string_equal (hms_h1_reason (407), "Proxy Authentication Required");
    assert_string_equal (hms_h1_reason (431), "Request Header Fields Too Large");
    assert_string_equal (hms_h1_reason (502), "Bad Gateway");
    assert_string_equal (hms_h1_reason (505), "HTTP Version Not Supported");
    assert_string_equal (hms_h1_reason (299), "Unknown");

    char out[1024];
    ssize_t n = hms_h1_error_response (out, sizeof out, 400, "header line 3: space before colon");
    assert_int_equal (n, (ssize_t) strlen (out));
    const char *want = "HTTP/1.1 400 Bad Request\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Length: 51\r\n"
                       "Connection: close\r\n"
                       "\r\n"
                       "400 Bad Request: header line 3: space before colon\n";
    assert_string_equal (out, want);

    /* what it writes is a valid response whose body is Content-Length long */
    const int statuses[] = {400, 407, 414, 431, 501, 502, 503, 504, 505, 599};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        n = hms_h1_error_response (out, sizeof out, statuses[i], "bad \r\n\x01\xff thing");
        assert_true (n > 0);
        int status;
        ssize_t h = hms_h1_parse_response (out, (size_t) n, &s_head, &status, s_err, sizeof s_err);
        if (h <= 0)
            fail_msg ("%d: %s", statuses[i], s_err);
        assert_int_equal (s_head.status, statuses[i]);
        assert_int_equal (s_head.content_length, n - h);
        assert_false (hms_h1_keep_alive (&s_head));
        assert_true (hms_h1_has_token (&s_head, "Content-Type", "text/plain; charset=utf-8"));
        s_assert_contains (out + h, "bad ???? thing\n");
        assert_int_equal (hms_h1_find (&s_head, "Proxy-Authenticate") != NULL, statuses[i] == 407);
    }
    n = hms_h1_error_response (out, sizeof out, 502, NULL);
    assert_true (n > 0);
    s_assert_contains (out, "\r\n\r\n502 Bad Gateway\n");
    char longd[2000];
    memset (longd, 'd', sizeof longd - 1);
    longd[sizeof longd - 1] = 0;
    n = hms_h1_error_response (out, sizeof out, 500, longd);
    assert_true (n > 0);
    assert_int_equal (strlen (strchr (out, 'd')), 512 + 1);

    assert_int_equal (hms_h1_error_response (out, sizeof out, 200, "x"), -1);
    assert_int_equal (hms_h1_error_response (out, sizeof out, 600, "x"), -1);
    assert_int_equal (hms_h1_error_response (out, sizeof out, 399, "x"), -1);
    n = hms_h1_error_response (out, sizeof out, 400, "x");
    assert_int_equal (hms_h1_error_response (out, (size_t) n, 400, "x"), -1);
    assert_int_equal (hms_h1_error_response (out, (size_t) n + 1, 400, "x"), n);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_request_basic),
        cmocka_unit_test (test_request_forms),
        cmocka_unit_test (test_request_line_errors),
        cmocka_unit_test (test_header_errors),
        cmocka_unit_test (test_host),
        cmocka_unit_test (test_framing),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_pipelined),
        cmocka_unit_test (test_incremental),
        cmocka_unit_test (test_parse_due),
        cmocka_unit_test (test_response),
        cmocka_unit_test (test_find_and_tokens),
        cmocka_unit_test (test_authority),
        cmocka_unit_test (test_absolute),
        cmocka_unit_test (test_body_framing),
        cmocka_unit_test (test_body_length),
        cmocka_unit_test (test_chunked),
        cmocka_unit_test (test_smuggling),
        cmocka_unit_test (test_basic_auth),
        cmocka_unit_test (test_error_response),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
