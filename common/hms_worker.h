/* hms_worker: a data-plane thread running one libev loop, with a way for other threads to
 * run a function on it (config changes) and a clean stop. Every data-plane daemon runs one
 * or more of these, each with its own SO_REUSEPORT listeners. */
#ifndef HMS_WORKER_H_INCLUDED
#define HMS_WORKER_H_INCLUDED

#include <ev.h>
#include <stdbool.h>

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

/* A graceful stop (hms_workers_drain) asks every tracked object to end by itself: each one's
 * drain function runs once (none by default), and the worker counts as busy while any
 * object that is waited for is still tracked. By default an object is traffic: waited for,
 * left to finish. An object that never ends by itself (a pool, a listener) says wait=false;
 * a listener's drain function closes it, a kept-alive connection's closes it when idle. */
void hms_worker_on_drain (hms_worker_item_t *item, hms_worker_close_fn *drain, bool wait);
/* Starts the graceful stop of a daemon's n workers on their threads; called from another
 * thread, returns once their drain functions have run (or after 1 s each). Thread-safe. */
void hms_workers_drain (hms_worker_t *const *workers, int n);
/* True once the worker's drain functions ran (objects made later check it). Thread-safe. */
bool hms_worker_draining (hms_worker_t *self);
/* Objects the n workers still wait for (valid after hms_workers_drain). Thread-safe. */
int hms_workers_busy (hms_worker_t *const *workers, int n);
/* The worker whose thread runs now, or NULL outside worker threads. */
hms_worker_t *hms_worker_current (void);

struct ev_loop *hms_worker_loop (hms_worker_t *self);
int hms_worker_index (const hms_worker_t *self);
void *hms_worker_arg (const hms_worker_t *self);
/* Per-worker state the daemon hangs on it. */
void hms_worker_set_data (hms_worker_t *self, void *data);
void *hms_worker_data (const hms_worker_t *self);

#endif
