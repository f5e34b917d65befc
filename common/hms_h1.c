/* hms_h1: strict zero-copy HTTP/1.1 heads, body framing, targets, Basic credentials and error
 * responses. */
#include "hms_h1.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Outcomes of s_line besides 1 (a whole line) and 0 (more bytes needed). */
enum {
    S_LINE_BARE_LF = -1,
    S_LINE_BARE_CR = -2,
    S_LINE_NUL = -3,
    S_LINE_LONG = -4, /* the line is over HMS_H1_MAX_LINE */
    S_LINE_HEAD = -5, /* the head cannot fit in HMS_H1_MAX_HEAD any more */
};

/* Chunked decoder states (hms_h1_body_t.state). */
enum {
    S_SIZE_FIRST, /* the first hex digit of a chunk size */
    S_SIZE,       /* more hex digits, or what follows them */
    S_SIZE_WS,    /* whitespace after the size: only ';' may follow */
    S_EXT,        /* chunk extensions, ignored up to CR */
    S_SIZE_LF,
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_TRAILER_START, /* the start of a trailer line, or of the final CRLF */
    S_TRAILER_NAME,
    S_TRAILER_VALUE,
    S_TRAILER_LF,
    S_END_LF,
    S_DONE,
    S_FAILED,
};

/* What the parse of one head needs besides the buffer. */
typedef struct {
    bool request;
    int *reply_status;
    char *err;
    size_t errlen;
} s_ctx_t;

static void s_vformat (char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf (err, errlen, fmt, ap);
}

static int s_fail (char *err, size_t errlen, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
static int s_fail (char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    s_vformat (err, errlen, fmt, ap);
    va_end (ap);
    return -1;
}

/* Rejects the head being parsed: requests answer status, responses 502. */
static int s_reject (s_ctx_t *ctx, int status, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
static int s_reject (s_ctx_t *ctx, int status, const char *fmt, ...)
{
    *ctx->reply_status = ctx->request ? status : 502;
    va_list ap;
    va_start (ap, fmt);
    s_vformat (ctx->err, ctx->errlen, fmt, ap);
    va_end (ap);
    return -1;
}

static bool s_digit (unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool s_alpha (unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int s_hex (unsigned char c)
{
    if (s_digit (c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static unsigned char s_lower (unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char) (c + 32) : c;
}

/* token character (RFC 9110 §5.6.2) */
static bool s_tchar (unsigned char c)
{
    return s_digit (c) || s_alpha (c) || (c && memchr ("!#$%&'*+-.^_`|~", c, 15));
}

/* field-value character: VCHAR, obs-text, SP, HTAB */
static bool s_vchar_ws (unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool s_ows (unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Whether s (n bytes) equals the NUL-terminated lit, ASCII case-insensitively; with
 * underscore_is_dash, '_' in s matches '-' in lit. */
static bool s_ieq_as (const char *s, size_t n, const char *lit, bool underscore_is_dash)
{
    size_t i = 0;
    for (; i < n && lit[i]; i++) {
        unsigned char c = underscore_is_dash && s[i] == '_' ? '-' : (unsigned char) s[i];
        if (s_lower (c) != s_lower ((unsigned char) lit[i]))
            return false;
    }
    return i == n && !lit[i];
}

static bool s_ieq (const char *s, size_t n, const char *lit)
{
    return s_ieq_as (s, n, lit, false);
}

/* Finds the line that starts at pos. Returns 1 with *end at its CR, 0 when buf ends first, or
 * an S_LINE_* error. Scans left to right and fails at the first byte that makes the head bad,
 * so a prefix of a buffer gives 0 or the same answer as the whole buffer. */
static int s_line (const char *buf, size_t len, size_t pos, size_t *end)
{
    for (size_t i = pos; i < len; i++) {
        unsigned char c = (unsigned char) buf[i];
        size_t k = i - pos;
        if (c == '\r') {
            /* an empty line ends the head; any other needs the final CRLF after it */
            if (pos + k + 2 + (k ? 2 : 0) > HMS_H1_MAX_HEAD)
                return S_LINE_HEAD;
            if (i + 1 == len)
                return 0;
            if (buf[i + 1] != '\n')
                return S_LINE_BARE_CR;
            *end = i;
            return 1;
        }
        if (c == '\n')
            return S_LINE_BARE_LF;
        if (c == 0)
            return S_LINE_NUL;
        if (k >= HMS_H1_MAX_LINE)
            return S_LINE_LONG;
        if (pos + k + 1 + 4 > HMS_H1_MAX_HEAD)
            return S_LINE_HEAD;
    }
    return 0;
}

/* Rejects a line that s_line refused; what names the line ("request line", "header line 3"). */
static int s_line_error (s_ctx_t *ctx, int r, const char *what, int long_status)
{
    switch (r) {
    case S_LINE_BARE_LF:
        return s_reject (ctx, 400, "%s: bare LF (lines must end in CRLF)", what);
    case S_LINE_BARE_CR:
        return s_reject (ctx, 400, "%s: bare CR (CR not followed by LF)", what);
    case S_LINE_NUL:
        return s_reject (ctx, 400, "%s: NUL byte", what);
    case S_LINE_LONG:
        return s_reject (ctx, long_status, "%s: longer than %d bytes", what, HMS_H1_MAX_LINE);
    default:
        return s_reject (ctx, 431, "%s: head larger than %d bytes", what, HMS_H1_MAX_HEAD);
    }
}

/* Parses "HTTP/x.y" (n bytes). 0 with *minor, or -1 with the status to answer in *status. */
static int s_version (const char *s, size_t n, int *minor, int *status)
{
    if (n != 8 || memcmp (s, "HTTP/", 5) != 0 || !s_digit (s[5]) || s[6] != '.' ||
        !s_digit (s[7])) {
        *status = 400;
        return -1;
    }
    if (s[5] != '1' || (s[7] != '0' && s[7] != '1')) {
        *status = 505;
        return -1;
    }
    *minor = s[7] - '0';
    return 0;
}

/* Checks host (n bytes, no brackets, no port) as a DNS name or dotted quad, and copies it
 * lower-cased into out. */
static int s_host_name (const char *s, size_t n, char *out, size_t outlen, char *err, size_t errlen)
{
    if (n == 0)
        return s_fail (err, errlen, "empty host");
    size_t name_len = s[n - 1] == '.' ? n - 1 : n; /* one trailing dot: a fully qualified name */
    if (name_len == 0)
        return s_fail (err, errlen, "host \".\" is not a name");
    if (name_len > HMS_H1_MAX_HOST)
        return s_fail (err, errlen, "host longer than %d characters", HMS_H1_MAX_HOST);
    size_t label = 0; /* start of the current label, at the end the last one */
    for (size_t i = 0; i < name_len; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c == '.') {
            if (i == label)
                return s_fail (err, errlen, "empty label in host at character %zu", i + 1);
            label = i + 1;
            continue;
        }
        if (c == '@')
            return s_fail (err, errlen, "user info (user@) is not allowed before the host");
        if (!s_alpha (c) && !s_digit (c) && c != '-' && c != '_')
            return s_fail (err, errlen, "invalid character 0x%02x in host at character %zu", c,
                           i + 1);
        if (i - label >= 63)
            return s_fail (err, errlen, "host label longer than 63 characters");
    }
    if (label == name_len)
        return s_fail (err, errlen, "empty label at the end of host");
    size_t last = label;
    /* a numeric last label makes resolvers read the name as an IPv4 address in one of many
     * forms ("1.2.3", "0x7f.1", octal "010"): only the plain dotted quad is allowed */
    bool numeric = true;
    if (name_len - last >= 2 && s[last] == '0' && (s[last + 1] == 'x' || s[last + 1] == 'X')) {
        for (size_t i = last + 2; i < name_len; i++)
            numeric = numeric && s_hex ((unsigned char) s[i]) >= 0;
    } else {
        for (size_t i = last; i < name_len; i++)
            numeric = numeric && s_digit ((unsigned char) s[i]);
    }
    if (numeric) {
        int parts = 0;
        size_t i = 0;
        while (i < name_len) {
            size_t start = i;
            unsigned value = 0;
            while (i < name_len && s_digit ((unsigned char) s[i]) && i - start < 4)
                value = value * 10 + (unsigned) (s[i++] - '0');
            size_t digits = i - start;
            if (digits == 0 || digits > 3 || value > 255 || (digits > 1 && s[start] == '0') ||
                (i < name_len && s[i] != '.'))
                return s_fail (err, errlen,
                               "host looks numeric but is not a dotted-quad IPv4 address");
            parts++;
            if (i < name_len)
                i++;
        }
        if (parts != 4 || n != name_len)
            return s_fail (err, errlen, "host looks numeric but is not a dotted-quad IPv4 address");
    }
    if (n + 1 > outlen)
        return s_fail (err, errlen, "host longer than its buffer (%zu bytes)", outlen);
    for (size_t i = 0; i < n; i++)
        out[i] = (char) s_lower ((unsigned char) s[i]);
    out[n] = 0;
    return 0;
}

/* Parses host[:port] (IPv6 in brackets). With port_required the port must be there;
 * otherwise a missing or empty port gives *port 0. */
static int s_authority (const char *s, size_t len, char *host, size_t hostlen, uint16_t *port,
                        bool port_required, char *err, size_t errlen)
{
    size_t host_end; /* where the host ends (at ':' or len) */
    if (len == 0)
        return s_fail (err, errlen, "empty host");
    if (s[0] == '[') {
        const char *close = memchr (s, ']', len);
        if (!close)
            return s_fail (err, errlen, "IPv6 address without ']'");
        size_t n = (size_t) (close - s) - 1;
        char ip[64];
        if (n == 0 || n >= sizeof ip)
            return s_fail (err, errlen, "invalid IPv6 address in brackets");
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char) s[1 + i];
            if (s_hex (c) < 0 && c != ':' && c != '.')
                return s_fail (err, errlen, "invalid character 0x%02x in IPv6 address", c);
            ip[i] = (char) s_lower (c);
        }
        ip[n] = 0;
        struct in6_addr addr;
        if (inet_pton (AF_INET6, ip, &addr) != 1)
            return s_fail (err, errlen, "invalid IPv6 address in brackets");
        if (n + 1 > hostlen)
            return s_fail (err, errlen, "host longer than its buffer (%zu bytes)", hostlen);
        memcpy (host, ip, n + 1);
        host_end = (size_t) (close - s) + 1;
        if (host_end < len && s[host_end] != ':')
            return s_fail (err, errlen, "unexpected character after ']' (expected ':port')");
    } else {
        const char *colon = memchr (s, ':', len);
        host_end = colon ? (size_t) (colon - s) : len;
        if (colon && memchr (colon + 1, ':', len - host_end - 1))
            return s_fail (err, errlen, "IPv6 address without brackets (expected [addr]:port)");
        if (s_host_name (s, host_end, host, hostlen, err, errlen) != 0)
            return -1;
    }
    *port = 0;
    if (host_end == len) {
        if (port_required)
            return s_fail (err, errlen, "missing port (expected host:port)");
        return 0;
    }
    const char *p = s + host_end + 1;
    size_t n = len - host_end - 1;
    if (n == 0 && !port_required)
        return 0;
    unsigned value = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s_digit ((unsigned char) p[i]) || i >= 5)
            return s_fail (err, errlen, "invalid port (expected 1..65535)");
        value = value * 10 + (unsigned) (p[i] - '0');
    }
    if (n == 0 || value == 0 || value > 65535)
        return s_fail (err, errlen, "invalid port (expected 1..65535)");
    *port = (uint16_t) value;
    return 0;
}

int hms_h1_parse_authority (const char *s, size_t len, char *host, size_t hostlen, uint16_t *port,
                            char *err, size_t errlen)
{
    return s_authority (s, len, host, hostlen, port, true, err, errlen);
}

int hms_h1_parse_absolute (const char *s, size_t len, hms_h1_url_t *url, char *err, size_t errlen)
{
    memset (url, 0, sizeof *url);
    size_t i = 0;
    while (i < len && s[i] != ':')
        i++;
    if (i == len || len - i < 3 || s[i + 1] != '/' || s[i + 2] != '/')
        return s_fail (err, errlen, "not an absolute URL (expected http://host/path)");
    if (s_ieq (s, i, "https"))
        url->https = true;
    else if (!s_ieq (s, i, "http"))
        return s_fail (err, errlen, "unsupported URL scheme (http and https only)");
    size_t a = i + 3, e = a;
    while (e < len && s[e] != '/' && s[e] != '?' && s[e] != '#')
        e++;
    for (size_t k = e; k < len; k++) {
        unsigned char c = (unsigned char) s[k];
        if (c == '#')
            return s_fail (err, errlen, "fragment (#) not allowed in a request target");
        if (c <= 0x20 || c >= 0x7f)
            return s_fail (err, errlen, "invalid character 0x%02x in URL path at byte %zu", c,
                           k + 1);
    }
    if (memchr (s + a, '@', e - a))
        return s_fail (err, errlen, "user info (user@) is not allowed in a URL");
    if (s_authority (s + a, e - a, url->host, sizeof url->host, &url->port, false, err, errlen))
        return -1;
    if (url->port == 0)
        url->port = url->https ? 443 : 80;
    url->authority = s + a;
    url->authority_len = e - a;
    size_t q = e;
    while (q < len && s[q] != '?')
        q++;
    if (q == e) {
        url->path = "/";
        url->path_len = 1;
    } else {
        url->path = s + e;
        url->path_len = q - e;
    }
    url->query = s + q;
    url->query_len = len - q;
    return 0;
}

/* Checks the request line [s, s + n) and fills in method, target, form and version. */
static int s_request_line (s_ctx_t *ctx, const char *s, size_t n, hms_h1_head_t *head)
{
    size_t i = 0;
    while (i < n && s_tchar ((unsigned char) s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ' ') {
        if (i == n)
            return s_reject (ctx, 400, "request line: no request target after the method");
        return s_reject (ctx, 400, "request line: invalid character 0x%02x in method at byte %zu",
                         (unsigned char) s[i], i + 1);
    }
    head->method = s;
    head->method_len = i;
    size_t t = ++i;
    while (i < n && (unsigned char) s[i] > 0x20 && (unsigned char) s[i] < 0x7f)
        i++;
    if (i == t || i == n || s[i] != ' ') {
        if (i == n)
            return s_reject (ctx, 400, "request line: no HTTP version after the target");
        return s_reject (ctx, 400,
                         "request line: invalid character 0x%02x in request target at byte %zu",
                         (unsigned char) s[i], i + 1);
    }
    head->target = s + t;
    head->target_len = i - t;
    int status;
    if (s_version (s + i + 1, n - i - 1, &head->version_minor, &status) != 0)
        return s_reject (ctx, status, "request line: %s",
                         status == 505 ? "HTTP version not supported (1.0 and 1.1 are)"
                                       : "malformed HTTP version (expected HTTP/1.1)");

    const char *tg = head->target;
    size_t tn = head->target_len;
    if (head->method_len == 7 && memcmp (head->method, "CONNECT", 7) == 0) {
        char host[HMS_H1_MAX_HOST + 1], why[160];
        uint16_t port;
        if (s_authority (tg, tn, host, sizeof host, &port, true, why, sizeof why) != 0)
            return s_reject (ctx, 400, "request line: CONNECT target: %s", why);
        head->form = HMS_H1_FORM_AUTHORITY;
    } else if (tg[0] == '/') {
        head->form = HMS_H1_FORM_ORIGIN;
    } else if (tn == 1 && tg[0] == '*') {
        if (head->method_len != 7 || memcmp (head->method, "OPTIONS", 7) != 0)
            return s_reject (ctx, 400, "request line: target * is for OPTIONS only");
        head->form = HMS_H1_FORM_ASTERISK;
    } else {
        size_t k = 0;
        while (k < tn && (s_alpha ((unsigned char) tg[k]) ||
                          (k > 0 && (s_digit ((unsigned char) tg[k]) || tg[k] == '+' ||
                                     tg[k] == '-' || tg[k] == '.'))))
            k++;
        if (k == 0 || k == tn || tg[k] != ':')
            return s_reject (ctx, 400, "request line: target is neither /path nor an absolute URL");
        head->form = HMS_H1_FORM_ABSOLUTE;
    }
    return 0;
}

/* Checks the status line [s, s + n) and fills in version, status and reason. */
static int s_status_line (s_ctx_t *ctx, const char *s, size_t n, hms_h1_head_t *head)
{
    int status = 400;
    if (n < 9 || s[8] != ' ' || s_version (s, 8, &head->version_minor, &status) != 0)
        return s_reject (ctx, 502, "status line: %s",
                         status == 505 ? "HTTP version not supported (1.0 and 1.1 are)"
                                       : "malformed HTTP version (expected HTTP/1.1)");
    if (n < 12 || !s_digit (s[9]) || !s_digit (s[10]) || !s_digit (s[11]) || s[9] < '1' ||
        s[9] > '5' || (n > 12 && s[12] != ' '))
        return s_reject (ctx, 502, "status line: invalid status code (expected 100..599)");
    head->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    head->reason = s + n;
    if (n > 12) {
        for (size_t i = 13; i < n; i++)
            if (!s_vchar_ws ((unsigned char) s[i]))
                return s_reject (ctx, 502,
                                 "status line: control character 0x%02x in reason at byte %zu",
                                 (unsigned char) s[i], i + 1);
        head->reason = s + 13;
        head->reason_len = n - 13;
    }
    return 0;
}

/* Checks header line number lineno, [s, s + n), and appends it to head. */
static int s_header_line (s_ctx_t *ctx, const char *s, size_t n, size_t lineno, hms_h1_head_t *head)
{
    if (s_ows ((unsigned char) s[0]))
        return s_reject (ctx, 400, "header line %zu: %s", lineno,
                         lineno == 1 ? "whitespace before the first header"
                                     : "obs-fold (continuation line) not allowed");
    size_t i = 0;
    while (i < n && s_tchar ((unsigned char) s[i]))
        i++;
    if (i == n)
        return s_reject (ctx, 400, "header line %zu: no colon", lineno);
    if (s[i] != ':') {
        if (s_ows ((unsigned char) s[i]))
            return s_reject (ctx, 400, "header line %zu: whitespace before colon", lineno);
        return s_reject (ctx, 400, "header line %zu: invalid character 0x%02x in name at byte %zu",
                         lineno, (unsigned char) s[i], i + 1);
    }
    if (i == 0)
        return s_reject (ctx, 400, "header line %zu: empty name", lineno);
    if (head->nheaders == HMS_H1_MAX_HEADERS)
        return s_reject (ctx, 431, "header line %zu: more than %d headers", lineno,
                         HMS_H1_MAX_HEADERS);
    size_t v = i + 1, e = n;
    while (v < e && s_ows ((unsigned char) s[v]))
        v++;
    while (e > v && s_ows ((unsigned char) s[e - 1]))
        e--;
    for (size_t k = v; k < e; k++)
        if (!s_vchar_ws ((unsigned char) s[k]))
            return s_reject (ctx, 400,
                             "header line %zu: control character 0x%02x in value at byte %zu",
                             lineno, (unsigned char) s[k], k + 1);
    hms_h1_header_t *h = &head->headers[head->nheaders++];
    h->name = s;
    h->name_len = i;
    h->value = s + v;
    h->value_len = e - v;
    return 0;
}

/* Calls fn on each comma-separated element of h's value, trimmed of whitespace (possibly
 * empty). Stops at and returns the first non-zero return of fn. */
typedef int s_element_fn (const char *s, size_t n, void *arg);
static int s_each_element (const hms_h1_header_t *h, s_element_fn *fn, void *arg)
{
    const char *s = h->value, *end = h->value + h->value_len;
    while (true) {
        const char *comma = memchr (s, ',', (size_t) (end - s));
        const char *e = comma ? comma : end;
        const char *a = s, *b = e;
        while (a < b && s_ows ((unsigned char) *a))
            a++;
        while (b > a && s_ows ((unsigned char) b[-1]))
            b--;
        int r = fn (a, (size_t) (b - a), arg);
        if (r || !comma)
            return r;
        s = comma + 1;
    }
}

/* Content-Length elements: -1 invalid, -2 conflicting with the value so far. */
static int s_on_length (const char *s, size_t n, void *arg)
{
    int64_t *length = arg, value = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!s_digit ((unsigned char) s[i]) || value > (INT64_MAX - (s[i] - '0')) / 10)
            return -1;
        value = value * 10 + (s[i] - '0');
    }
    if (*length >= 0 && *length != value)
        return -2;
    *length = value;
    return 0;
}

/* Transfer-Encoding elements: counts chunked; -1 empty, -2 another coding. */
static int s_on_coding (const char *s, size_t n, void *arg)
{
    int *chunked = arg;
    if (n == 0)
        return -1;
    if (!s_ieq (s, n, "chunked"))
        return -2;
    (*chunked)++;
    return 0;
}

/* The checks that need the whole head: framing, Host. */
static int s_check_head (s_ctx_t *ctx, hms_h1_head_t *head)
{
    int chunked = 0, hosts = 0;
    bool te = false;
    head->content_length = -1;
    for (size_t i = 0; i < head->nheaders; i++) {
        const hms_h1_header_t *h = &head->headers[i];
        size_t lineno = i + 1;
        if (s_ieq (h->name, h->name_len, "Content-Length")) {
            int r = s_each_element (h, s_on_length, &head->content_length);
            if (r == -2)
                return s_reject (ctx, 400, "header line %zu: conflicting Content-Length values",
                                 lineno);
            if (r)
                return s_reject (ctx, 400, "header line %zu: invalid Content-Length", lineno);
        } else if (s_ieq (h->name, h->name_len, "Transfer-Encoding")) {
            te = true;
            int r = s_each_element (h, s_on_coding, &chunked);
            if (r == -2)
                return s_reject (ctx, 501,
                                 "header line %zu: transfer coding not implemented (only chunked)",
                                 lineno);
            if (r)
                return s_reject (ctx, 400, "header line %zu: empty transfer coding", lineno);
        } else if (s_ieq_as (h->name, h->name_len, "Content-Length", true) ||
                   s_ieq_as (h->name, h->name_len, "Transfer-Encoding", true)) {
            return s_reject (
                ctx, 400, "header line %zu: %.*s is ambiguous (some servers read it as %s)", lineno,
                (int) h->name_len, h->name,
                h->name[0] == 'c' || h->name[0] == 'C' ? "Content-Length" : "Transfer-Encoding");
        } else if (ctx->request && s_ieq (h->name, h->name_len, "Host")) {
            char host[HMS_H1_MAX_HOST + 1], why[160];
            uint16_t port;
            if (++hosts > 1)
                return s_reject (ctx, 400, "header line %zu: more than one Host", lineno);
            if (h->value_len > 0 && s_authority (h->value, h->value_len, host, sizeof host, &port,
                                                 false, why, sizeof why) != 0)
                return s_reject (ctx, 400, "header line %zu: invalid Host: %s", lineno, why);
        }
    }
    if (chunked > 1)
        return s_reject (ctx, 400, "Transfer-Encoding: chunked applied more than once");
    if (te && head->content_length >= 0)
        return s_reject (ctx, 400,
                         "both Content-Length and Transfer-Encoding (a request smuggling pattern)");
    if (te && head->version_minor == 0)
        return s_reject (ctx, 400, "Transfer-Encoding in an HTTP/1.0 message");
    head->chunked = chunked == 1;
    if (!ctx->request)
        return 0;
    if (head->form == HMS_H1_FORM_AUTHORITY && (te || head->content_length > 0))
        return s_reject (ctx, 400, "CONNECT request with a body");
    if (hosts == 0 && head->version_minor == 1 &&
        (head->form == HMS_H1_FORM_ORIGIN || head->form == HMS_H1_FORM_ASTERISK))
        return s_reject (ctx, 400, "HTTP/1.1 request without Host");
    return 0;
}

static ssize_t s_parse (s_ctx_t *ctx, const char *buf, size_t len, hms_h1_head_t *head)
{
    head->method = head->target = head->reason = "";
    head->method_len = head->target_len = head->reason_len = 0;
    head->form = HMS_H1_FORM_ORIGIN;
    head->version_minor = 0;
    head->status = 0;
    head->nheaders = 0;
    head->content_length = -1;
    head->chunked = false;
    head->head_len = 0;
    *ctx->reply_status = 0;
    if (ctx->err && ctx->errlen)
        ctx->err[0] = 0;

    const char *what = ctx->request ? "request line" : "status line";
    size_t pos = 0, end = 0, empty = 0;
    int r;
    while ((r = s_line (buf, len, pos, &end)) == 1 && end == pos && ctx->request &&
           empty < HMS_H1_MAX_EMPTY_LINES) {
        pos += 2; /* empty lines before the request line */
        empty++;
    }
    if (r != 1)
        return r == 0 ? 0 : s_line_error (ctx, r, what, ctx->request ? 414 : 431);
    if (end == pos && ctx->request)
        return s_reject (ctx, 400, "more than %d empty lines before the request line",
                         HMS_H1_MAX_EMPTY_LINES);
    if (end == pos)
        return s_reject (ctx, 502, "status line: empty");
    if (ctx->request ? s_request_line (ctx, buf + pos, end - pos, head)
                     : s_status_line (ctx, buf + pos, end - pos, head))
        return -1;
    pos = end + 2;
    for (size_t lineno = 1;; lineno++) {
        r = s_line (buf, len, pos, &end);
        if (r != 1) {
            if (r == 0)
                return 0;
            char where[32];
            snprintf (where, sizeof where, "header line %zu", lineno);
            return s_line_error (ctx, r, where, 431);
        }
        if (end == pos)
            break;
        if (s_header_line (ctx, buf + pos, end - pos, lineno, head) != 0)
            return -1;
        pos = end + 2;
    }
    if (s_check_head (ctx, head) != 0)
        return -1;
    head->head_len = end + 2;
    return (ssize_t) head->head_len;
}

ssize_t hms_h1_parse_request (const char *buf, size_t len, hms_h1_head_t *head, int *reply_status,
                              char *err, size_t errlen)
{
    s_ctx_t ctx = {true, reply_status, err, errlen};
    return s_parse (&ctx, buf, len, head);
}

ssize_t hms_h1_parse_response (const char *buf, size_t len, hms_h1_head_t *head, int *reply_status,
                               char *err, size_t errlen)
{
    s_ctx_t ctx = {false, reply_status, err, errlen};
    return s_parse (&ctx, buf, len, head);
}

bool hms_h1_parse_due (const char *buf, size_t old_len, size_t len)
{
    if (old_len == 0 || len < old_len || len / 4096 != old_len / 4096)
        return true;
    return memchr (buf + old_len, '\n', len - old_len) != NULL;
}

const hms_h1_header_t *hms_h1_find (const hms_h1_head_t *head, const char *name)
{
    for (size_t i = 0; i < head->nheaders; i++)
        if (s_ieq (head->headers[i].name, head->headers[i].name_len, name))
            return &head->headers[i];
    return NULL;
}

static int s_on_token (const char *s, size_t n, void *arg)
{
    const char *const *token = arg;
    return n > 0 && s_ieq (s, n, *token) ? 1 : 0;
}

bool hms_h1_has_token (const hms_h1_head_t *head, const char *name, const char *token)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        const hms_h1_header_t *h = &head->headers[i];
        if (s_ieq (h->name, h->name_len, name) && s_each_element (h, s_on_token, &token))
            return true;
    }
    return false;
}

bool hms_h1_keep_alive (const hms_h1_head_t *head)
{
    if (hms_h1_has_token (head, "Connection", "close"))
        return false;
    return head->version_minor == 1 || hms_h1_has_token (head, "Connection", "keep-alive");
}

int hms_h1_body_init (hms_h1_body_t *b, const hms_h1_head_t *head, bool is_response,
                      bool request_was_head, char *err, size_t errlen)
{
    memset (b, 0, sizeof *b);
    b->kind = HMS_H1_BODY_NONE;
    b->state = S_DONE;
    if (head->chunked && head->content_length >= 0)
        return s_fail (err, errlen, "body: head has both Content-Length and chunked");
    if (is_response &&
        (request_was_head || head->status < 200 || head->status == 204 || head->status == 304))
        return 0;
    if (head->chunked) {
        b->kind = HMS_H1_BODY_CHUNKED;
        b->state = S_SIZE_FIRST;
    } else if (head->content_length > 0) {
        b->kind = HMS_H1_BODY_LENGTH;
        b->state = S_DATA;
        b->remaining = (uint64_t) head->content_length;
    } else if (is_response && head->content_length < 0) {
        b->kind = HMS_H1_BODY_CLOSE;
        b->state = S_DATA;
    }
    return 0;
}

/* Fails the body for good. */
static int s_body_fail (hms_h1_body_t *b, char *err, size_t errlen, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));
static int s_body_fail (hms_h1_body_t *b, char *err, size_t errlen, const char *fmt, ...)
{
    b->state = S_FAILED;
    va_list ap;
    va_start (ap, fmt);
    s_vformat (err, errlen, fmt, ap);
    va_end (ap);
    return -1;
}

/* Steps the chunked decoder over one framing byte c. 0, 1 at the end of the body, or -1. */
static int s_chunk_byte (hms_h1_body_t *b, unsigned char c, char *err, size_t errlen)
{
    if (b->state >= S_TRAILER_START && ++b->trailer > HMS_H1_MAX_TRAILER)
        return s_body_fail (b, err, errlen, "chunked body: trailers larger than %d bytes",
                            HMS_H1_MAX_TRAILER);
    if (b->state <= S_SIZE_LF && ++b->line > HMS_H1_MAX_CHUNK_LINE)
        return s_body_fail (b, err, errlen, "chunked body: chunk-size line longer than %d bytes",
                            HMS_H1_MAX_CHUNK_LINE);
    int d = s_hex (c);
    switch (b->state) {
    case S_SIZE_FIRST:
        if (d < 0)
            return s_body_fail (b, err, errlen,
                                "chunked body: expected a hex chunk size, got 0x%02x", c);
        b->remaining = (uint64_t) d;
        b->state = S_SIZE;
        return 0;
    case S_SIZE:
        if (d >= 0) {
            if (b->remaining > (uint64_t) INT64_MAX >> 4)
                return s_body_fail (b, err, errlen, "chunked body: chunk size overflows");
            b->remaining = b->remaining << 4 | (uint64_t) d;
        } else if (c == ';') {
            b->state = S_EXT;
        } else if (s_ows (c)) {
            b->state = S_SIZE_WS;
        } else if (c == '\r') {
            b->state = S_SIZE_LF;
        } else {
            return s_body_fail (b, err, errlen, "chunked body: invalid byte 0x%02x in chunk size",
                                c);
        }
        return 0;
    case S_SIZE_WS:
        if (c == ';')
            b->state = S_EXT;
        else if (!s_ows (c))
            return s_body_fail (b, err, errlen,
                                "chunked body: whitespace after chunk size not followed by ';'");
        return 0;
    case S_EXT:
        if (c == '\r')
            b->state = S_SIZE_LF;
        else if (!s_vchar_ws (c))
            return s_body_fail (b, err, errlen,
                                "chunked body: control character 0x%02x in chunk extension", c);
        return 0;
    case S_SIZE_LF:
        if (c != '\n')
            return s_body_fail (b, err, errlen, "chunked body: bare CR in chunk-size line");
        b->line = 0;
        b->state = b->remaining ? S_DATA : S_TRAILER_START;
        return 0;
    case S_DATA_CR:
    case S_DATA_LF:
        if (c != (b->state == S_DATA_CR ? '\r' : '\n'))
            return s_body_fail (b, err, errlen, "chunked body: chunk data not followed by CRLF");
        b->state = b->state == S_DATA_CR ? S_DATA_LF : S_SIZE_FIRST;
        return 0;
    case S_TRAILER_START:
        if (c == '\r')
            b->state = S_END_LF;
        else if (s_tchar (c))
            b->state = S_TRAILER_NAME;
        else
            return s_body_fail (b, err, errlen, "chunked body: invalid trailer line (byte 0x%02x)",
                                c);
        return 0;
    case S_TRAILER_NAME:
        if (c == ':')
            b->state = S_TRAILER_VALUE;
        else if (!s_tchar (c))
            return s_body_fail (b, err, errlen, "chunked body: invalid byte 0x%02x in trailer name",
                                c);
        return 0;
    case S_TRAILER_VALUE:
        if (c == '\r')
            b->state = S_TRAILER_LF;
        else if (!s_vchar_ws (c))
            return s_body_fail (b, err, errlen,
                                "chunked body: control character 0x%02x in trailer value", c);
        return 0;
    case S_TRAILER_LF:
    case S_END_LF:
        if (c != '\n')
            return s_body_fail (b, err, errlen, "chunked body: bare CR in trailers");
        b->state = b->state == S_END_LF ? S_DONE : S_TRAILER_START;
        return b->state == S_DONE ? 1 : 0;
    default:
        return s_body_fail (b, err, errlen, "chunked body: decoder in a bad state");
    }
}

int hms_h1_body_feed (hms_h1_body_t *b, const char *in, size_t len, size_t *consumed,
                      hms_h1_body_out_fn *out, void *arg, char *err, size_t errlen)
{
    size_t i = 0;
    int r = 0;
    *consumed = 0;
    if (b->state == S_FAILED)
        return s_fail (err, errlen, "body: decoder failed before");
    while (i < len && b->state != S_DONE) {
        if (b->state == S_DATA) {
            size_t n = len - i;
            if (b->kind != HMS_H1_BODY_CLOSE && n > b->remaining)
                n = (size_t) b->remaining;
            if (out && out (arg, in + i, n) != 0) {
                *consumed = i;
                return s_body_fail (b, err, errlen, "body: output refused the data");
            }
            i += n;
            if (b->kind == HMS_H1_BODY_CLOSE)
                continue;
            b->remaining -= n;
            if (b->remaining == 0)
                b->state = b->kind == HMS_H1_BODY_LENGTH ? S_DONE : S_DATA_CR;
            continue;
        }
        r = s_chunk_byte (b, (unsigned char) in[i++], err, errlen);
        if (r < 0) {
            *consumed = i;
            return -1;
        }
    }
    *consumed = i;
    return b->state == S_DONE ? 1 : 0;
}

int hms_h1_body_eof (hms_h1_body_t *b, char *err, size_t errlen)
{
    if (b->state == S_DONE)
        return 0;
    if (b->kind == HMS_H1_BODY_CLOSE && b->state == S_DATA) {
        b->state = S_DONE;
        return 0;
    }
    if (b->state == S_FAILED)
        return s_fail (err, errlen, "body: decoder failed before");
    if (b->kind == HMS_H1_BODY_LENGTH)
        return s_body_fail (b, err, errlen, "body: connection closed %llu bytes before its end",
                            (unsigned long long) b->remaining);
    return s_body_fail (b, err, errlen, "body: connection closed inside a chunked body");
}

/* Value of a base64 character, -1 for anything else. */
static int s_b64 (unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (s_digit (c))
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict base64 (RFC 4648 §4, padded, canonical). Returns the decoded length or -1. */
static ssize_t s_base64 (const char *s, size_t n, unsigned char *out, size_t outlen)
{
    if (n == 0 || n % 4 != 0)
        return -1;
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        bool last = i + 4 == n;
        int v[4];
        for (int k = 0; k < 4; k++) {
            bool padded = last && k >= 4 - (int) pad;
            v[k] = padded ? 0 : s_b64 ((unsigned char) s[i + k]);
            if (v[k] < 0)
                return -1;
        }
        uint32_t w =
            (uint32_t) v[0] << 18 | (uint32_t) v[1] << 12 | (uint32_t) v[2] << 6 | (uint32_t) v[3];
        size_t take = last ? 3 - pad : 3;
        if ((last && pad == 1 && (v[2] & 0x3)) || (last && pad == 2 && (v[1] & 0xf)))
            return -1; /* bits past the end: not the canonical encoding */
        if (o + take > outlen)
            return -1;
        for (size_t k = 0; k < take; k++)
            out[o++] = (unsigned char) (w >> (16 - 8 * k));
    }
    return (ssize_t) o;
}

int hms_h1_basic_auth (const char *value, size_t len, char *user, size_t ulen, char *pass,
                       size_t plen)
{
    if (len < 6 || !s_ieq (value, 5, "Basic") || value[5] != ' ')
        return -1;
    size_t i = 6;
    while (i < len && value[i] == ' ')
        i++;
    if (len - i > 1024)
        return -1;
    unsigned char plain[768];
    ssize_t n = s_base64 (value + i, len - i, plain, sizeof plain);
    int rc = -1;
    const unsigned char *colon = n > 0 ? memchr (plain, ':', (size_t) n) : NULL;
    if (colon) {
        size_t u = (size_t) (colon - plain), p = (size_t) n - u - 1;
        bool clean = u > 0;
        for (ssize_t k = 0; k < n; k++)
            clean = clean && plain[k] >= 0x20 && plain[k] != 0x7f;
        if (clean && u < ulen && p < plen) {
            memcpy (user, plain, u);
            user[u] = 0;
            memcpy (pass, colon + 1, p);
            pass[p] = 0;
            rc = 0;
        }
    }
    explicit_bzero (plain, sizeof plain);
    return rc;
}

const char *hms_h1_reason (int status)
{
    static const struct {
        int status;
        const char *reason;
    } s_reasons[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < sizeof s_reasons / sizeof s_reasons[0]; i++)
        if (s_reasons[i].status == status)
            return s_reasons[i].reason;
    return "Unknown";
}

ssize_t hms_h1_error_response (char *out, size_t outlen, int status, const char *detail)
{
    if (status < 400 || status > 599)
        return -1;
    const char *reason = hms_h1_reason (status);
    char body[640];
    int bn = snprintf (body, sizeof body, "%d %s", status, reason);
    if (detail && *detail) {
        size_t n = strnlen (detail, 512);
        body[bn++] = ':';
        body[bn++] = ' ';
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char) detail[i];
            body[bn++] = c >= 0x20 && c < 0x7f ? (char) c : '?';
        }
    }
    body[bn++] = '\n';
    body[bn] = 0;
    int n = snprintf (out, outlen,
                      "HTTP/1.1 %d %s\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Length: %d\r\n"
                      "Connection: close\r\n"
                      "%s"
                      "\r\n"
                      "%s",
                      status, reason, bn,
                      status == 407 ? "Proxy-Authenticate: Basic realm=\"hermes\"\r\n" : "", body);
    if (n < 0 || (size_t) n >= outlen)
        return -1;
    return n;
}
