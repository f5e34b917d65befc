/* hermes-bypass: takes spliceable TCP connections out of a proxy on the same host and splices
 * them in the kernel (eBPF). */
#include "bypass_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &bypass_daemon);
}
