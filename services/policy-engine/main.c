/* hermes-policy: One L3-L7 rule set for the overlay. Decisions: not built yet; rules are checked on
 * apply. */
#include "policy_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &policy_daemon);
}
