/* hms_worker: thread + libev loop + a posted-call queue behind an ev_async. */
#include "hms_worker.h"
#include "hms_alloc.h"
#include "hms_log.h"
#include "hms_soon.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct s_call {
    hms_worker_fn *fn;
    void *arg;
    struct s_call *next;
} s_call_t;

struct hms_worker_item {
    hms_worker_close_fn *close;
    hms_worker_close_fn *drain;
    hms_worker_t *worker;
    void *obj;
    bool closing;
    bool drained;       /* its drain function ran */
    bool nowait;        /* not counted by hms_workers_busy */
    bool drain_pending; /* in the worker's drain list, at drain_slot */
    size_t drain_slot;
    struct hms_worker_item *prev, *next;
};

static __thread hms_worker_t *s_current;

struct hms_worker {
    hms_worker_item_t *items;
    int index;
    hms_worker_fn *init, *fini;
    void *arg;
    void *data;
    struct ev_loop *loop;
    ev_async wake;
    hms_soon_t log_flush; /* asked for by a kept log line: it goes out before the loop waits */
    pthread_t thread;
    pthread_mutex_t lock;
    s_call_t *calls, *last;
    bool stopping;
    atomic_bool draining;
    atomic_int waited;              /* tracked objects that a graceful stop waits for */
    hms_worker_item_t **drain_list; /* while the drain functions run */
};

static void s_on_wake (struct ev_loop *loop, ev_async *w, int revents)
{
    hms_worker_t *self = w->data;
    pthread_mutex_lock (&self->lock);
    s_call_t *calls = self->calls;
    self->calls = self->last = NULL;
    bool stopping = self->stopping;
    pthread_mutex_unlock (&self->lock);
    while (calls) {
        s_call_t *next = calls->next;
        calls->fn (self, calls->arg);
        free (calls);
        calls = next;
    }
    if (stopping)
        ev_break (loop, EVBREAK_ALL);
}

static void s_on_grace (struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break (loop, EVBREAK_ALL);
}

static void s_on_log_flush (struct ev_loop *loop, hms_soon_t *soon)
{
    hms_log_flush ();
}

/* Asked for only when there is something to flush: a prepare watcher active on every loop
 * turn cost the relayed data path 10-15 % of its throughput. hms_soon, because a line kept
 * by another prepare callback (an HTTP/2 flush that ends a flow) must not wait for the next
 * event after the poll. */
static void s_on_log_kept (void *arg)
{
    hms_worker_t *self = arg;
    hms_soon_start (self->loop, &self->log_flush);
}

static void *s_thread (void *arg)
{
    hms_worker_t *self = arg;
    s_current = self;
    hms_soon_init (&self->log_flush, s_on_log_flush, self);
    hms_log_batch_begin (s_on_log_kept, self);
    if (self->init)
        self->init (self, self->arg);
    ev_run (self->loop, 0);
    ev_async_stop (self->loop, &self->wake);
    /* Whatever is still open closes now, newest first. A close may free other items, or
     * finish later (a connection's teardown runs in the loop below): rescan each time. */
    for (;;) {
        hms_worker_item_t *item = self->items;
        while (item && item->closing)
            item = item->next;
        if (!item)
            break;
        item->closing = true;
        item->close (item->obj);
    }
    /* Let what closed asynchronously finish its teardown. */
    ev_timer grace;
    ev_timer_init (&grace, s_on_grace, 2.0, 0);
    ev_timer_start (self->loop, &grace);
    ev_unref (self->loop); /* the grace timer alone does not keep the loop running */
    ev_run (self->loop, 0);
    ev_ref (self->loop);
    ev_timer_stop (self->loop, &grace);
    if (self->fini)
        self->fini (self, self->arg);
    /* items closed without untracking (listeners, pools), or whose teardown did not finish
     * in time */
    while (self->items)
        hms_worker_untrack (self, self->items);
    hms_log_batch_end ();
    hms_soon_stop (self->loop, &self->log_flush);
    s_current = NULL;
    return NULL;
}

hms_worker_t *hms_worker_new (int index, hms_worker_fn *init, hms_worker_fn *fini, void *arg)
{
    hms_worker_t *self = hms_alloc (sizeof *self);
    self->index = index;
    self->init = init;
    self->fini = fini;
    self->arg = arg;
    self->loop = ev_loop_new (EVFLAG_AUTO);
    pthread_mutex_init (&self->lock, NULL);
    ev_async_init (&self->wake, s_on_wake);
    self->wake.data = self;
    ev_async_start (self->loop, &self->wake);
    if (pthread_create (&self->thread, NULL, s_thread, self) != 0)
        abort (); /* no thread: out of resources */
    return self;
}

void hms_worker_destroy (hms_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_worker_t *self = *self_p;
    pthread_mutex_lock (&self->lock);
    self->stopping = true;
    pthread_mutex_unlock (&self->lock);
    ev_async_send (self->loop, &self->wake);
    pthread_join (self->thread, NULL);
    while (self->calls) {
        s_call_t *next = self->calls->next;
        free (self->calls);
        self->calls = next;
    }
    ev_loop_destroy (self->loop);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

void hms_worker_post (hms_worker_t *self, hms_worker_fn *fn, void *arg)
{
    s_call_t *call = hms_alloc (sizeof *call);
    call->fn = fn;
    call->arg = arg;
    pthread_mutex_lock (&self->lock);
    if (self->last)
        self->last->next = call;
    else
        self->calls = call;
    self->last = call;
    pthread_mutex_unlock (&self->lock);
    ev_async_send (self->loop, &self->wake);
}

hms_worker_item_t *hms_worker_track (hms_worker_t *self, hms_worker_close_fn *close, void *obj)
{
    hms_worker_item_t *item = hms_alloc (sizeof *item);
    item->close = close;
    item->worker = self;
    item->obj = obj;
    item->next = self->items;
    if (self->items)
        self->items->prev = item;
    self->items = item;
    atomic_fetch_add (&self->waited, 1);
    return item;
}

void hms_worker_untrack (hms_worker_t *self, hms_worker_item_t *item)
{
    if (!item)
        return;
    if (item->prev)
        item->prev->next = item->next;
    else
        self->items = item->next;
    if (item->next)
        item->next->prev = item->prev;
    if (!item->nowait)
        atomic_fetch_sub (&self->waited, 1);
    if (item->drain_pending)
        self->drain_list[item->drain_slot] = NULL; /* gone before its turn */
    free (item);
}

void hms_worker_on_drain (hms_worker_item_t *item, hms_worker_close_fn *drain, bool wait)
{
    hms_worker_t *self = item->worker;
    item->drain = drain;
    if (item->nowait == wait) {
        item->nowait = !wait;
        atomic_fetch_add (&self->waited, wait ? 1 : -1);
    }
}

/* Runs the drain function of every object tracked now, once. A drain function may untrack
 * (free) its own object or others: those are taken off the list as they go, so one pass
 * over a list made first serves any number of objects. Objects made meanwhile check
 * hms_worker_draining themselves. */
static void s_drain_items (hms_worker_t *self, void *arg)
{
    size_t n = 0;
    for (hms_worker_item_t *item = self->items; item; item = item->next)
        n += item->drain && !item->drained;
    if (n) {
        self->drain_list = hms_alloc (n * sizeof *self->drain_list);
        size_t k = 0;
        for (hms_worker_item_t *item = self->items; item; item = item->next)
            if (item->drain && !item->drained) {
                item->drain_pending = true;
                item->drain_slot = k;
                self->drain_list[k++] = item;
            }
        for (size_t i = 0; i < n; i++) {
            hms_worker_item_t *item = self->drain_list[i];
            if (!item)
                continue;
            self->drain_list[i] = NULL;
            item->drain_pending = false;
            item->drained = true;
            item->drain (item->obj);
        }
        free (self->drain_list);
        self->drain_list = NULL;
    }
    atomic_store (&self->draining, true);
}

/* From another thread: wait (a little) until the drain ran, so that hms_workers_busy counts
 * what is really still open. */
static void s_drain_wait (hms_worker_t *self)
{
    for (int i = 0; s_current != self && i < 1000 && !atomic_load (&self->draining); i++)
        usleep (1000);
}

bool hms_worker_draining (hms_worker_t *self)
{
    return atomic_load (&self->draining);
}

void hms_workers_drain (hms_worker_t *const *workers, int n)
{
    for (int i = 0; i < n; i++)
        hms_worker_post (workers[i], s_drain_items, NULL);
    for (int i = 0; i < n; i++)
        s_drain_wait (workers[i]);
}

int hms_workers_busy (hms_worker_t *const *workers, int n)
{
    int busy = 0;
    for (int i = 0; i < n; i++)
        busy += atomic_load (&workers[i]->waited);
    return busy;
}

hms_worker_t *hms_worker_current (void)
{
    return s_current;
}

struct ev_loop *hms_worker_loop (hms_worker_t *self)
{
    return self->loop;
}

int hms_worker_index (const hms_worker_t *self)
{
    return self->index;
}

void *hms_worker_arg (const hms_worker_t *self)
{
    return self->arg;
}

void hms_worker_set_data (hms_worker_t *self, void *data)
{
    self->data = data;
}

void *hms_worker_data (const hms_worker_t *self)
{
    return self->data;
}
