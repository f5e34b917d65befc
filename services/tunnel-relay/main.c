/* hermes-relay: carries tunnels between proxies over HTTP/2 (TLS 1.3, mutual auth). */
#include "relay_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &relay_daemon);
}
