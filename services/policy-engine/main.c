/* hermes-policy: one L3-L7 rule set for the overlay; answers batched policy.decide requests
 * from the proxies (services/policy-engine/policy_server.h). */
#include "policy_daemon.h"

int main (int argc, char **argv)
{
    return hms_daemon_main (argc, argv, &policy_daemon);
}
