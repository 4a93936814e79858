/* backoff.c and ratelimit.c with an injected clock (no sleeps): the offload gate's
 * back-off (1 s, doubled per refusal up to 60 s, reset after 60 s on; off for good when
 * never taken), and the ICMP token bucket (burst, then rate; the bound burst + rate * E
 * over E; no limit at rate 0; several threads never exceed it together). */
#include "overlayd.h"

#include <errno.h>
#include <stdint.h>
#include <pthread.h>

#include "tap.h"

#define S 1000000000ull /* ns per second */

static void test_gate(void) {
  struct ovl_offload_gate g;
  ovl_offload_gate_init(&g, false);
  tap_ok(!ovl_offload_gate_fail(&g, 5 * S) && !ovl_offload_gate_poll(&g, 1000 * S) && g.state == OVL_OFFLOAD_OFF,
         "not taken at start: off for good (no fail, no re-enable)");

  ovl_offload_gate_init(&g, true);
  uint64_t t = 100 * S;
  tap_ok(g.state == OVL_OFFLOAD_ON && ovl_offload_gate_fail(&g, t) && g.state == OVL_OFFLOAD_BACKOFF,
         "one refusal switches it off (counted once)");
  tap_ok(!ovl_offload_gate_fail(&g, t + 1), "a second refusal while off is not a second switch");
  tap_ok(!ovl_offload_gate_poll(&g, t + S - 1) && ovl_offload_gate_poll(&g, t + S) && g.state == OVL_OFFLOAD_ON,
         "back on exactly 1 s later");
  /* refusals right after each re-enable: 2, 4, 8, 16, 32, 60, 60 s */
  const uint64_t want[] = {2, 4, 8, 16, 32, 60, 60};
  int ok = 1;
  t += S;
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    ok &= ovl_offload_gate_fail(&g, t);
    ok &= !ovl_offload_gate_poll(&g, t + want[i] * S - 1);
    ok &= ovl_offload_gate_poll(&g, t + want[i] * S);
    t += want[i] * S;
  }
  tap_ok(ok, "repeated refusals: back-off 2, 4, 8, 16, 32 s, then capped at 60 s");
  t += 60 * S; /* on for 60 s without a refusal */
  tap_ok(ovl_offload_gate_fail(&g, t) && !ovl_offload_gate_poll(&g, t + S - 1) && ovl_offload_gate_poll(&g, t + S),
         "after 60 s on, the back-off starts again at 1 s");
}

static void test_bucket(void) {
  struct ovl_ratelimit r;
  tap_ok(ovl_ratelimit_init(&r, 10, 0) == -EINVAL, "a rate with burst 0: -EINVAL");
  TAP_REQUIRE(ovl_ratelimit_init(&r, 1000, 50) == 0, "init 1000/s burst 50 (Linux's icmp_msgs_per_sec/burst)");
  uint64_t t = 7 * S;
  int n = 0;
  for (int i = 0; i < 1000; i++) n += ovl_ratelimit_take(&r, t);
  tap_ok(n == 50, "1000 at one instant: exactly the burst of 50 pass (got %d)", n);
  tap_ok(!ovl_ratelimit_take(&r, t + 999999) && ovl_ratelimit_take(&r, t + 1000000) && !ovl_ratelimit_take(&r, t + 1000000),
         "then one token per 1 ms");
  n = 0;
  for (int i = 0; i < 5000; i++) n += ovl_ratelimit_take(&r, t + 10 * S + (uint64_t)i * 1000); /* 5000 in 5 ms */
  tap_ok(n == 50 + 4, "after 10 s idle the bucket is full again (50), not more: 5000 takes in 0..4.999 ms pass %d (want 50 + 4)", n);

  /* the bound over a flood: a take every 100 us for 2 s at rate 100/s burst 5 */
  TAP_REQUIRE(ovl_ratelimit_init(&r, 100, 5) == 0, "init 100/s burst 5");
  n = 0;
  for (int i = 0; i < 20000; i++) n += ovl_ratelimit_take(&r, 3 * S + (uint64_t)i * 100000);
  tap_ok(n <= 5 + 200 && n >= 5 + 199, "20000 takes over 2 s: %d pass (burst 5 + 100/s x 2 s = 205 at most)", n);

  /* a rate that does not divide 1 s: never more than rate per second */
  TAP_REQUIRE(ovl_ratelimit_init(&r, 3, 1) == 0, "init 3/s burst 1");
  n = 0;
  for (int i = 0; i < 1000; i++) n += ovl_ratelimit_take(&r, (uint64_t)i * (S / 100)); /* 10 s */
  tap_ok(n <= 1 + 30, "3/s over 10 s: %d pass (<= 31)", n);

  TAP_REQUIRE(ovl_ratelimit_init(&r, 0, 0) == 0, "init rate 0");
  n = 0;
  for (int i = 0; i < 1000; i++) n += ovl_ratelimit_take(&r, S);
  tap_ok(n == 1000, "rate 0: no limit");
}

/* The bounds the configuration accepts (rate and burst up to 2^32 - 1): the token math
 * (interval x burst, tat + interval) must not wrap; and a clock read that is older than
 * another taker's (threads) is refused, never granted extra tokens. */
static void test_bucket_extremes(void) {
  struct ovl_ratelimit r;
  int n = 0;
  TAP_REQUIRE(ovl_ratelimit_init(&r, UINT32_MAX, UINT32_MAX) == 0, "init rate 2^32-1 burst 2^32-1");
  for (int i = 0; i < 100000; i++) n += ovl_ratelimit_take(&r, 5 * S);
  tap_ok(n == 100000, "rate and burst 2^32-1: 100000 takes at one instant all pass (got %d)", n);
  TAP_REQUIRE(ovl_ratelimit_init(&r, UINT32_MAX, 1) == 0, "init rate 2^32-1 burst 1");
  tap_ok(ovl_ratelimit_take(&r, 5 * S) && !ovl_ratelimit_take(&r, 5 * S) && ovl_ratelimit_take(&r, 5 * S + 1),
         "rate 2^32-1: at most one per ns (1e9/s), never more than the rate");
  TAP_REQUIRE(ovl_ratelimit_init(&r, 1, UINT32_MAX) == 0, "init rate 1 burst 2^32-1 (tolerance ~136 years in ns)");
  n = 0;
  for (int i = 0; i < 100000; i++) n += ovl_ratelimit_take(&r, 3650ull * 86400ull * S); /* 10 years of uptime */
  tap_ok(n == 100000, "rate 1 burst 2^32-1: 100000 takes at one instant all pass, no wrap (got %d)", n);
  TAP_REQUIRE(ovl_ratelimit_init(&r, 1, 1) == 0, "init 1/s burst 1");
  tap_ok(ovl_ratelimit_take(&r, 10 * S) && !ovl_ratelimit_take(&r, 5 * S) && !ovl_ratelimit_take(&r, 10 * S + S - 1) &&
             ovl_ratelimit_take(&r, 11 * S),
         "a clock 5 s behind the last take is refused and takes nothing: the next token comes 1 s after the last");
}

/* Several threads on one bucket at one frozen instant: together exactly the burst. */
static struct ovl_ratelimit shared;
static _Atomic int passed;
static void *taker(void *arg) {
  (void)arg;
  for (int i = 0; i < 20000; i++)
    if (ovl_ratelimit_take(&shared, 42 * S)) atomic_fetch_add(&passed, 1);
  return NULL;
}
static void test_bucket_threads(void) {
  TAP_REQUIRE(ovl_ratelimit_init(&shared, 1000, 500) == 0, "init 1000/s burst 500");
  pthread_t th[4];
  for (int i = 0; i < 4; i++) TAP_ASSERT(pthread_create(&th[i], NULL, taker, NULL) == 0, "pthread_create");
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  tap_ok(atomic_load(&passed) == 500, "4 threads x 20000 takes at one instant: exactly the burst of 500 (got %d)",
         atomic_load(&passed));
}

int main(void) {
  test_gate();
  test_bucket();
  test_bucket_extremes();
  test_bucket_threads();
  return tap_done();
}
