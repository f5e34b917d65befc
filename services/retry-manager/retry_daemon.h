/* retry_daemon: the definition hms_daemon_main runs for hermes-retry. */
#ifndef HMS_RETRY_DAEMON_H_INCLUDED
#define HMS_RETRY_DAEMON_H_INCLUDED

#include "hms_daemon.h"

extern const hms_daemon_def_t retry_daemon;

#endif
