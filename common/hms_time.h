/* hms_time: clocks used across Hermes (milliseconds). */
#ifndef HMS_TIME_H_INCLUDED
#define HMS_TIME_H_INCLUDED

#include <stdint.h>

/* Monotonic milliseconds, for timeouts and intervals. */
int64_t hms_mono_ms (void);
/* Wall-clock milliseconds since the epoch, for timestamps on messages and rows. */
int64_t hms_wall_ms (void);

#endif
