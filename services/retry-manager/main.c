/* hermes-retry: The proxies' retry brain. Verdicts: not built yet (control plane only). */
#include "retry_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &retry_daemon);
}
