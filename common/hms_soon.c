/* hms_soon: a prepare and an idle watcher that run one callback at the end of a loop turn. */
#include "hms_soon.h"

static void s_run (struct ev_loop *loop, hms_soon_t *self)
{
    hms_soon_stop (loop, self);
    self->fn (loop, self);
}

static void s_on_prepare (struct ev_loop *loop, ev_prepare *w, int revents)
{
    s_run (loop, w->data);
}

static void s_on_idle (struct ev_loop *loop, ev_idle *w, int revents)
{
    s_run (loop, w->data);
}

void hms_soon_init (hms_soon_t *self, hms_soon_fn *fn, void *data)
{
    ev_prepare_init (&self->prep, s_on_prepare);
    self->prep.data = self;
    ev_idle_init (&self->idle, s_on_idle);
    self->idle.data = self;
    self->fn = fn;
    self->data = data;
}

void hms_soon_start (struct ev_loop *loop, hms_soon_t *self)
{
    if (ev_is_active (&self->prep))
        return;
    ev_prepare_start (loop, &self->prep);
    ev_idle_start (loop, &self->idle);
}

void hms_soon_stop (struct ev_loop *loop, hms_soon_t *self)
{
    ev_prepare_stop (loop, &self->prep);
    ev_idle_stop (loop, &self->idle);
}

bool hms_soon_pending (const hms_soon_t *self)
{
    return ev_is_active (&self->prep);
}
