/* hms_current: atomic holder of a daemon's running config. */
#include "hms_current.h"
#include "hms_alloc.h"

#include <pthread.h>
#include <stdlib.h>

struct hms_current {
    pthread_mutex_t lock;
    json_t *config;
    int64_t version;
};

hms_current_t *hms_current_new (void)
{
    hms_current_t *self = hms_alloc (sizeof *self);
    pthread_mutex_init (&self->lock, NULL);
    return self;
}

void hms_current_destroy (hms_current_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    json_decref ((*self_p)->config);
    pthread_mutex_destroy (&(*self_p)->lock);
    free (*self_p);
    *self_p = NULL;
}

void hms_current_set (hms_current_t *self, json_t *config, int64_t version)
{
    pthread_mutex_lock (&self->lock);
    json_t *old = self->config;
    self->config = config;
    self->version = version;
    pthread_mutex_unlock (&self->lock);
    json_decref (old);
}

json_t *hms_current_get (hms_current_t *self, int64_t *version)
{
    pthread_mutex_lock (&self->lock);
    json_t *config = json_incref (self->config);
    if (version)
        *version = self->version;
    pthread_mutex_unlock (&self->lock);
    return config;
}

void *hms_current_start (hms_config_t *cfg, char *err, size_t errlen)
{
    return hms_current_new ();
}

void hms_current_stop (void *state)
{
    hms_current_t *self = state;
    hms_current_destroy (&self);
}

void hms_current_apply (void *state, json_t *config, int64_t version)
{
    hms_current_set (state, config, version);
}
