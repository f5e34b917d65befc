/* hermes-relay: Carries tunnels between proxies. Data plane: not built yet (control plane only). */
#include "relay_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &relay_daemon);
}
