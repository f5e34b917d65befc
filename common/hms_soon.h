/* hms_soon: runs a callback once, from the loop, before the loop next waits for events,
 * that is at the end of the current loop turn. For work gathered over a turn (a flush, a
 * batch of queries) and for results reported from the loop rather than re-entrantly (an
 * answer known at once). An ev_idle alone is not that: libev runs idle watchers only in a
 * turn with no event pending, which a busy loop may not have for a long time (not during a
 * burst of a thousand connections). A prepare watcher runs before every poll, busy or not;
 * with it an idle watcher keeps the poll from blocking, for a run asked for from another
 * prepare callback (which libev starts only after the next poll). Single-threaded. */
#ifndef HMS_SOON_H_INCLUDED
#define HMS_SOON_H_INCLUDED

#include <ev.h>
#include <stdbool.h>

typedef struct hms_soon hms_soon_t;
typedef void (hms_soon_fn) (struct ev_loop *loop, hms_soon_t *soon);

struct hms_soon {
    ev_prepare prep;
    ev_idle idle;
    hms_soon_fn *fn;
    void *data; /* the caller's */
};

void hms_soon_init (hms_soon_t *self, hms_soon_fn *fn, void *data);
/* Asks for one run of fn; asking again before it ran changes nothing. */
void hms_soon_start (struct ev_loop *loop, hms_soon_t *self);
/* Withdraws a run asked for (fn will not run). */
void hms_soon_stop (struct ev_loop *loop, hms_soon_t *self);
/* True while a run is asked for. */
bool hms_soon_pending (const hms_soon_t *self);

#endif
