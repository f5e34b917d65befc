/* hms_time: monotonic and wall clocks in milliseconds. */
#include "hms_time.h"

#include <time.h>

static int64_t s_ms (clockid_t id)
{
    struct timespec ts;
    clock_gettime (id, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t hms_mono_ms (void)
{
    return s_ms (CLOCK_MONOTONIC);
}

int64_t hms_wall_ms (void)
{
    return s_ms (CLOCK_REALTIME);
}
