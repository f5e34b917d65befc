/* ctl_args: hermesctl argument parsing and the sub-command table. */
#include "ctl_args.h"
#include "ctl_print.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_integer (const char *text, const char *what, long long min, long long max,
                      long long *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long long v = strtoll (text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        snprintf (err, errlen, "%s must be an integer from %lld to %lld, got '%s'", what, min, max,
                  text);
        return -1;
    }
    *out = v;
    return 0;
}

static json_t *s_build_empty (const ctl_args_t *args, char *err, size_t errlen)
{
    return json_object ();
}

static json_t *s_build_node_add (const ctl_args_t *args, char *err, size_t errlen)
{
    json_t *body = json_pack ("{s:s}", "name", args->pos[0]);
    const char *address = ctl_args_flag (args, "address");
    const char *site = ctl_args_flag (args, "site");
    if (address)
        json_object_set_new (body, "address", json_string (address));
    if (site)
        json_object_set_new (body, "site", json_string (site));
    return body;
}

static json_t *s_build_name (const ctl_args_t *args, char *err, size_t errlen)
{
    return json_pack ("{s:s}", "name", args->pos[0]);
}

static json_t *s_build_link (const ctl_args_t *args, char *err, size_t errlen)
{
    json_t *body = json_pack ("{s:s, s:s}", "from", args->pos[0], "to", args->pos[1]);
    const char *cost = ctl_args_flag (args, "cost");
    const char *transport = ctl_args_flag (args, "transport");
    long long v;
    if (cost) {
        if (s_integer (cost, "--cost", 1, 1000000, &v, err, errlen)) {
            json_decref (body);
            return NULL;
        }
        json_object_set_new (body, "cost", json_integer (v));
    }
    if (transport) {
        if (strcmp (transport, "h2") && strcmp (transport, "h3")) {
            snprintf (err, errlen, "--transport must be h2 or h3, got '%s'", transport);
            json_decref (body);
            return NULL;
        }
        json_object_set_new (body, "transport", json_string (transport));
    }
    return body;
}

static json_t *s_build_policy_add (const ctl_args_t *args, char *err, size_t errlen)
{
    json_error_t jerr;
    const char *file = args->pos[0];
    json_t *doc = strcmp (file, "-") == 0 ? json_loadf (stdin, JSON_REJECT_DUPLICATES, &jerr)
                                          : json_load_file (file, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf (err, errlen, "policy file %s: line %d column %d: %s",
                  strcmp (file, "-") == 0 ? "(stdin)" : file, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    return json_pack ("{s:o}", "policy", doc);
}

static json_t *s_build_id (const ctl_args_t *args, char *err, size_t errlen)
{
    return json_pack ("{s:s}", "id", args->pos[0]);
}

static json_t *s_build_limit (const ctl_args_t *args, char *err, size_t errlen)
{
    json_t *body = json_object ();
    const char *limit = ctl_args_flag (args, "limit");
    long long v;
    if (limit) {
        if (s_integer (limit, "--limit", 1, 10000, &v, err, errlen)) {
            json_decref (body);
            return NULL;
        }
        json_object_set_new (body, "limit", json_integer (v));
    }
    return body;
}

static json_t *s_build_config_show (const ctl_args_t *args, char *err, size_t errlen)
{
    json_t *body = json_object ();
    const char *version = ctl_args_flag (args, "version");
    const char *kind = ctl_args_flag (args, "kind");
    long long v;
    if (version) {
        if (s_integer (version, "--version", 1, INT64_MAX, &v, err, errlen)) {
            json_decref (body);
            return NULL;
        }
        json_object_set_new (body, "version", json_integer (v));
    }
    if (kind)
        json_object_set_new (body, "kind", json_string (kind));
    return body;
}

static json_t *s_build_route_show (const ctl_args_t *args, char *err, size_t errlen)
{
    json_t *body = json_object ();
    const char *from = ctl_args_flag (args, "from");
    if (args->npos > 0)
        json_object_set_new (body, "to", json_string (args->pos[0]));
    if (from)
        json_object_set_new (body, "from", json_string (from));
    return body;
}

/* A policy.test query from the flags that are given (absent ones are unknown). */
static json_t *s_build_policy_test (const ctl_args_t *args, char *err, size_t errlen)
{
    static const char *const text_fields[] = {"dst",  "host",    "sni",       "path",
                                              "user", "service", "namespace", NULL};
    const char *src = ctl_args_flag (args, "src");
    const char *port = ctl_args_flag (args, "port");
    const char *protocol = ctl_args_flag (args, "protocol");
    const char *method = ctl_args_flag (args, "method");
    unsigned char addr[16];
    long long v = 0;
    if (src && inet_pton (strchr (src, ':') ? AF_INET6 : AF_INET, src, addr) != 1) {
        snprintf (err, errlen, "--src must be an IPv4 or IPv6 address, got '%s'", src);
        return NULL;
    }
    if (port && s_integer (port, "--port", 1, 65535, &v, err, errlen))
        return NULL;
    if (protocol && strcmp (protocol, "tcp") && strcmp (protocol, "udp") &&
        strcmp (protocol, "ip") && strcmp (protocol, "http")) {
        snprintf (err, errlen, "--protocol must be tcp, udp, ip or http, got '%s'", protocol);
        return NULL;
    }
    if (method && (!*method || strspn (method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen (method))) {
        snprintf (err, errlen,
                  "--method must be an HTTP method in capitals (GET, POST, ...), got '%s'", method);
        return NULL;
    }
    json_t *body = json_object ();
    if (src)
        json_object_set_new (body, "src", json_string (src));
    if (port)
        json_object_set_new (body, "port", json_integer (v));
    if (protocol)
        json_object_set_new (body, "protocol", json_string (protocol));
    if (method)
        json_object_set_new (body, "method", json_string (method));
    for (int i = 0; text_fields[i]; i++) {
        const char *text = ctl_args_flag (args, text_fields[i]);
        if (text)
            json_object_set_new (body, text_fields[i], json_string (text));
    }
    return body;
}

static json_t *s_build_stats (const ctl_args_t *args, char *err, size_t errlen)
{
    const char *kind = strcmp (args->command->words, "bypass stats") == 0
                           ? "bypass"
                           : ctl_args_flag (args, "kind");
    return kind ? json_pack ("{s:s}", "kind", kind) : json_object ();
}

static json_t *s_build_bypass (const ctl_args_t *args, const char *op)
{
    json_t *body = json_pack ("{s:s}", "op", op);
    const char *instance = ctl_args_flag (args, "instance");
    if (instance)
        json_object_set_new (body, "instance", json_string (instance));
    return body;
}

static json_t *s_build_bypass_list (const ctl_args_t *args, char *err, size_t errlen)
{
    return s_build_bypass (args, "flows");
}

static json_t *s_build_bypass_p4 (const ctl_args_t *args, char *err, size_t errlen)
{
    return s_build_bypass (args, "export_p4");
}

static json_t *s_build_rollback (const ctl_args_t *args, char *err, size_t errlen)
{
    long long v;
    if (s_integer (args->pos[0], "VERSION", 1, INT64_MAX, &v, err, errlen))
        return NULL;
    return json_pack ("{s:I}", "version", (json_int_t) v);
}

static const ctl_command_t s_commands[] = {
    {"status", "status [--json]", "status", 0, 0, "", s_build_empty, ctl_print_status},
    {"stats", "stats [--kind KIND] [--json]", "stats", 0, 0, "kind", s_build_stats,
     ctl_print_stats},
    {"node add", "node add NAME [--address ADDR] [--site SITE]", "node.add", 1, 1, "address,site",
     s_build_node_add, ctl_print_write},
    {"node del", "node del NAME", "node.del", 1, 1, "", s_build_name, ctl_print_write},
    {"node list", "node list [--json]", "node.list", 0, 0, "", s_build_empty, ctl_print_nodes},
    {"link add", "link add FROM TO [--cost N] [--transport h2|h3]", "link.add", 2, 2,
     "cost,transport", s_build_link, ctl_print_write},
    {"link del", "link del FROM TO", "link.del", 2, 2, "", s_build_link, ctl_print_write},
    {"link list", "link list [--json]", "link.list", 0, 0, "", s_build_empty, ctl_print_links},
    {"policy add", "policy add FILE|-", "policy.add", 1, 1, "", s_build_policy_add,
     ctl_print_write},
    {"policy del", "policy del ID", "policy.del", 1, 1, "", s_build_id, ctl_print_write},
    {"policy list", "policy list [--json]", "policy.list", 0, 0, "", s_build_empty,
     ctl_print_policies},
    {"config show", "config show [--version V] [--kind KIND]", "config.show", 0, 0, "version,kind",
     s_build_config_show, ctl_print_json},
    {"config history", "config history [--limit N]", "config.history", 0, 0, "limit", s_build_limit,
     ctl_print_history},
    {"config rollback", "config rollback VERSION", "config.rollback", 1, 1, "", s_build_rollback,
     ctl_print_write},
    {"route show", "route show [DEST] [--from NODE]", "route.show", 0, 1, "from",
     s_build_route_show, ctl_print_routes},
    {"policy test",
     "policy test [--src IP] [--dst IP|NAME] [--port N] [--protocol tcp|udp|ip|http] [--host H] "
     "[--sni S] [--method M] [--path P] [--user U] [--service S] [--namespace N] [--json]",
     "policy.test", 0, 0, "src,dst,port,protocol,host,sni,method,path,user,service,namespace",
     s_build_policy_test, ctl_print_decision},
    {"bypass list", "bypass list [--instance ID] [--json]", "bypass.query", 0, 0, "instance",
     s_build_bypass_list, ctl_print_bypass_flows},
    {"bypass stats", "bypass stats [--json]   (the agents' counters)", "stats", 0, 0, "kind",
     s_build_stats, ctl_print_stats},
    {"bypass export-p4", "bypass export-p4 [--instance ID]", "bypass.query", 0, 0, "instance",
     s_build_bypass_p4, ctl_print_p4},
    {"audit", "audit [--limit N]", "audit.list", 0, 0, "limit", s_build_limit, ctl_print_audit},
    {"keygen", "keygen [--dir DIR]   (local: create missing CURVE keys)", NULL, 0, 0, "dir",
     s_build_empty, NULL},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL},
};

void ctl_args_usage (FILE *out)
{
    fprintf (out, "usage: hermesctl [-c ENDPOINT] [--keys-dir DIR] [--json] [--timeout MS] "
                  "COMMAND ...\n\ncommands:\n");
    for (int i = 0; s_commands[i].words; i++)
        fprintf (out, "  %s\n", s_commands[i].synopsis);
    fprintf (out, "\noptions:\n"
                  "  -c, --controller EP  controller api (HERMES_CONTROLLER, default "
                  "tcp://127.0.0.1:7100)\n"
                  "  --keys-dir DIR       CURVE keys (HERMES_KEYS_DIR, default var/keys)\n"
                  "  --json               print JSON instead of a table\n"
                  "  --timeout MS         how long to wait for the controller (default 2000)\n"
                  "\nexit codes: 0 ok, 1 refused by the controller, 2 usage error, 3 controller "
                  "unreachable\n");
}

static bool s_flag_allowed (const ctl_command_t *cmd, const char *name)
{
    size_t n = strlen (name);
    for (const char *p = cmd->flags; p && *p;) {
        const char *comma = strchr (p, ',');
        size_t len = comma ? (size_t) (comma - p) : strlen (p);
        if (len == n && strncmp (p, name, n) == 0)
            return true;
        p = comma ? comma + 1 : p + len;
    }
    return false;
}

int ctl_args_parse (ctl_args_t *args, int argc, char **argv, char *err, size_t errlen)
{
    memset (args, 0, sizeof *args);
    args->controller = getenv ("HERMES_CONTROLLER");
    if (!args->controller || !*args->controller)
        args->controller = "tcp://127.0.0.1:7100";
    args->keys_dir = getenv ("HERMES_KEYS_DIR");
    if (!args->keys_dir || !*args->keys_dir)
        args->keys_dir = "var/keys";
    args->timeout_ms = 2000;
    const char *words[8];
    int nwords = 0;
    const char *flags[CTL_MAX_FLAGS][2];
    int nflags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0 ||
            (nwords == 0 && strcmp (a, "help") == 0))
            return 1;
        if (strcmp (a, "--json") == 0) {
            args->json = true;
            continue;
        }
        if (a[0] == '-' && a[1] != 0) {
            /* --name value, or --name=value */
            const char *name = a[1] == '-' ? a + 2 : a + 1;
            const char *eq = strchr (name, '=');
            const char *value;
            if (eq) {
                char *store =
                    args->flag_name_store[nflags < CTL_MAX_FLAGS ? nflags : CTL_MAX_FLAGS - 1];
                snprintf (store, sizeof args->flag_name_store[0], "%.*s", (int) (eq - name), name);
                name = store;
                value = eq + 1;
            } else if (i + 1 >= argc) {
                snprintf (err, errlen, "option %s needs a value", a);
                return -1;
            } else
                value = argv[++i];
            if (strcmp (name, "c") == 0 || strcmp (name, "controller") == 0)
                args->controller = value;
            else if (strcmp (name, "keys-dir") == 0)
                args->keys_dir = value;
            else if (strcmp (name, "timeout") == 0) {
                long long v;
                if (s_integer (value, "--timeout", 1, 600000, &v, err, errlen))
                    return -1;
                args->timeout_ms = (int) v;
            } else if (nflags < CTL_MAX_FLAGS) {
                flags[nflags][0] = name;
                flags[nflags++][1] = value;
            } else {
                snprintf (err, errlen, "too many options");
                return -1;
            }
            continue;
        }
        if (nwords >= 8) {
            snprintf (err, errlen, "too many arguments");
            return -1;
        }
        words[nwords++] = a;
    }
    if (nwords == 0) {
        snprintf (err, errlen, "no command given");
        return -1;
    }
    /* The longest command whose words start the argument list. */
    const ctl_command_t *cmd = NULL;
    int used = 0;
    for (int i = 0; s_commands[i].words; i++) {
        char buf[64];
        snprintf (buf, sizeof buf, "%s", s_commands[i].words);
        int n = 0;
        bool match = true;
        for (char *save = NULL, *w = strtok_r (buf, " ", &save); w;
             w = strtok_r (NULL, " ", &save), n++)
            if (n >= nwords || strcmp (w, words[n]) != 0) {
                match = false;
                break;
            }
        if (match && n > used) {
            cmd = &s_commands[i];
            used = n;
        }
    }
    if (!cmd) {
        snprintf (err, errlen, "unknown command '%s%s%s'", words[0], nwords > 1 ? " " : "",
                  nwords > 1 ? words[1] : "");
        return -1;
    }
    args->command = cmd;
    args->npos = nwords - used;
    if (args->npos < cmd->min_pos || args->npos > cmd->max_pos) {
        snprintf (err, errlen, "wrong number of arguments; usage: hermesctl %s", cmd->synopsis);
        return -1;
    }
    for (int i = 0; i < args->npos; i++)
        args->pos[i] = words[used + i];
    for (int i = 0; i < nflags; i++) {
        if (!s_flag_allowed (cmd, flags[i][0])) {
            snprintf (err, errlen, "unknown option --%s for '%s'; usage: hermesctl %s", flags[i][0],
                      cmd->words, cmd->synopsis);
            return -1;
        }
        args->flag_names[args->nflags] = flags[i][0];
        args->flag_values[args->nflags++] = flags[i][1];
    }
    return 0;
}

const char *ctl_args_flag (const ctl_args_t *args, const char *name)
{
    for (int i = 0; i < args->nflags; i++)
        if (strcmp (args->flag_names[i], name) == 0)
            return args->flag_values[i];
    return NULL;
}
