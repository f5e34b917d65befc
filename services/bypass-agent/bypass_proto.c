/* bypass_proto: encoding and decoding of the bypass agent's Unix-socket messages, and
 * sendmsg/recvmsg with SCM_RIGHTS. */
#include "bypass_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hms_alloc.h"

#define BYPASS_PROTO_MAX_FDS 4

const char *bypass_proto_addr_str (const struct sockaddr_in *sa, char *out, size_t len)
{
    char ip[INET_ADDRSTRLEN] = "?";

    inet_ntop (AF_INET, &sa->sin_addr, ip, sizeof ip);
    snprintf (out, len, "%s:%u", ip, ntohs (sa->sin_port));
    return out;
}

int bypass_proto_addr_parse (const char *text, struct sockaddr_in *sa)
{
    char ip[INET_ADDRSTRLEN];
    const char *colon = strrchr (text, ':');
    char *end;
    unsigned long port;

    if (!colon || colon == text || (size_t) (colon - text) >= sizeof ip)
        return -1;
    memcpy (ip, text, (size_t) (colon - text));
    ip[colon - text] = '\0';
    memset (sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    if (inet_pton (AF_INET, ip, &sa->sin_addr) != 1)
        return -1;
    errno = 0;
    port = strtoul (colon + 1, &end, 10);
    if (errno || *end || colon[1] == '\0' || port == 0 || port > 65535)
        return -1;
    sa->sin_port = htons ((uint16_t) port);
    return 0;
}

static int s_get_count (const json_t *obj, const char *key, uint64_t *out)
{
    json_t *v = json_object_get (obj, key);

    if (!v) {
        *out = 0;
        return 0;
    }
    if (!json_is_integer (v) || json_integer_value (v) < 0)
        return -1;
    *out = (uint64_t) json_integer_value (v);
    return 0;
}

static int s_parse_addr (const json_t *root, const char *key, struct sockaddr_in *sa, char *err,
                         size_t errlen)
{
    const char *text = json_string_value (json_object_get (root, key));

    if (!text || bypass_proto_addr_parse (text, sa)) {
        snprintf (err, errlen, "'%s' must be \"IPv4:port\"", key);
        return -1;
    }
    return 0;
}

static const struct {
    const char *name;
    bypass_op_t op;
} s_ops[] = {
    {"offer", BYPASS_OP_OFFER},
    {"flows", BYPASS_OP_FLOWS},
    {"export_p4", BYPASS_OP_EXPORT_P4},
};

int bypass_proto_parse_request (const char *data, size_t len, bypass_request_t *req, char *err,
                                size_t errlen)
{
    static const char *const known[] = {
        "v", "op", "id", "client", "server", "policy_rule", "already_relayed"};
    json_error_t jerr;
    json_t *root, *v, *relayed;
    const char *key;
    size_t i;
    int rc = -1;

    memset (req, 0, sizeof *req);
    if (len > BYPASS_PROTO_MAX_HEADER) {
        snprintf (err, errlen, "request of %zu bytes (at most %d)", len, BYPASS_PROTO_MAX_HEADER);
        return -1;
    }
    root = json_loadb (data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object (root)) {
        snprintf (err, errlen, "request is not a JSON object: %s",
                  root ? "another JSON value" : jerr.text);
        json_decref (root);
        return -1;
    }
    v = json_object_get (root, "id");
    if (json_is_string (v) && json_string_length (v) > 0 &&
        json_string_length (v) <= BYPASS_PROTO_MAX_ID)
        req->id = json_incref (v);
    else if (json_is_integer (v) && json_integer_value (v) >= 0)
        req->id = json_incref (v);
    else {
        snprintf (err, errlen, "'id' must be a string of 1 to %d bytes or a non-negative integer",
                  BYPASS_PROTO_MAX_ID);
        goto out;
    }
    json_object_foreach (root, key, v)
    {
        for (i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strcmp (key, known[i]) == 0)
                break;
        if (i == sizeof known / sizeof known[0]) {
            snprintf (err, errlen, "unknown key '%.64s'", key);
            goto out;
        }
    }
    v = json_object_get (root, "v");
    if (v && (!json_is_integer (v) || json_integer_value (v) != BYPASS_PROTO_VERSION)) {
        snprintf (err, errlen, "unsupported protocol version (this agent speaks %d)",
                  BYPASS_PROTO_VERSION);
        goto out;
    }
    v = json_object_get (root, "op");
    req->op = BYPASS_OP_OFFER;
    if (v) {
        for (i = 0; i < sizeof s_ops / sizeof s_ops[0]; i++)
            if (json_is_string (v) && strcmp (json_string_value (v), s_ops[i].name) == 0)
                break;
        if (i == sizeof s_ops / sizeof s_ops[0]) {
            snprintf (err, errlen, "'op' must be offer, flows or export_p4");
            goto out;
        }
        req->op = s_ops[i].op;
    }
    if (req->op != BYPASS_OP_OFFER) {
        rc = 0;
        goto out;
    }
    if (s_parse_addr (root, "client", &req->client, err, errlen) ||
        s_parse_addr (root, "server", &req->server, err, errlen))
        goto out;
    v = json_object_get (root, "policy_rule");
    if (v && !json_is_null (v)) {
        if (!json_is_string (v) || json_string_length (v) > BYPASS_PROTO_MAX_RULE) {
            snprintf (err, errlen, "'policy_rule' must be a string of at most %d bytes",
                      BYPASS_PROTO_MAX_RULE);
            goto out;
        }
        snprintf (req->policy_rule, sizeof req->policy_rule, "%s", json_string_value (v));
    }
    relayed = json_object_get (root, "already_relayed");
    if (relayed && (!json_is_object (relayed) || s_get_count (relayed, "up", &req->relayed_up) ||
                    s_get_count (relayed, "down", &req->relayed_down))) {
        snprintf (err, errlen, "'already_relayed' must be {\"up\": N, \"down\": M}");
        goto out;
    }
    rc = 0;
out:
    json_decref (root);
    return rc;
}

void bypass_request_clear (bypass_request_t *req)
{
    json_decref (req->id);
    req->id = NULL;
}

char *bypass_proto_offer_text (const char *id, const struct sockaddr_in *client,
                               const struct sockaddr_in *server, const char *policy_rule,
                               uint64_t relayed_up, uint64_t relayed_down)
{
    char c[32], s[32];
    json_t *root =
        json_pack ("{s:i, s:s, s:s, s:s, s:s, s:{s:I, s:I}}", "v", BYPASS_PROTO_VERSION, "op",
                   "offer", "id", id, "client", bypass_proto_addr_str (client, c, sizeof c),
                   "server", bypass_proto_addr_str (server, s, sizeof s), "already_relayed", "up",
                   (json_int_t) relayed_up, "down", (json_int_t) relayed_down);
    char *text;

    if (!root)
        return NULL; /* id not UTF-8 */
    if (policy_rule && *policy_rule)
        json_object_set_new (root, "policy_rule", json_string (policy_rule));
    text = json_dumps (root, JSON_COMPACT);
    json_decref (root);
    return text;
}

static void s_copy_str (const json_t *obj, const char *key, char *out, size_t len)
{
    const char *v = json_string_value (json_object_get (obj, key));

    snprintf (out, len, "%s", v ? v : "");
}

int bypass_proto_parse_answer (const uint8_t *msg, size_t len, bypass_answer_t *ans, char *err,
                               size_t errlen)
{
    const uint8_t *nul = memchr (msg, '\0', len);
    size_t jlen = nul ? (size_t) (nul - msg) : len;
    json_error_t jerr;
    json_t *root, *v;
    uint64_t up = 0, down = 0;

    memset (ans, 0, sizeof *ans);
    root = json_loadb ((const char *) msg, jlen, 0, &jerr);
    if (!json_is_object (root)) {
        snprintf (err, errlen, "answer is not a JSON object: %s", root ? "" : jerr.text);
        json_decref (root);
        return -1;
    }
    v = json_object_get (root, "id");
    if (json_is_string (v))
        snprintf (ans->id, sizeof ans->id, "%s", json_string_value (v));
    else if (json_is_integer (v))
        snprintf (ans->id, sizeof ans->id, "%lld", (long long) json_integer_value (v));
    s_copy_str (root, "result", ans->result, sizeof ans->result);
    s_copy_str (root, "reason", ans->reason, sizeof ans->reason);
    s_copy_str (root, "detail", ans->detail, sizeof ans->detail);
    v = json_object_get (root, "relayed");
    if (json_is_object (v) &&
        (s_get_count (v, "up", &ans->relayed_up) || s_get_count (v, "down", &ans->relayed_down))) {
        snprintf (err, errlen, "answer has a bad 'relayed'");
        json_decref (root);
        return -1;
    }
    v = json_object_get (root, "unsent");
    if (json_is_object (v) && (s_get_count (v, "up", &up) || s_get_count (v, "down", &down))) {
        snprintf (err, errlen, "answer has a bad 'unsent'");
        json_decref (root);
        return -1;
    }
    if (up + down > 0 && (!nul || (size_t) (len - jlen - 1) != up + down)) {
        snprintf (err, errlen, "answer announces %llu unsent bytes but carries %zu",
                  (unsigned long long) (up + down), nul ? len - jlen - 1 : 0);
        json_decref (root);
        return -1;
    }
    if (up + down > 0) {
        ans->unsent_up = nul + 1;
        ans->unsent_up_len = (size_t) up;
        ans->unsent_down = nul + 1 + up;
        ans->unsent_down_len = (size_t) down;
    }
    if (ans->result[0] == '\0') {
        snprintf (err, errlen, "answer without 'result'");
        json_decref (root);
        return -1;
    }
    ans->body = root;
    return 0;
}

void bypass_answer_clear (bypass_answer_t *ans)
{
    json_decref (ans->body);
    ans->body = NULL;
}

void bypass_proto_answer_encode (json_t *body, const uint8_t *up, size_t uplen, const uint8_t *down,
                                 size_t downlen, uint8_t **out, size_t *outlen)
{
    char *text;
    size_t tlen;

    if (uplen + downlen > 0)
        json_object_set_new (
            body, "unsent",
            json_pack ("{s:I, s:I}", "up", (json_int_t) uplen, "down", (json_int_t) downlen));
    text = json_dumps (body, JSON_COMPACT);
    if (!text)
        abort (); /* jansson fails only on allocation */
    tlen = strlen (text);
    *outlen = tlen + (uplen + downlen > 0 ? 1 + uplen + downlen : 0);
    *out = hms_alloc (*outlen ? *outlen : 1);
    memcpy (*out, text, tlen);
    if (uplen + downlen > 0) {
        (*out)[tlen] = '\0';
        if (uplen)
            memcpy (*out + tlen + 1, up, uplen);
        if (downlen)
            memcpy (*out + tlen + 1 + uplen, down, downlen);
    }
    free (text);
}

ssize_t bypass_proto_send (int fd, const void *buf, size_t len, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *) buf, .iov_len = len};
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE (sizeof (int) * BYPASS_PROTO_MAX_FDS)];
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

    if (nfds < 0 || nfds > BYPASS_PROTO_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    if (nfds > 0) {
        struct cmsghdr *c;

        memset (&ctl, 0, sizeof ctl);
        msg.msg_control = ctl.space;
        msg.msg_controllen = CMSG_SPACE (sizeof (int) * (size_t) nfds);
        c = CMSG_FIRSTHDR (&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN (sizeof (int) * (size_t) nfds);
        memcpy (CMSG_DATA (c), fds, sizeof (int) * (size_t) nfds);
    }
    return sendmsg (fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

ssize_t bypass_proto_recv (int fd, void *buf, size_t cap, int *fds, int *nfds, int maxfds)
{
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE (sizeof (int) * BYPASS_PROTO_MAX_FDS)];
    } ctl;
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.space,
                         .msg_controllen = sizeof ctl.space};
    ssize_t n;
    int got = 0;
    bool dropped = false;

    *nfds = 0;
    n = recvmsg (fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR (&msg); c; c = CMSG_NXTHDR (&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN (0)) / sizeof (int);
        int *in = (int *) (void *) CMSG_DATA (c);
        for (size_t i = 0; i < count; i++) {
            int one;

            memcpy (&one, in + i, sizeof one);
            if (got < maxfds && got < BYPASS_PROTO_MAX_FDS)
                fds[got++] = one;
            else {
                close (one);
                dropped = true;
            }
        }
    }
    *nfds = got;
    if (dropped || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        for (int i = 0; i < got; i++)
            close (fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}
