/*
 * The ICMP error rate limit of the native engine (see overlayd.h, "ratelimit.c"): one
 * token bucket per engine, shared by its queue threads, kept as a single atomic word in
 * the GCRA form (the "theoretical arrival time" of the next message): a take is one
 * load + one compare-and-swap, retried only when another queue took a token meanwhile.
 */
#include "overlayd.h"

#include <errno.h>

#define NS_PER_SEC 1000000000ull

int ovl_ratelimit_init(struct ovl_ratelimit *r, uint32_t rate_per_sec, uint32_t burst) {
  if (rate_per_sec > 0 && burst == 0) return -EINVAL;
  /* rounded up: never more than rate_per_sec tokens per second */
  r->interval_ns = rate_per_sec == 0 ? 0 : (NS_PER_SEC + rate_per_sec - 1) / rate_per_sec;
  r->tolerance_ns = r->interval_ns * burst;
  atomic_init(&r->tat_ns, 0);
  return 0;
}

bool ovl_ratelimit_take(struct ovl_ratelimit *r, uint64_t now_ns) {
  if (r->interval_ns == 0) return true;
  uint64_t tat = atomic_load_explicit(&r->tat_ns, memory_order_relaxed);
  for (;;) {
    uint64_t next = (tat > now_ns ? tat : now_ns) + r->interval_ns;
    if (next - now_ns > r->tolerance_ns) return false; /* the bucket is empty */
    if (atomic_compare_exchange_weak_explicit(&r->tat_ns, &tat, next, memory_order_relaxed, memory_order_relaxed))
      return true;
  }
}
