/* hermes-ndn: NDN forwarder at the edge of the overlay. Faces: not built yet (control plane only).
 */
#include "ndn_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &ndn_daemon);
}
