/* hms_log: one line per event on stderr, "TS LEVEL NAME: message key=value ...". */
#ifndef HMS_LOG_H_INCLUDED
#define HMS_LOG_H_INCLUDED

#include <stdbool.h>

typedef enum { HMS_LOG_DEBUG = 0, HMS_LOG_INFO, HMS_LOG_WARNING, HMS_LOG_ERROR } hms_log_level_t;

/* Sets the process name printed on each line (copied). */
void hms_log_set_name (const char *name);
void hms_log_set_level (hms_log_level_t level);
/* Parses "debug", "info", "warning", "error"; -1 on anything else. */
int hms_log_level_parse (const char *text, hms_log_level_t *level);
/* Turns debug output of one subsystem ("relay.h2") on or off at run time. */
void hms_log_debug_set (const char *subsystem, bool on);
bool hms_log_debug_on (const char *subsystem);

/* Access lines (hms_access): one per finished flow or request, at level info. An event-loop
 * thread that called hms_log_batch_begin keeps them and writes them together when its loop
 * is about to wait (hms_log_flush): one write(2) per loop turn with flows ending, instead of
 * one per flow, which
 * on a busy proxy is a file system write per flow saved. Every other line is written at
 * once, after what the thread kept (order holds), so a line logged before an answer is sent
 * is in the log before the answer leaves; an access line may follow its flow's last bytes by
 * a loop turn. A full batch is written when the next line does not fit; hms_log_batch_end
 * writes what is left. A crash loses at most the access lines of its loop turn. */
typedef void (hms_log_kept_fn) (void *arg);
/* kept (may be NULL) runs when a line goes into this thread's empty batch: the loop's cue to
 * flush before it next waits. */
void hms_log_batch_begin (hms_log_kept_fn *kept, void *arg);
void hms_log_flush (void);
void hms_log_batch_end (void);

void hms_log (hms_log_level_t level, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* Appends ": strerror(errno)" to the message. */
void hms_log_sys (hms_log_level_t level, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

#define hms_error(...)   hms_log (HMS_LOG_ERROR, __VA_ARGS__)
#define hms_warning(...) hms_log (HMS_LOG_WARNING, __VA_ARGS__)
#define hms_info(...)    hms_log (HMS_LOG_INFO, __VA_ARGS__)
/* An info line for a finished flow or request; kept for the loop turn when batching. */
void hms_access (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
#define hms_debug(sub, ...)                                                                        \
    do {                                                                                           \
        if (hms_log_debug_on (sub))                                                                \
            hms_log (HMS_LOG_DEBUG, __VA_ARGS__);                                                  \
    } while (0)

#endif
