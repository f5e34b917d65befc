/* hermesctl: the operator's client of the Hermes controller (ZeroMQ + CURVE). */
#include "ctl_args.h"
#include "ctl_client.h"
#include "hms_keys.h"
#include "hms_msg.h"
#include "hms_pki.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

static int s_keygen (const ctl_args_t *args)
{
    const char *dir = ctl_args_flag (args, "dir");
    if (!dir)
        dir = args->keys_dir;
    char err[1024];
    /* CURVE keys for the control plane, and a private CA with a certificate per proxy
     * kind for the tunnels (mutual TLS) under DIR/tls. */
    static const char *const tls_names[] = {"relay", "ingress", NULL};
    char tls_dir[1024];
    snprintf (tls_dir, sizeof tls_dir, "%s/tls", dir);
    if (hms_keys_generate (dir, err, sizeof err) ||
        hms_pki_generate (tls_dir, tls_names, NULL, err, sizeof err)) {
        fprintf (stderr, "hermesctl: %s\n", err);
        return CTL_EXIT_REFUSED;
    }
    printf ("keys ready in %s\n", dir);
    return CTL_EXIT_OK;
}

int main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    ctl_args_t args;
    char err[2048];
    int rc = ctl_args_parse (&args, argc, argv, err, sizeof err);
    if (rc == 1) {
        ctl_args_usage (stdout);
        return CTL_EXIT_OK;
    }
    if (rc) {
        fprintf (stderr, "hermesctl: %s\n(see hermesctl --help)\n", err);
        return CTL_EXIT_USAGE;
    }
    if (!args.command->type)
        return s_keygen (&args);
    json_t *body = args.command->build (&args, err, sizeof err);
    if (!body) {
        fprintf (stderr, "hermesctl: %s\n", err);
        return CTL_EXIT_USAGE;
    }
    int unreachable = 0;
    json_t *reply = ctl_client_request (args.controller, args.keys_dir, args.command->type, body,
                                        args.timeout_ms, &unreachable, err, sizeof err);
    if (!reply) {
        fprintf (stderr, "hermesctl: %s\n", err);
        return unreachable ? CTL_EXIT_UNREACHABLE : CTL_EXIT_USAGE;
    }
    json_t *rbody = hms_msg_body (reply);
    if (strcmp (hms_msg_type (reply), "error") == 0) {
        if (args.json) {
            char *text = json_dumps (rbody, JSON_INDENT (2));
            fprintf (stderr, "%s\n", text);
            free (text);
        } else
            fprintf (stderr, "hermesctl: controller refused %s: %s (%s)\n", args.command->words,
                     json_string_value (json_object_get (rbody, "message")),
                     json_string_value (json_object_get (rbody, "code")));
        json_decref (reply);
        return CTL_EXIT_REFUSED;
    }
    json_t *result = json_object_get (rbody, "result");
    if (args.json) {
        char *text = json_dumps (result, JSON_INDENT (2) | JSON_ENCODE_ANY);
        printf ("%s\n", text);
        free (text);
    } else
        args.command->print (result);
    json_decref (reply);
    return CTL_EXIT_OK;
}
