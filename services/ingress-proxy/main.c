/* hermes-ingress: where traffic enters the overlay (HTTP/1.1 and HTTP/2 proxy, transparent). */
#include "ingress_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &ingress_daemon);
}
