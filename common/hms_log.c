/* hms_log: line-oriented logging to stderr with run-time debug switches per subsystem, and
 * per-thread batching of access lines for event-loop threads. */
#include "hms_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HMS_LOG_MAX_DEBUG 32

static char s_name[64] = "hermes";
static hms_log_level_t s_level = HMS_LOG_INFO;
static char s_debug[HMS_LOG_MAX_DEBUG][48];
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *s_level_names[] = {"debug", "info", "warning", "error"};

/* The lines an event-loop thread keeps until its loop waits (hms_log_batch_begin) */
#define S_BATCH_MAX 16384
static __thread char *s_batch; /* NULL: each line is written at once */
static __thread size_t s_batch_len;
static __thread hms_log_kept_fn *s_kept;
static __thread void *s_kept_arg;

static void s_write_all (const char *p, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t w = write (STDERR_FILENO, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t) w;
    }
}

void hms_log_batch_begin (hms_log_kept_fn *kept, void *arg)
{
    if (!s_batch)
        s_batch = malloc (S_BATCH_MAX); /* none: lines keep going out one by one */
    s_batch_len = 0;
    s_kept = kept;
    s_kept_arg = arg;
}

void hms_log_flush (void)
{
    if (s_batch && s_batch_len) {
        s_write_all (s_batch, s_batch_len);
        s_batch_len = 0;
    }
}

void hms_log_batch_end (void)
{
    hms_log_flush ();
    free (s_batch);
    s_batch = NULL;
    s_kept = NULL;
}

void hms_log_set_name (const char *name)
{
    snprintf (s_name, sizeof s_name, "%s", name);
}

void hms_log_set_level (hms_log_level_t level)
{
    s_level = level;
}

int hms_log_level_parse (const char *text, hms_log_level_t *level)
{
    for (int i = 0; i < 4; i++)
        if (text && strcmp (text, s_level_names[i]) == 0) {
            *level = (hms_log_level_t) i;
            return 0;
        }
    return -1;
}

void hms_log_debug_set (const char *subsystem, bool on)
{
    pthread_mutex_lock (&s_lock);
    int free_slot = -1;
    for (int i = 0; i < HMS_LOG_MAX_DEBUG; i++) {
        if (s_debug[i][0] == 0) {
            if (free_slot < 0)
                free_slot = i;
        } else if (strcmp (s_debug[i], subsystem) == 0) {
            if (!on)
                s_debug[i][0] = 0;
            pthread_mutex_unlock (&s_lock);
            return;
        }
    }
    if (on && free_slot >= 0)
        snprintf (s_debug[free_slot], sizeof s_debug[free_slot], "%s", subsystem);
    pthread_mutex_unlock (&s_lock);
}

bool hms_log_debug_on (const char *subsystem)
{
    if (s_level == HMS_LOG_DEBUG)
        return true;
    bool on = false;
    pthread_mutex_lock (&s_lock);
    for (int i = 0; i < HMS_LOG_MAX_DEBUG && !on; i++)
        on = s_debug[i][0] && strcmp (s_debug[i], subsystem) == 0;
    pthread_mutex_unlock (&s_lock);
    return on;
}

static void s_vlog (hms_log_level_t level, int err, bool keep, const char *fmt, va_list ap)
{
    if (level < s_level && level != HMS_LOG_DEBUG)
        return;
    /* whole lines per write(2): lines of several threads never interleave, and a busy
     * proxy's per-flow lines cost one formatting pass each (the date is formatted once a
     * second) */
    static __thread time_t stamp_sec = -1;
    static __thread char stamp[32];
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    if (ts.tv_sec != stamp_sec) {
        struct tm tm;
        gmtime_r (&ts.tv_sec, &tm);
        strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        stamp_sec = ts.tv_sec;
    }
    char line[2304];
    int n = snprintf (line, sizeof line, "%s.%03ldZ %s %s: ", stamp, ts.tv_nsec / 1000000,
                      s_level_names[level], s_name);
    int m = vsnprintf (line + n, sizeof line - (size_t) n, fmt, ap);
    size_t len = (size_t) n + (m < 0 ? 0 : (size_t) m);
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* cut: the line still ends */
    if (err)
        len += (size_t) snprintf (line + len, sizeof line - len, ": %s", strerror (err));
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    if (s_batch && keep) {
        if (s_batch_len + len > S_BATCH_MAX)
            hms_log_flush ();
        bool first = s_batch_len == 0;
        memcpy (s_batch + s_batch_len, line, len);
        s_batch_len += len;
        if (first && s_kept)
            s_kept (s_kept_arg);
        return;
    }
    hms_log_flush (); /* what this thread kept comes first */
    s_write_all (line, len);
}

void hms_log (hms_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    s_vlog (level, 0, false, fmt, ap);
    va_end (ap);
}

void hms_log_sys (hms_log_level_t level, const char *fmt, ...)
{
    int err = errno;
    va_list ap;
    va_start (ap, fmt);
    s_vlog (level, err, false, fmt, ap);
    va_end (ap);
}

void hms_access (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    s_vlog (HMS_LOG_INFO, 0, true, fmt, ap);
    va_end (ap);
}
