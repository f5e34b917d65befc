/* hms_worker: a data-plane thread running one libev loop, with a way for other threads to
 * run a function on it (config changes) and a clean stop. Every data-plane daemon runs one
 * or more of these, each with its own SO_REUSEPORT listeners. */
#ifndef HMS_WORKER_H_INCLUDED
#define HMS_WORKER_H_INCLUDED

#include <ev.h>

typedef struct hms_worker hms_worker_t;
typedef void (hms_worker_fn) (hms_worker_t *worker, void *arg);

/* Starts a thread whose loop first runs init (sets up listeners etc.), then serves until
 * destroyed. When stopped, the tracked objects close (hms_worker_track: listeners,
 * connections, flows), the loop turns until their teardown is done (at most 2 s), and
 * fini releases what init made. Caller owns return value. */
hms_worker_t *hms_worker_new (int index, hms_worker_fn *init, hms_worker_fn *fini, void *arg);
/* Stops the loop, runs fini, joins the thread; nulls *self_p. */
void hms_worker_destroy (hms_worker_t **self_p);

/* Runs fn (worker, arg) in the worker's thread soon. Thread-safe. */
void hms_worker_post (hms_worker_t *self, hms_worker_fn *fn, void *arg);

/* Live objects of a worker (listeners, connections, flows) that must be closed when it
 * stops: every tracked object's close function runs once, newest first; the loop then
 * turns (at most 2 s) so that closes which finish asynchronously can, before fini. A close
 * function untracks its item, at once or from the object's own teardown. */
typedef struct hms_worker_item hms_worker_item_t;
typedef void (hms_worker_close_fn) (void *obj);
/* Caller does not own the return value; pass it to hms_worker_untrack. */
hms_worker_item_t *hms_worker_track (hms_worker_t *self, hms_worker_close_fn *close, void *obj);
void hms_worker_untrack (hms_worker_t *self, hms_worker_item_t *item);
/* The worker whose thread runs now, or NULL outside worker threads. */
hms_worker_t *hms_worker_current (void);

struct ev_loop *hms_worker_loop (hms_worker_t *self);
int hms_worker_index (const hms_worker_t *self);
void *hms_worker_arg (const hms_worker_t *self);
/* Per-worker state the daemon hangs on it. */
void hms_worker_set_data (hms_worker_t *self, void *data);
void *hms_worker_data (const hms_worker_t *self);

#endif
