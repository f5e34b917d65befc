/* bypass_proto: the wire format of the bypass agent's Unix socket (SOCK_SEQPACKET), shared by
 * the agent and the proxies' client library (bypass_client).
 *
 * One message per request and per answer, each a JSON object of at most
 * BYPASS_PROTO_MAX_HEADER bytes; an answer may carry binary bytes after the JSON text and a
 * NUL (see "unsent" below). Requests:
 *
 *   offer (two fds attached with SCM_RIGHTS: [client leg, server leg])
 *     {"v":1, "op":"offer", "id":"c-42", "client":"192.0.2.2:40000",
 *      "server":"198.51.100.2:80", "policy_rule":"web-allow",
 *      "already_relayed":{"up":517, "down":1460}}
 *     "v", "op" and "policy_rule" are optional (1, "offer", none); "id" is a string of at
 *     most BYPASS_PROTO_MAX_ID bytes or a non-negative integer, echoed in the answer.
 *   flows      {"op":"flows", "id":...}      the agent's flow table and counters
 *   export_p4  {"op":"export_p4", "id":...}  the data plane as P4 table_add lines
 *
 * Answers: {"id":..., "result":"accepted"|"refused"|"error"|"ok", "reason":"...",
 *           "detail":"...", "relayed":{"up":N, "down":M},
 *           "unsent":{"up":U, "down":D}} + NUL + U bytes + D bytes
 * "relayed" counts the bytes the agent relayed itself while draining; "unsent" bytes were
 * read by the agent from one leg and could not be written to the other before it gave up:
 * the proxy writes them (up: to the server leg, down: to the client leg) before anything
 * else when it resumes. (This agent relays by peek, write, consume what was written, so it
 * never has any; proxies handle them all the same.)
 *
 * Ownership of the sockets: the proxy keeps its own descriptors until the answer and does
 * no I/O on them meanwhile. "accepted": the connection is spliced, both sockets are already
 * closed silently (nothing is left to send or read); the proxy closes its descriptors.
 * "refused" / "error" / the agent's socket closing before an answer: the proxy resumes
 * relaying with its descriptors (first writing any unsent bytes).
 */
#ifndef HMS_BYPASS_PROTO_H_INCLUDED
#define HMS_BYPASS_PROTO_H_INCLUDED

#include <jansson.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BYPASS_PROTO_VERSION    1
#define BYPASS_PROTO_MAX_HEADER 4096
#define BYPASS_PROTO_MAX_ID     64
#define BYPASS_PROTO_MAX_RULE   64
/* bytes the agent buffers per direction while draining (and so at most unsent) */
#define BYPASS_PROTO_RELAY_BUF  (64 * 1024)
#define BYPASS_PROTO_MAX_ANSWER (BYPASS_PROTO_MAX_HEADER + 1 + 2 * BYPASS_PROTO_RELAY_BUF)

typedef enum {
    BYPASS_OP_OFFER = 0,
    BYPASS_OP_FLOWS,
    BYPASS_OP_EXPORT_P4,
} bypass_op_t;

/* A request as parsed by the agent. */
typedef struct {
    bypass_op_t op;
    json_t *id; /* the request's id as sent (a string or an integer); owned */
    struct sockaddr_in client, server;
    char policy_rule[BYPASS_PROTO_MAX_RULE + 1]; /* "" when absent */
    uint64_t relayed_up, relayed_down;
} bypass_request_t;

/* Parses one request. 0, or -1 with err (the request's id, when one could be read, is left
 * in req->id for the error answer). Call bypass_request_clear afterwards in both cases. */
int bypass_proto_parse_request (const char *data, size_t len, bypass_request_t *req, char *err,
                                size_t errlen);
void bypass_request_clear (bypass_request_t *req);

/* The JSON text of an offer (what bypass_client sends). Caller owns return value. */
char *bypass_proto_offer_text (const char *id, const struct sockaddr_in *client,
                               const struct sockaddr_in *server, const char *policy_rule,
                               uint64_t relayed_up, uint64_t relayed_down);

/* An answer as parsed by the proxy's side. Pointers into the message buffer. */
typedef struct {
    char id[BYPASS_PROTO_MAX_ID + 1]; /* "" when the agent could not read one */
    char result[16];
    char reason[32];
    char detail[256];
    uint64_t relayed_up, relayed_down;
    const uint8_t *unsent_up, *unsent_down;
    size_t unsent_up_len, unsent_down_len;
    json_t *body; /* the whole JSON answer (flows, p4 ...); owned, freed by clear */
} bypass_answer_t;

/* Parses an answer message of len bytes. 0 / -1 with err. */
int bypass_proto_parse_answer (const uint8_t *msg, size_t len, bypass_answer_t *ans, char *err,
                               size_t errlen);
void bypass_answer_clear (bypass_answer_t *ans);

/* Builds an answer message: the JSON of body (the id and result are set by the caller), a
 * NUL and the unsent bytes when there are any. Caller owns *out (length *outlen). */
void bypass_proto_answer_encode (json_t *body, const uint8_t *up, size_t uplen, const uint8_t *down,
                                 size_t downlen, uint8_t **out, size_t *outlen);

/* Sends one message with nfds descriptors attached (nfds 0: none), non-blocking. Returns
 * the bytes sent or -1 with errno (EAGAIN: try again when writable). */
ssize_t bypass_proto_send (int fd, const void *buf, size_t len, const int *fds, int nfds);

/* Receives one message, non-blocking, with up to maxfds descriptors (close-on-exec).
 * Returns its length (0: the peer closed) or -1 with errno (EAGAIN: nothing pending;
 * EMSGSIZE: message or descriptors truncated, the received descriptors were closed). */
ssize_t bypass_proto_recv (int fd, void *buf, size_t cap, int *fds, int *nfds, int maxfds);

/* "a.b.c.d:port" of an IPv4 socket address into out (at least 24 bytes). */
const char *bypass_proto_addr_str (const struct sockaddr_in *sa, char *out, size_t len);
/* Parses "a.b.c.d:port". 0 / -1. */
int bypass_proto_addr_parse (const char *text, struct sockaddr_in *sa);

#endif
