/* ingress_daemon: the definition hms_daemon_main runs for hermes-ingress. */
#ifndef HMS_INGRESS_DAEMON_H_INCLUDED
#define HMS_INGRESS_DAEMON_H_INCLUDED

#include "hms_daemon.h"

extern const hms_daemon_def_t ingress_daemon;

#endif
