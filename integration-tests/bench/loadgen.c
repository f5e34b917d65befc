/* hermes-loadgen: the load side of the control-plane benchmark (control.py drives it).
 * Starts N real service instances through hms_service, times how long a `hermesctl policy
 * add` takes to be applied by all of them, then times serial admin writes on the bus, and
 * prints one JSON object on stdout. */
#include "hms_bus.h"
#include "hms_keys.h"
#include "hms_log.h"
#include "hms_msg.h"
#include "hms_service.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define LG_NS_PER_MS   1000000LL
#define LG_MAX_N       2000
#define LG_MAX_TIMEOUT 3 /* timed-out rounds after which the run is abandoned */

static const char *const s_kinds[] = {"ingress", "relay", "policy", "retry", "ndn", "bypass"};
#define LG_NKINDS ((int) (sizeof s_kinds / sizeof s_kinds[0]))

typedef struct {
    const char *controller, *push, *keys_dir, *hermesctl;
    int n, rounds, warmup, writes, writes_s, gap_ms, round_ms, ready_ms;
    bool verbose;
} lg_opts_t;

/* What every instance applied: written by the service threads, read by main. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int n;
    int64_t *version; /* newest version each instance applied */
    int64_t *at_ns;   /* when it first applied a version >= mark (0: not yet) */
    int64_t mark;
} lg_board_t;

typedef struct {
    lg_board_t *board;
    int index;
} lg_slot_t;

static int64_t s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double s_ms (int64_t ns)
{
    return (double) ns / 1e6;
}

static void s_sleep_ms (int ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* ---- the board ------------------------------------------------------------------- */

static void s_board_init (lg_board_t *b, int n)
{
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&b->changed, &attr);
    pthread_condattr_destroy (&attr);
    pthread_mutex_init (&b->lock, NULL);
    b->n = n;
    b->version = calloc (n, sizeof *b->version);
    b->at_ns = calloc (n, sizeof *b->at_ns);
    if (!b->version || !b->at_ns)
        abort ();
    b->mark = INT64_MAX;
}

static void s_board_fini (lg_board_t *b)
{
    free (b->version);
    free (b->at_ns);
    pthread_cond_destroy (&b->changed);
    pthread_mutex_destroy (&b->lock);
}

/* From now on, record when each instance first applies a version >= mark. */
static void s_board_arm (lg_board_t *b, int64_t mark)
{
    pthread_mutex_lock (&b->lock);
    b->mark = mark;
    for (int i = 0; i < b->n; i++)
        b->at_ns[i] = b->version[i] >= mark ? -1 : 0;
    pthread_mutex_unlock (&b->lock);
}

/* Instances still below version; caller holds the lock. */
static int s_board_behind (lg_board_t *b, int64_t version)
{
    int behind = 0;
    for (int i = 0; i < b->n; i++)
        behind += b->version[i] < version;
    return behind;
}

/* Waits until every instance runs a version >= version or the deadline passes. Returns how
 * many are still behind (0 means all there). */
static int s_board_wait (lg_board_t *b, int64_t version, int64_t deadline_ns)
{
    struct timespec until = {deadline_ns / 1000000000LL, deadline_ns % 1000000000LL};
    pthread_mutex_lock (&b->lock);
    int behind;
    while ((behind = s_board_behind (b, version)) > 0)
        if (pthread_cond_timedwait (&b->changed, &b->lock, &until) == ETIMEDOUT) {
            behind = s_board_behind (b, version);
            break;
        }
    pthread_mutex_unlock (&b->lock);
    return behind;
}

/* Runs in the instance's service thread. */
static void s_on_apply (void *arg, json_t *config, int64_t version)
{
    int64_t now = s_now_ns ();
    lg_slot_t *slot = arg;
    lg_board_t *b = slot->board;
    pthread_mutex_lock (&b->lock);
    if (version > b->version[slot->index])
        b->version[slot->index] = version;
    if (version >= b->mark && b->at_ns[slot->index] == 0)
        b->at_ns[slot->index] = now;
    pthread_cond_broadcast (&b->changed);
    pthread_mutex_unlock (&b->lock);
    json_decref (config);
}

/* ---- statistics ------------------------------------------------------------------ */

static int s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..100) of n sorted values. */
static double s_pct (const double *sorted, size_t n, int p)
{
    if (n == 0)
        return 0;
    size_t rank = ((size_t) p * n + 99) / 100;
    return sorted[rank ? rank - 1 : 0];
}

/* {p50, p99, min, max, mean} of n values (sorted in place), in ms with 3 decimals. */
static json_t *s_summary (double *v, size_t n)
{
    qsort (v, n, sizeof *v, s_cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    return json_pack ("{s:f, s:f, s:f, s:f, s:f}", "p50", s_pct (v, n, 50), "p99", s_pct (v, n, 99),
                      "min", n ? v[0] : 0.0, "max", n ? v[n - 1] : 0.0, "mean",
                      n ? sum / (double) n : 0.0);
}

/* ---- the admin bus client ---------------------------------------------------------- */

/* One request/reply with the controller. Returns the reply envelope (caller owns it; may be
 * an "error" envelope), or NULL with err after timeout_ms. Takes ownership of body. */
static json_t *s_request (zsock_t *sock, const char *type, json_t *body, int timeout_ms, char *err,
                          size_t errlen)
{
    json_t *env = hms_msg_new (type, 1, "hermes-loadgen", body);
    char id[160];
    snprintf (id, sizeof id, "%s", hms_msg_id (env));
    if (hms_bus_send (sock, NULL, NULL, &env)) {
        snprintf (err, errlen, "cannot send %s to the controller", type);
        return NULL;
    }
    int64_t deadline = s_now_ns () + (int64_t) timeout_ms * LG_NS_PER_MS;
    zpoller_t *poller = zpoller_new (sock, NULL);
    json_t *reply = NULL;
    while (!reply) {
        int64_t left = (deadline - s_now_ns ()) / LG_NS_PER_MS;
        if (left <= 0 || !zpoller_wait (poller, (int) left)) {
            snprintf (err, errlen, "controller did not answer %s within %d ms", type, timeout_ms);
            break;
        }
        zmsg_t *msg = zmsg_recv (sock);
        zframe_t *frame = msg ? zmsg_last (msg) : NULL;
        const char *code;
        char why[512];
        if (frame)
            reply = hms_msg_decode ((const char *) zframe_data (frame), zframe_size (frame), &code,
                                    why, sizeof why);
        zmsg_destroy (&msg);
        if (reply && strcmp (hms_msg_id (reply), id) != 0) {
            json_decref (reply); /* a late answer to an earlier request */
            reply = NULL;
        }
    }
    zpoller_destroy (&poller);
    return reply;
}

/* The "result" of an ok reply, borrowed from reply; NULL with err for an error reply. */
static json_t *s_result (json_t *reply, char *err, size_t errlen)
{
    json_t *body = hms_msg_body (reply);
    if (strcmp (hms_msg_type (reply), "ok") != 0) {
        snprintf (err, errlen, "controller refused it: %s (%s)",
                  json_string_value (json_object_get (body, "message")) ?: "?",
                  json_string_value (json_object_get (body, "code")) ?: "?");
        return NULL;
    }
    return json_object_get (body, "result");
}

static int64_t s_config_version (zsock_t *admin, const lg_opts_t *o, char *err, size_t errlen)
{
    json_t *reply = s_request (admin, "status", NULL, 5000, err, errlen);
    if (!reply) {
        snprintf (err, errlen,
                  "controller at %s did not answer status within 5000 ms (is it running? is "
                  "the admin key in %s authorised by it?)",
                  o->controller, o->keys_dir);
        return -1;
    }
    json_t *result = s_result (reply, err, errlen);
    int64_t version =
        result ? (int64_t) json_integer_value (json_object_get (result, "config_version")) : -1;
    json_decref (reply);
    return version;
}

/* ---- hermesctl policy add -------------------------------------------------------- */

/* Runs `hermesctl --json policy add file`, reads its stdout into out; its stderr goes to
 * ours. 0 when it exited 0 within timeout_ms; -1 with err. */
static int s_run_ctl (const lg_opts_t *o, const char *file, char *out, size_t outlen,
                      int timeout_ms, char *err, size_t errlen)
{
    int fds[2];
    if (pipe2 (fds, O_CLOEXEC)) {
        snprintf (err, errlen, "cannot create a pipe for hermesctl: %s", strerror (errno));
        return -1;
    }
    char timeout[32];
    snprintf (timeout, sizeof timeout, "%d", timeout_ms);
    char *argv[] = {(char *) o->hermesctl,
                    "-c",
                    (char *) o->controller,
                    "--keys-dir",
                    (char *) o->keys_dir,
                    "--timeout",
                    timeout,
                    "--json",
                    "policy",
                    "add",
                    (char *) file,
                    NULL};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init (&actions);
    posix_spawn_file_actions_adddup2 (&actions, fds[1], STDOUT_FILENO);
    pid_t pid;
    int rc = posix_spawn (&pid, o->hermesctl, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy (&actions);
    close (fds[1]);
    if (rc) {
        close (fds[0]);
        snprintf (err, errlen, "cannot run %s: %s (build it, or pass --hermesctl)", o->hermesctl,
                  strerror (rc));
        return -1;
    }
    size_t used = 0;
    bool killed = false;
    int64_t deadline = s_now_ns () + (int64_t) (timeout_ms + 2000) * LG_NS_PER_MS;
    while (true) {
        int64_t left = (deadline - s_now_ns ()) / LG_NS_PER_MS;
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int ready = left > 0 ? poll (&pfd, 1, (int) left) : 0;
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0) {
            kill (pid, SIGKILL);
            killed = true;
            break;
        }
        char scratch[256];
        bool room = used + 1 < outlen;
        ssize_t got = room ? read (fds[0], out + used, outlen - used - 1)
                           : read (fds[0], scratch, sizeof scratch);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        if (room)
            used += (size_t) got;
    }
    out[used] = 0;
    close (fds[0]);
    int status = 0;
    while (waitpid (pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (killed) {
        snprintf (err, errlen, "hermesctl policy add did not finish within %d ms: killed",
                  timeout_ms + 2000);
        return -1;
    }
    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
        snprintf (err, errlen, "hermesctl policy add failed (%s %d; its message is above)",
                  WIFEXITED (status) ? "exit code" : "signal",
                  WIFEXITED (status) ? WEXITSTATUS (status) : WTERMSIG (status));
        return -1;
    }
    return 0;
}

static int s_write_policy (const char *path, int priority, char *err, size_t errlen)
{
    json_t *doc = json_pack ("{s:s, s:i, s:s, s:s, s:{s:[s]}}", "id", "bench-loadgen", "priority",
                             priority, "description", "hermes-loadgen convergence round", "action",
                             "allow", "match", "dst", "10.0.0.0/8");
    int rc = json_dump_file (doc, path, JSON_COMPACT);
    json_decref (doc);
    if (rc)
        snprintf (err, errlen, "cannot write policy file %s: %s", path, strerror (errno));
    return rc;
}

/* ---- phases ---------------------------------------------------------------------- */

typedef struct {
    const lg_opts_t *o;
    lg_board_t *board;
    zsock_t *admin;
    char dir[256];
    int64_t version; /* what every instance runs */
    json_t *out;
} lg_run_t;

/* One convergence round: adds a policy with hermesctl and waits until all instances apply
 * it. Fills all_ms, first_ms, median_ms, ctl_ms. 0, 1 when the round timed out, -1 with
 * err when it could not run. */
static int s_round (lg_run_t *run, int index, double *all_ms, double *first_ms, double *median_ms,
                    double *ctl_ms, char *err, size_t errlen)
{
    const lg_opts_t *o = run->o;
    lg_board_t *b = run->board;
    char file[300];
    snprintf (file, sizeof file, "%s/policy.json", run->dir);
    if (s_write_policy (file, index + o->warmup, err, errlen))
        return -1;
    int64_t expect = run->version + 1;
    s_board_arm (b, expect);
    char out[4096];
    int64_t t0 = s_now_ns ();
    if (s_run_ctl (o, file, out, sizeof out, 5000, err, errlen))
        return -1;
    int64_t t_ctl = s_now_ns ();
    json_error_t jerr;
    json_t *result = json_loads (out, 0, &jerr);
    int64_t version = (int64_t) json_integer_value (json_object_get (result, "version"));
    json_decref (result);
    if (version <= 0) {
        snprintf (err, errlen, "hermesctl --json policy add printed no version: '%.200s'", out);
        return -1;
    }
    if (version != expect) {
        snprintf (err, errlen,
                  "policy add created version %" PRId64 ", expected %" PRId64
                  ": something else writes to this controller; run the benchmark against a "
                  "controller of its own",
                  version, expect);
        return -1;
    }
    int behind = s_board_wait (b, version, t0 + (int64_t) o->round_ms * LG_NS_PER_MS);
    run->version = version;
    *ctl_ms = s_ms (t_ctl - t0);
    if (behind) {
        fprintf (stderr,
                 "hermes-loadgen: round %d: %d of %d instances did not apply version %" PRId64
                 " within %d ms (counted as %d ms)\n",
                 index, behind, o->n, version, o->round_ms, o->round_ms);
        *all_ms = *first_ms = *median_ms = o->round_ms;
        return 1;
    }
    double *lat = calloc (o->n, sizeof *lat);
    if (!lat)
        abort ();
    pthread_mutex_lock (&b->lock);
    for (int i = 0; i < o->n; i++)
        lat[i] = b->at_ns[i] > 0 ? s_ms (b->at_ns[i] - t0) : 0;
    pthread_mutex_unlock (&b->lock);
    qsort (lat, o->n, sizeof *lat, s_cmp_double);
    *first_ms = lat[0];
    *median_ms = lat[(o->n - 1) / 2];
    *all_ms = lat[o->n - 1];
    free (lat);
    return 0;
}

static int s_converge (lg_run_t *run, char *err, size_t errlen)
{
    const lg_opts_t *o = run->o;
    int total = o->warmup + o->rounds;
    double *all = calloc (total, sizeof *all), *first = calloc (total, sizeof *first);
    double *median = calloc (total, sizeof *median), *ctl = calloc (total, sizeof *ctl);
    if (!all || !first || !median || !ctl)
        abort ();
    int kept = 0, timeouts = 0, rc = 0;
    json_t *samples = json_array ();
    for (int r = 0; r < total; r++) {
        int i = r < o->warmup ? 0 : kept;
        int got = s_round (run, r, &all[i], &first[i], &median[i], &ctl[i], err, errlen);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got > 0 && ++timeouts >= LG_MAX_TIMEOUT) {
            snprintf (err, errlen,
                      "%d rounds timed out: the instances stopped following the controller "
                      "(see the controller's log)",
                      timeouts);
            rc = -1;
            break;
        }
        if (r >= o->warmup) {
            json_array_append_new (samples, json_real (all[i]));
            kept++;
        }
        if (o->verbose)
            fprintf (stderr, "hermes-loadgen: round %d all=%.1f ms median=%.1f ms ctl=%.1f ms\n",
                     r - o->warmup, all[i], median[i], ctl[i]);
        if (o->gap_ms)
            s_sleep_ms (o->gap_ms);
    }
    if (rc == 0)
        json_object_set_new (
            run->out, "converge",
            json_pack ("{s:i, s:i, s:i, s:o, s:o, s:o, s:o, s:o}", "rounds", kept, "warmup",
                       o->warmup, "timeouts", timeouts, "all_ms", s_summary (all, kept),
                       "median_instance_ms", s_summary (median, kept), "first_instance_ms",
                       s_summary (first, kept), "hermesctl_ms", s_summary (ctl, kept),
                       "samples_all_ms", json_incref (samples)));
    json_decref (samples);
    free (all);
    free (first);
    free (median);
    free (ctl);
    return rc;
}

/* Serial node add / node del on the bus until o->writes writes or o->writes_s seconds. */
static int s_writes (lg_run_t *run, char *err, size_t errlen)
{
    const lg_opts_t *o = run->o;
    double *rtt = calloc (o->writes > 0 ? o->writes : 1, sizeof *rtt);
    if (!rtt)
        abort ();
    int done = 0;
    int64_t start = s_now_ns ();
    int64_t stop = start + (int64_t) o->writes_s * 1000 * LG_NS_PER_MS;
    int64_t last = run->version;
    int rc = 0;
    while (done < o->writes && s_now_ns () < stop) {
        char name[64];
        snprintf (name, sizeof name, "lg-w-%d", done / 2);
        const char *type = done % 2 == 0 ? "node.add" : "node.del";
        int64_t t = s_now_ns ();
        json_t *reply =
            s_request (run->admin, type, json_pack ("{s:s}", "name", name), 5000, err, errlen);
        if (!reply) {
            rc = -1;
            break;
        }
        char why[512];
        json_t *result = s_result (reply, why, sizeof why);
        if (!result) {
            snprintf (err, errlen, "%s %s: %s", type, name, why);
            json_decref (reply);
            rc = -1;
            break;
        }
        last = (int64_t) json_integer_value (json_object_get (result, "version"));
        json_decref (reply);
        rtt[done++] = s_ms (s_now_ns () - t);
    }
    int64_t end = s_now_ns ();
    if (rc == 0) {
        /* How long the instances need to catch up with the burst. */
        int behind =
            done ? s_board_wait (run->board, last, end + (int64_t) o->round_ms * LG_NS_PER_MS) : 0;
        int64_t caught = s_now_ns ();
        run->version = last;
        double seconds = s_ms (end - start) / 1000.0;
        json_object_set_new (run->out, "writes",
                             json_pack ("{s:i, s:f, s:f, s:o, s:o, s:i}", "count", done, "seconds",
                                        seconds, "per_s", seconds > 0 ? done / seconds : 0.0,
                                        "rtt_ms", s_summary (rtt, done), "catchup_ms",
                                        behind ? json_null () : json_real (s_ms (caught - end)),
                                        "behind_after", behind));
    }
    free (rtt);
    return rc;
}

/* ---- main ------------------------------------------------------------------------ */

static void s_usage (FILE *f)
{
    fprintf (f,
             "usage: hermes-loadgen --controller EP --push EP --keys-dir DIR [--hermesctl PATH]\n"
             "                      [-n N] [--rounds R] [--warmup W] [--writes W]\n"
             "                      [--writes-seconds S] [--round-ms MS] [--gap-ms MS] [-v]\n"
             "Starts N service instances (hms_service, kinds in rotation, names lg-<i>), times\n"
             "'hermesctl policy add' until every instance applied it (R rounds after W warm-up\n"
             "rounds), then serial admin writes (node add/del) for W writes or S seconds.\n"
             "Prints one JSON object on stdout; exit 0 when it ran, 1 when it could not,\n"
             "2 on a usage error.\n");
}

static int s_int_arg (const char *text, const char *name, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol (text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        fprintf (stderr, "hermes-loadgen: %s must be an integer from %d to %d, got '%s'\n", name,
                 min, max, text);
        return -1;
    }
    *out = (int) v;
    return 0;
}

static int s_parse (lg_opts_t *o, int argc, char **argv)
{
    *o = (lg_opts_t){.hermesctl = "hermesctl",
                     .n = 10,
                     .rounds = 30,
                     .warmup = 1,
                     .writes = 2000,
                     .writes_s = 20,
                     .gap_ms = 100,
                     .round_ms = 10000,
                     .ready_ms = 30000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_usage (stdout);
            exit (0);
        } else if (strcmp (a, "-v") == 0) {
            o->verbose = true;
            continue;
        } else if (!v) {
            fprintf (stderr, "hermes-loadgen: option %s needs a value (see --help)\n", a);
            return -1;
        } else if (strcmp (a, "--controller") == 0)
            o->controller = v;
        else if (strcmp (a, "--push") == 0)
            o->push = v;
        else if (strcmp (a, "--keys-dir") == 0)
            o->keys_dir = v;
        else if (strcmp (a, "--hermesctl") == 0)
            o->hermesctl = v;
        else if (strcmp (a, "-n") == 0)
            rc = s_int_arg (v, "-n", 1, LG_MAX_N, &o->n);
        else if (strcmp (a, "--rounds") == 0)
            rc = s_int_arg (v, "--rounds", 1, 100000, &o->rounds);
        else if (strcmp (a, "--warmup") == 0)
            rc = s_int_arg (v, "--warmup", 0, 100, &o->warmup);
        else if (strcmp (a, "--writes") == 0)
            rc = s_int_arg (v, "--writes", 0, 10000000, &o->writes);
        else if (strcmp (a, "--writes-seconds") == 0)
            rc = s_int_arg (v, "--writes-seconds", 1, 3600, &o->writes_s);
        else if (strcmp (a, "--round-ms") == 0)
            rc = s_int_arg (v, "--round-ms", 100, 600000, &o->round_ms);
        else if (strcmp (a, "--gap-ms") == 0)
            rc = s_int_arg (v, "--gap-ms", 0, 60000, &o->gap_ms);
        else {
            fprintf (stderr, "hermes-loadgen: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (rc)
            return -1;
        i++;
    }
    if (!o->controller || !o->push || !o->keys_dir) {
        fprintf (stderr, "hermes-loadgen: --controller, --push and --keys-dir are required "
                         "(see --help)\n");
        return -1;
    }
    return 0;
}

/* Starts the instances and waits until all run the controller's current version. */
static int s_start (lg_run_t *run, hms_service_t **services, lg_slot_t *slots, char *err,
                    size_t errlen)
{
    const lg_opts_t *o = run->o;
    int64_t start = s_now_ns ();
    for (int i = 0; i < o->n; i++) {
        char name[32];
        snprintf (name, sizeof name, "lg-%d", i);
        slots[i] = (lg_slot_t){run->board, i};
        hms_service_opts_t so = {.kind = s_kinds[i % LG_NKINDS],
                                 .instance = name,
                                 .controller = o->controller,
                                 .controller_push = o->push,
                                 .keys_dir = o->keys_dir,
                                 .apply = s_on_apply,
                                 .arg = &slots[i],
                                 .build = "hermes-loadgen"};
        char why[512];
        services[i] = hms_service_new (&so, why, sizeof why);
        if (!services[i]) {
            snprintf (err, errlen, "instance %s (kind %s): %s", name, so.kind, why);
            return -1;
        }
    }
    int behind =
        s_board_wait (run->board, run->version, start + (int64_t) o->ready_ms * LG_NS_PER_MS);
    if (behind) {
        snprintf (err, errlen,
                  "%d of %d instances did not register and apply config version %" PRId64
                  " within %d ms (see the controller's log)",
                  behind, o->n, run->version, o->ready_ms);
        return -1;
    }
    json_object_set_new (run->out, "ready_ms", json_real (s_ms (s_now_ns () - start)));
    return 0;
}

static void s_raise_fd_limit (void)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit (RLIMIT_NOFILE, &rl);
    }
}

int main (int argc, char **argv)
{
    lg_opts_t o;
    if (s_parse (&o, argc, argv))
        return 2;
    hms_log_set_name ("hermes-loadgen");
    hms_log_set_level (o.verbose ? HMS_LOG_INFO : HMS_LOG_WARNING);
    zsys_handler_set (NULL);
    /* Each instance holds a DEALER, a SUB and its actor pipe pair. */
    s_raise_fd_limit ();
    zsys_set_max_sockets (0);

    char err[1024] = "";
    lg_board_t board;
    s_board_init (&board, o.n);
    lg_run_t run = {.o = &o, .board = &board};
    run.out = json_pack ("{s:i, s:s}", "n", o.n, "controller", o.controller);
    hms_service_t **services = calloc (o.n, sizeof *services);
    lg_slot_t *slots = calloc (o.n, sizeof *slots);
    if (!services || !slots)
        abort ();
    const char *tmp = getenv ("TMPDIR");
    snprintf (run.dir, sizeof run.dir, "%s/hermes-loadgen-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int rc = -1;
    zcert_t *cert = hms_keys_load_secret (o.keys_dir, "admin", err, sizeof err);
    char server_key[41];
    if (!cert || hms_keys_load_public (o.keys_dir, "controller", server_key, err, sizeof err))
        goto done;
    run.admin = hms_bus_client (ZMQ_DEALER, o.controller, cert, server_key, err, sizeof err);
    if (!run.admin)
        goto done;
    if (!mkdtemp (run.dir)) {
        snprintf (err, sizeof err, "cannot create a folder %s: %s", run.dir, strerror (errno));
        run.dir[0] = 0;
        goto done;
    }
    run.version = s_config_version (run.admin, &o, err, sizeof err);
    if (run.version < 0)
        goto done;
    if (s_start (&run, services, slots, err, sizeof err) || s_converge (&run, err, sizeof err) ||
        (o.writes > 0 && s_writes (&run, err, sizeof err)))
        goto done;
    rc = 0;
done:
    for (int i = 0; i < o.n; i++)
        hms_service_destroy (&services[i]);
    zsock_destroy (&run.admin);
    zcert_destroy (&cert);
    if (run.dir[0]) {
        char file[300];
        snprintf (file, sizeof file, "%s/policy.json", run.dir);
        unlink (file);
        rmdir (run.dir);
    }
    if (rc == 0) {
        char *text = json_dumps (run.out, JSON_COMPACT | JSON_REAL_PRECISION (9));
        printf ("%s\n", text);
        free (text);
    } else
        fprintf (stderr, "hermes-loadgen: %s\n", err);
    json_decref (run.out);
    free (services);
    free (slots);
    s_board_fini (&board);
    return rc ? 1 : 0;
}
