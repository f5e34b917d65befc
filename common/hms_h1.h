/* hms_h1: HTTP/1.1 for the proxies (RFC 9110/9112): a strict, zero-copy parser of request and
 * response heads that refuses anything two implementations could read two ways (request
 * smuggling), the body framing and chunked decoder, CONNECT and absolute-form targets, Basic
 * proxy credentials, and the proxy's own error responses.
 *
 * Heads are parsed from the start of the caller's buffer on every call, which keeps no state
 * between calls: when a parse returns 0, call again with the longer buffer once
 * hms_h1_parse_due says so. Every line must end in CRLF: a bare LF or bare CR is an error, never
 * a line end. Nothing is allocated; the pointers of a parsed head point into the caller's buffer
 * and live as long as it does. */
#ifndef HMS_H1_H_INCLUDED
#define HMS_H1_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HMS_H1_MAX_HEADERS     100   /* header lines in one head */
#define HMS_H1_MAX_LINE        8192  /* bytes in one line, CRLF not counted */
#define HMS_H1_MAX_HEAD        65536 /* bytes in one head, through the final CRLFCRLF */
#define HMS_H1_MAX_CHUNK_LINE  4096  /* bytes in one chunk-size line with its extensions and CRLF */
#define HMS_H1_MAX_TRAILER     8192  /* bytes in the trailer section with its final CRLF */
#define HMS_H1_MAX_HOST        253   /* characters in a host name (the buffer needs one more) */
#define HMS_H1_MAX_EMPTY_LINES 10    /* empty lines skipped before a request line */

typedef struct {
    const char *name;
    size_t name_len;
    const char *value; /* without leading and trailing whitespace */
    size_t value_len;
} hms_h1_header_t;

/* The four forms of request-target (RFC 9112 §3.2). */
typedef enum {
    HMS_H1_FORM_ORIGIN,    /* "/path?query" */
    HMS_H1_FORM_ABSOLUTE,  /* "http://host/path": what a forward proxy gets */
    HMS_H1_FORM_AUTHORITY, /* "host:port": CONNECT only, always checked */
    HMS_H1_FORM_ASTERISK,  /* "*": OPTIONS only */
} hms_h1_form_t;

/* A parsed head. Its pointers point into the parsed buffer (or to "" for parts it lacks). */
typedef struct {
    const char *method; /* requests */
    size_t method_len;
    const char *target; /* requests */
    size_t target_len;
    hms_h1_form_t form; /* requests */
    int version_minor;  /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
    int status;         /* responses: 100..599 */
    const char *reason; /* responses; may be empty */
    size_t reason_len;
    hms_h1_header_t headers[HMS_H1_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length; /* the one Content-Length value; -1 when there is none */
    bool chunked;           /* Transfer-Encoding: chunked (never together with content_length) */
    size_t head_len;        /* bytes through the final CRLFCRLF; the body starts here */
} hms_h1_head_t;

/* Parses the request head at the start of buf. Returns the head length (> 0) when the head is
 * complete, with head filled in and anything after it (a body, the next pipelined request)
 * untouched; 0 when buf holds a correct but incomplete head still under the limits (call again
 * with more bytes); -1 when the head is bad, with *reply_status set to the status to answer
 * (400 bad syntax or framing, 414 request line too long, 431 head too large, 501 transfer
 * coding other than chunked, 505 HTTP version other than 1.0/1.1) and err saying what and
 * where. *reply_status is 0 unless -1 is returned. Up to HMS_H1_MAX_EMPTY_LINES empty lines
 * before the request line are skipped (RFC 9112 §2.2) and count in the head length.
 * Refused, besides bad syntax: whitespace before a colon, obs-fold, NUL and other controls,
 * more than one Host or an invalid one, a missing Host in an HTTP/1.1 origin-form or
 * asterisk-form request (absolute-form and CONNECT may omit it), conflicting or invalid
 * Content-Length, Content-Length with Transfer-Encoding, Transfer-Encoding in HTTP/1.0,
 * a Content-Length or Transfer-Encoding on CONNECT, a CONNECT target that is not host:port,
 * "Content_Length" / "Transfer_Encoding" (read as framing by some servers).
 * A Content-Length repeated with the same value is accepted and reported once in
 * head->content_length: a proxy forwards that value, not the original lines. With an
 * absolute-form target, route by the target and rewrite Host when forwarding (RFC 9112
 * §3.2.2); Host is only checked for syntax here. */
ssize_t hms_h1_parse_request (const char *buf, size_t len, hms_h1_head_t *head, int *reply_status,
                              char *err, size_t errlen);

/* Parses the response head (status line and headers) at the start of buf, with the rules of
 * hms_h1_parse_request; the status code must be 100..599. Returns as hms_h1_parse_request; on
 * -1, *reply_status is 502 whatever the fault (the proxy answers its own client 502 Bad
 * Gateway). The reason phrase may be absent ("HTTP/1.1 200\r\n"). */
ssize_t hms_h1_parse_response (const char *buf, size_t len, hms_h1_head_t *head, int *reply_status,
                               char *err, size_t errlen);

/* Whether a head that parsed to 0 with old_len bytes needs a new parse now that buf holds len
 * bytes: when old_len is 0, when the new bytes hold a LF (a line may have ended), or when len
 * crossed a multiple of 4096 (a limit may have been passed). Otherwise a parse would return 0
 * again or an error that the next due parse reports as well. Parsing only when due bounds the
 * work for a head that arrives a byte at a time to (lines + 16) parses, where parsing on every
 * read costs one parse per read. */
bool hms_h1_parse_due (const char *buf, size_t old_len, size_t len);

/* The first header called name (case-insensitive), or NULL. */
const hms_h1_header_t *hms_h1_find (const hms_h1_head_t *head, const char *name);

/* Whether any header called name holds token as one of its comma-separated elements
 * (case-insensitive), e.g. ("Connection", "close"). */
bool hms_h1_has_token (const hms_h1_head_t *head, const char *name, const char *token);

/* Whether the connection stays open after this message: HTTP/1.1 unless "Connection: close",
 * HTTP/1.0 only with "Connection: keep-alive". */
bool hms_h1_keep_alive (const hms_h1_head_t *head);

/* Parses a CONNECT target "host:port": a DNS name ("example.com:443"), a dotted-quad IPv4
 * address ("127.0.0.1:8080") or a bracketed IPv6 address ("[2001:db8::1]:443"). The port is
 * required, 1..65535. A name holds letters, digits, '-', '_' and '.', 1..63 characters a label,
 * at most HMS_H1_MAX_HOST; a name whose last label is numeric must be a dotted quad (no
 * "1.2.3", "0x7f.1", "010.0.0.1"). Copies the host, lower-cased, NUL-terminated and without
 * brackets, into host (hostlen bytes). 0, or -1 with err. */
int hms_h1_parse_authority (const char *s, size_t len, char *host, size_t hostlen, uint16_t *port,
                            char *err, size_t errlen);

/* An absolute-form target, split. */
typedef struct {
    bool https;                     /* scheme https (the proxy decides what to do with it) */
    char host[HMS_H1_MAX_HOST + 1]; /* lower-cased, NUL-terminated, without brackets */
    uint16_t port;                  /* as written, or 80 (http) / 443 (https) */
    const char *authority;          /* as written, into the parsed string */
    size_t authority_len;
    const char *path; /* from the first '/' up to '?' or the end; "/" (static) when empty */
    size_t path_len;
    const char *query; /* from '?' (included) to the end; length 0 when there is none */
    size_t query_len;
} hms_h1_url_t;

/* Parses "http://host[:port][/path][?query]" (or https). The origin-form to forward is path
 * followed by query. The host follows the rules of hms_h1_parse_authority; the port may be
 * omitted (or empty). Refused: other schemes, user info ("user@host"), fragments, controls and
 * spaces. 0, or -1 with err. */
int hms_h1_parse_absolute (const char *s, size_t len, hms_h1_url_t *url, char *err, size_t errlen);

/* Body framing (RFC 9112 §6.3). */
typedef enum {
    HMS_H1_BODY_NONE,    /* no body, or an empty one */
    HMS_H1_BODY_LENGTH,  /* Content-Length bytes */
    HMS_H1_BODY_CHUNKED, /* chunked transfer coding */
    HMS_H1_BODY_CLOSE,   /* responses only: everything until the server closes */
} hms_h1_body_kind_t;

/* The decoder of one message body. A plain value on the caller's stack or in its connection:
 * read kind; the other members belong to hms_h1_body_*. */
typedef struct hms_h1_body {
    hms_h1_body_kind_t kind;
    int state;
    uint64_t remaining; /* of the body (LENGTH) or of the current chunk (CHUNKED) */
    size_t line;        /* bytes of the current chunk-size line */
    size_t trailer;     /* bytes of the trailer section */
} hms_h1_body_t;

/* Payload bytes out of hms_h1_body_feed. Returns 0, or -1 to stop the feed (which then
 * returns -1). */
typedef int hms_h1_body_out_fn (void *arg, const char *data, size_t len);

/* Decides the framing of the body after head, which comes from hms_h1_parse_request
 * (is_response false) or hms_h1_parse_response (is_response true; request_was_head when it
 * answers a HEAD request). Responses to HEAD, 1xx, 204 and 304 have no body; a response with
 * neither Content-Length nor chunked runs until close; a request without either has none.
 * Do not call it for a 2xx answer to CONNECT: that connection becomes a tunnel. 0, or -1 with
 * err when head cannot come from the parser (Content-Length and chunked both set). */
int hms_h1_body_init (hms_h1_body_t *b, const hms_h1_head_t *head, bool is_response,
                      bool request_was_head, char *err, size_t errlen);

/* Feeds bytes that follow the head. Decodes them: out (may be NULL) gets the payload, without
 * chunk framing and trailers. *consumed is always the number of input bytes that belong to
 * the body, so a proxy that forwards the body as it came (chunked included) forwards
 * in[0 .. *consumed) and may pass out NULL; bytes after the body (the next pipelined message)
 * are not consumed. Returns 1 when the body is complete (and on every call after), 0 when
 * more bytes are needed (always, for HMS_H1_BODY_CLOSE), -1 on malformed chunked framing
 * (bad or overflowing chunk size, chunk-size line over HMS_H1_MAX_CHUNK_LINE, missing CRLF,
 * bad trailer, trailers over HMS_H1_MAX_TRAILER) or when out refused, with err; after -1 the
 * body is dead and every call returns -1. */
int hms_h1_body_feed (hms_h1_body_t *b, const char *in, size_t len, size_t *consumed,
                      hms_h1_body_out_fn *out, void *arg, char *err, size_t errlen);

/* Tells the decoder that the connection closed. 0 when that ends the body correctly (the body
 * was complete, or runs until close), -1 with err when the body is truncated. */
int hms_h1_body_eof (hms_h1_body_t *b, char *err, size_t errlen);

/* Decodes a Proxy-Authorization (or Authorization) value "Basic base64(user:pass)": scheme
 * case-insensitive, then one or more spaces, then canonical base64 (padding required, no
 * stray bits) of at most 1024 characters; the user must not be empty; neither part may hold
 * control characters. Copies both parts NUL-terminated into user (ulen bytes) and pass (plen
 * bytes). 0, or -1 when the value is not valid Basic credentials or a part does not fit. */
int hms_h1_basic_auth (const char *value, size_t len, char *user, size_t ulen, char *pass,
                       size_t plen);

/* The reason phrase of status ("Bad Gateway"), "Unknown" for codes it does not know. Static
 * string. */
const char *hms_h1_reason (int status);

/* Writes the proxy's own complete error response for status (400..599) into out: status line,
 * Content-Type: text/plain; charset=utf-8, Content-Length, Connection: close (and
 * Proxy-Authenticate: Basic realm="hermes" for 407), then "<status> <reason>: <detail>\n"
 * as the body (detail may be NULL; its control and non-ASCII bytes become '?', and it is cut
 * at 512 bytes). NUL-terminates. Returns the length without the NUL, or -1 when status is out
 * of range or out is too small. */
ssize_t hms_h1_error_response (char *out, size_t outlen, int status, const char *detail);

#endif
