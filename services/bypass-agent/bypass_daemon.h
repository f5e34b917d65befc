/* bypass_daemon: the definition hms_daemon_main runs for hermes-bypass. */
#ifndef HMS_BYPASS_DAEMON_H_INCLUDED
#define HMS_BYPASS_DAEMON_H_INCLUDED

#include "hms_daemon.h"

extern const hms_daemon_def_t bypass_daemon;

#endif
