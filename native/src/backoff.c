/*
 * The run-time switch of one offload of one queue (see overlayd.h, "backoff.c"): on, off
 * for a back-off after the kernel refused it, or off for good when it was never taken.
 * Pure state machine over a caller-supplied monotonic time: no clock, no globals.
 */
#include "overlayd.h"

void ovl_offload_gate_init(struct ovl_offload_gate *g, bool on) {
  g->state = on ? OVL_OFFLOAD_ON : OVL_OFFLOAD_OFF;
  g->delay_ns = OVL_OFFLOAD_RETRY_MIN_NS;
  g->retry_at_ns = 0;
  g->on_since_ns = 0;
}

bool ovl_offload_gate_fail(struct ovl_offload_gate *g, uint64_t now_ns) {
  if (g->state != OVL_OFFLOAD_ON) return false;
  /* on for a whole maximal back-off without a failure: the path is sound again */
  if (now_ns - g->on_since_ns >= OVL_OFFLOAD_RETRY_MAX_NS) g->delay_ns = OVL_OFFLOAD_RETRY_MIN_NS;
  g->state = OVL_OFFLOAD_BACKOFF;
  g->retry_at_ns = now_ns + g->delay_ns;
  g->delay_ns = g->delay_ns * 2 > OVL_OFFLOAD_RETRY_MAX_NS ? OVL_OFFLOAD_RETRY_MAX_NS : g->delay_ns * 2;
  return true;
}

bool ovl_offload_gate_poll(struct ovl_offload_gate *g, uint64_t now_ns) {
  if (g->state != OVL_OFFLOAD_BACKOFF || now_ns < g->retry_at_ns) return false;
  g->state = OVL_OFFLOAD_ON;
  g->on_since_ns = now_ns;
  return true;
}
