/* bypass_delay: the synthetic delay ramp. Before a flow is spliced, the RTT its client sees
 * is the client leg's; after, it is the client leg's plus the server leg's. So that the
 * client's congestion control sees no sudden jump, the agent first holds the segments
 * arriving from the client in a user-space delay line (NFQUEUE: these kernels have no netem)
 * and raises the delay in steps (delay_step_ms, default 20 ms, each held delay_step_hold_ms)
 * towards the server leg's RTT; the drain and freeze follow with the last step still in
 * place, and the splice (tc ingress, before netfilter) takes over from it. No ramp when the
 * server leg's RTT is below one step.
 *
 * Plumbing: an iptables chain HERMES-BYPASS in the mangle table, jumped to from PREROUTING,
 * with one rule per ramping flow (client address and port -> the proxy's address and port,
 * NFQUEUE --queue-bypass, so that packets pass if the agent dies); made on the first ramp,
 * flushed and removed when the agent stops. The drain prefers a moment when the delay line
 * holds none of the flow's segments; for the first half of drain_timeout_ms only such a
 * moment counts as quiet. After that, and when one slips in during the freeze, segments
 * still held at the splice go through the data plane at once, in order, ahead of what
 * follows them through the splice (bypass_dp_inject): released to the host stack they would
 * meet no socket and draw an RST, and dropped, the client would wait for a retransmission
 * timeout; they see the delay they had plus the server leg's, once. When the offer is
 * refused they are released to their socket at once.
 * Needs iptables and CAP_NET_ADMIN; without them the ramp is skipped (logged once). */
#ifndef HMS_BYPASS_DELAY_H_INCLUDED
#define HMS_BYPASS_DELAY_H_INCLUDED

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "bypass_int.h"

/* Caller owns return value. Nothing is set up before the first ramp. */
bypass_delay_t *bypass_delay_new (bypass_agent_t *agent, struct ev_loop *loop, int queue,
                                  int step_ms, int hold_ms);
/* Releases held packets, removes the iptables chain; nulls *self_p. */
void bypass_delay_destroy (bypass_delay_t **self_p);

/* True when the flow's server leg is at least one step away (and the ramp can work). */
bool bypass_delay_wanted (bypass_delay_t *self, bypass_flow_t *flow);
/* Starts the ramp of a flow (state BYPASS_F_RAMP); calls bypass_flow_drain when the last
 * step is reached (or at once when the delay line cannot be set up). */
void bypass_delay_ramp (bypass_delay_t *self, bypass_flow_t *flow);
/* How many of the flow's segments the delay line holds, after taking in what the kernel
 * queued so far. */
size_t bypass_delay_held (bypass_delay_t *self, bypass_flow_t *flow);
/* Stops delaying the flow's client segments. Those held go on now, in order: to their
 * socket (refused) or into the splice (spliced). Nothing when the flow is not in the delay
 * line. */
void bypass_delay_remove (bypass_delay_t *self, bypass_flow_t *flow, bool spliced);

#endif
