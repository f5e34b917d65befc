/* policy_daemon: the definition hms_daemon_main runs for hermes-policy. */
#ifndef HMS_POLICY_DAEMON_H_INCLUDED
#define HMS_POLICY_DAEMON_H_INCLUDED

#include "hms_daemon.h"

extern const hms_daemon_def_t policy_daemon;

#endif
