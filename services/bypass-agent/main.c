/* hermes-bypass: Takes spliceable TCP connections out of a proxy. Data plane: not built yet
 * (control plane only). */
#include "bypass_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &bypass_daemon);
}
