/* hermes-ingress: Where traffic enters the overlay. Data plane: not built yet (control plane only).
 */
#include "ingress_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &ingress_daemon);
}
