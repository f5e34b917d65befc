/* ndn_daemon: the definition hms_daemon_main runs for hermes-ndn. */
#ifndef HMS_NDN_DAEMON_H_INCLUDED
#define HMS_NDN_DAEMON_H_INCLUDED

#include "hms_daemon.h"

extern const hms_daemon_def_t ndn_daemon;

#endif
