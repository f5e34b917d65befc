/* controller: the Hermes controller service. Binds the api ROUTER and the config PUB
 * (both CURVE), keeps service instances and their health, compiles and pushes versioned
 * snapshots, and answers hermesctl. Runs in its own thread (czmq actor, zloop). */
#ifndef CONTROLLER_H_INCLUDED
#define CONTROLLER_H_INCLUDED

#include <stddef.h>

typedef struct {
    const char *api_bind;  /* api endpoint, e.g. tcp://0.0.0.0:7100 */
    const char *push_bind; /* push endpoint, e.g. tcp://0.0.0.0:7101 */
    const char *db;        /* path of the SQLite file */
    const char *keys_dir;
    const char *instance; /* this controller's name in status */
    int down_after_ms;    /* silence after which an instance is down; 0 means 3000 */
} controller_opts_t;

typedef struct controller controller_t;

/* Opens the database, binds the endpoints and starts serving. Caller owns return value;
 * NULL with err (what failed and what to do). */
controller_t *controller_new (const controller_opts_t *opts, char *err, size_t errlen);
/* Stops serving and closes the database; nulls *self_p. */
void controller_destroy (controller_t **self_p);

#endif
