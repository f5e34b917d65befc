/* relay_daemon: the definition hms_daemon_main runs for hermes-relay. */
#ifndef HMS_RELAY_DAEMON_H_INCLUDED
#define HMS_RELAY_DAEMON_H_INCLUDED

#include "hms_daemon.h"

extern const hms_daemon_def_t relay_daemon;

#endif
