/* libFuzzer target for hms_h1: heads, bodies, targets, credentials and error responses, with
 * the invariants that must hold for any input (pointers inside the head, prefixes agree with
 * the whole, piecewise decoding equals one-shot decoding). Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon common/hms_h1.c \
 *         common/fuzz_hms_h1.c -o fuzz_hms_h1 */
#include "hms_h1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf (stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort ();                                                                              \
        }                                                                                          \
    } while (0)

typedef struct {
    char *data;
    size_t len, cap;
} s_buf_t;

static int s_on_data (void *arg, const char *data, size_t len)
{
    s_buf_t *b = arg;
    S_CHECK (len > 0);
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->data = realloc (b->data, b->cap);
        S_CHECK (b->data);
    }
    memcpy (b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static bool s_inside (const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && p + n <= base + len;
}

static void s_check_head (const hms_h1_head_t *h, const char *buf, size_t r, bool request)
{
    S_CHECK (h->head_len == r);
    S_CHECK (h->nheaders <= HMS_H1_MAX_HEADERS);
    S_CHECK (r <= HMS_H1_MAX_HEAD);
    S_CHECK (h->version_minor == 0 || h->version_minor == 1);
    S_CHECK (!(h->chunked && h->content_length >= 0));
    if (request) {
        S_CHECK (s_inside (h->method, h->method_len, buf, r) && h->method_len > 0);
        S_CHECK (s_inside (h->target, h->target_len, buf, r) && h->target_len > 0);
    } else {
        S_CHECK (h->status >= 100 && h->status <= 599);
        S_CHECK (s_inside (h->reason, h->reason_len, buf, r));
    }
    for (size_t i = 0; i < h->nheaders; i++) {
        const hms_h1_header_t *f = &h->headers[i];
        S_CHECK (f->name_len > 0 && s_inside (f->name, f->name_len, buf, r));
        S_CHECK (s_inside (f->value, f->value_len, buf, r));
        for (size_t k = 0; k < f->value_len; k++)
            S_CHECK (f->value[k] != '\r' && f->value[k] != '\n' && f->value[k] != 0);
        S_CHECK (hms_h1_find (h, "x") == NULL || hms_h1_find (h, "x")->name_len == 1);
    }
    (void) hms_h1_has_token (h, "Connection", "close");
    (void) hms_h1_keep_alive (h);
}

/* Parses buf, then every few prefixes of it in exactly sized copies: each gives 0 or the same
 * answer as the whole. Returns the whole's answer. */
static ssize_t s_parse (bool request, const char *buf, size_t len, hms_h1_head_t *head)
{
    static hms_h1_head_t part;
    int status, pstatus;
    char err[256], perr[256];
    ssize_t r = request ? hms_h1_parse_request (buf, len, head, &status, err, sizeof err)
                        : hms_h1_parse_response (buf, len, head, &status, err, sizeof err);
    S_CHECK (r >= -1 && r <= (ssize_t) len);
    if (r < 0) {
        S_CHECK (err[0] != 0);
        if (request)
            S_CHECK (status == 400 || status == 414 || status == 431 || status == 501 ||
                     status == 505);
        else
            S_CHECK (status == 502);
    } else {
        S_CHECK (status == 0);
        if (r > 0)
            s_check_head (head, buf, (size_t) r, request);
    }
    size_t cuts[] = {len / 2, len ? len - 1 : 0, len / 3, r > 0 ? (size_t) r - 1 : 0};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        size_t k = cuts[c];
        char *copy = malloc (k ? k : 1);
        memcpy (copy, buf, k);
        ssize_t pr = request ? hms_h1_parse_request (copy, k, &part, &pstatus, perr, sizeof perr)
                             : hms_h1_parse_response (copy, k, &part, &pstatus, perr, sizeof perr);
        if (pr == -1)
            S_CHECK (r == -1 && pstatus == status && strcmp (err, perr) == 0);
        else if (pr > 0)
            S_CHECK (pr == r && part.nheaders == head->nheaders);
        free (copy);
    }
    /* a parse that is not due cannot complete the head */
    size_t k1 = len / 2, k2 = len / 2 + (len ? buf[0] & 15 : 0);
    if (request && k2 <= len && !hms_h1_parse_due (buf, k1, k2) &&
        hms_h1_parse_request (buf, k1, &part, &pstatus, NULL, 0) == 0)
        S_CHECK (hms_h1_parse_request (buf, k2, &part, &pstatus, NULL, 0) <= 0);
    return r;
}

/* Feeds in to a decoder set up like b, once whole and once in pieces of step bytes; both must
 * agree on the result, the bytes consumed and the payload. */
static void s_feed (const hms_h1_body_t *b0, const char *in, size_t len, size_t step)
{
    hms_h1_body_t one = *b0, pieces = *b0;
    s_buf_t out1 = {0}, out2 = {0};
    char err[256];
    size_t used1 = 0, used2 = 0;
    int r1 = hms_h1_body_feed (&one, in, len, &used1, s_on_data, &out1, err, sizeof err);
    S_CHECK (r1 >= -1 && r1 <= 1 && used1 <= len);
    int r2 = 0;
    for (size_t off = 0; off < len && r2 == 0;) {
        size_t n = len - off < step ? len - off : step;
        char *piece = malloc (n);
        memcpy (piece, in + off, n);
        size_t c = 0;
        r2 = hms_h1_body_feed (&pieces, piece, n, &c, s_on_data, &out2, err, sizeof err);
        free (piece);
        S_CHECK (c <= n);
        used2 += c;
        off += n;
        if (r2 == 0)
            S_CHECK (c == n);
    }
    if (len == 0)
        r2 = r1;
    S_CHECK (r1 == r2);
    S_CHECK (out1.len == out2.len);
    S_CHECK (out1.len == 0 || memcmp (out1.data, out2.data, out1.len) == 0);
    S_CHECK (out1.len <= used1 || b0->kind == HMS_H1_BODY_NONE);
    if (r1 >= 0)
        S_CHECK (used1 == used2);
    if (r1 == 1 && one.kind == HMS_H1_BODY_CHUNKED) {
        /* the body as framed is complete on its own: feeding exactly it ends it */
        hms_h1_body_t again = *b0;
        size_t c;
        S_CHECK (hms_h1_body_feed (&again, in, used1, &c, NULL, NULL, err, sizeof err) == 1);
        S_CHECK (c == used1);
    }
    (void) hms_h1_body_eof (&one, err, sizeof err);
    free (out1.data);
    free (out2.data);
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static hms_h1_head_t head;
    const char *buf = (const char *) data;
    char err[256];
    size_t step = size ? (size_t) data[0] % 7 + 1 : 1;

    /* the input as a request, then its body */
    ssize_t r = s_parse (true, buf, size, &head);
    if (r > 0) {
        if (head.form == HMS_H1_FORM_AUTHORITY) {
            char host[HMS_H1_MAX_HOST + 1];
            uint16_t port;
            S_CHECK (hms_h1_parse_authority (head.target, head.target_len, host, sizeof host, &port,
                                             err, sizeof err) == 0);
            S_CHECK (port > 0 && strlen (host) <= HMS_H1_MAX_HOST);
        }
        if (head.form == HMS_H1_FORM_ABSOLUTE) {
            hms_h1_url_t url;
            if (hms_h1_parse_absolute (head.target, head.target_len, &url, err, sizeof err) == 0)
                S_CHECK (url.port > 0 && url.path_len > 0 && url.path[0] == '/');
        }
        const hms_h1_header_t *auth = hms_h1_find (&head, "Proxy-Authorization");
        if (auth) {
            char user[256], pass[256];
            if (hms_h1_basic_auth (auth->value, auth->value_len, user, sizeof user, pass,
                                   sizeof pass) == 0)
                S_CHECK (user[0] != 0);
        }
        hms_h1_body_t b;
        S_CHECK (hms_h1_body_init (&b, &head, false, false, err, sizeof err) == 0);
        S_CHECK (b.kind != HMS_H1_BODY_CLOSE);
        s_feed (&b, buf + r, size - (size_t) r, step);
    }

    /* the input as a response, then its body */
    r = s_parse (false, buf, size, &head);
    if (r > 0) {
        hms_h1_body_t b;
        S_CHECK (hms_h1_body_init (&b, &head, true, size & 1, err, sizeof err) == 0);
        s_feed (&b, buf + r, size - (size_t) r, step);
    }

    /* the input as a chunked body */
    hms_h1_head_t chunked = {.content_length = -1, .chunked = true};
    hms_h1_body_t b;
    S_CHECK (hms_h1_body_init (&b, &chunked, false, false, err, sizeof err) == 0);
    s_feed (&b, buf, size, step);

    /* the input as a CONNECT target, an absolute URL, credentials, an error detail */
    char host[HMS_H1_MAX_HOST + 1];
    uint16_t port;
    if (hms_h1_parse_authority (buf, size, host, sizeof host, &port, err, sizeof err) == 0)
        S_CHECK (port > 0 && strlen (host) > 0);
    hms_h1_url_t url;
    if (hms_h1_parse_absolute (buf, size, &url, err, sizeof err) == 0) {
        S_CHECK (url.port > 0 && strlen (url.host) > 0 && url.path[0] == '/');
        S_CHECK (s_inside (url.authority, url.authority_len, buf, size));
        S_CHECK (url.query_len == 0 || s_inside (url.query, url.query_len, buf, size));
    }
    char user[64], pass[64];
    if (hms_h1_basic_auth (buf, size, user, sizeof user, pass, sizeof pass) == 0)
        S_CHECK (strlen (user) > 0 && strlen (user) < sizeof user);
    char *detail = malloc (size + 1), out[2048];
    memcpy (detail, buf, size);
    detail[size] = 0;
    int status = 400 + (size ? data[size - 1] % 200 : 0);
    ssize_t n = hms_h1_error_response (out, sizeof out, status, detail);
    S_CHECK (n > 0);
    int reply;
    r = hms_h1_parse_response (out, (size_t) n, &head, &reply, err, sizeof err);
    S_CHECK (r > 0 && head.status == status && head.content_length == n - r);
    free (detail);
    return 0;
}
