/* route6.c: the IPv6 table against a brute-force longest-prefix match (random routes of
 * mixed lengths 0..128 nested inside fd00::/8, random and covered addresses), the IPv6
 * peer set, duplicates, invalid prefixes, and publication through the route domain
 * (ovl_routes_set6 / ovl_routes_table6, reclamation of retired tables), and readers
 * racing a writer that publishes thousands of IPv6 tables (a torn or freed table fails
 * here or under ASan/TSan/valgrind). Every wait is bounded. */
#include "overlayd.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

/* Keeps the first len bits of a (16 bytes), zeroes the rest. */
static void apply_mask(uint8_t *a, unsigned len) {
  for (unsigned i = 0; i < 16; i++) {
    unsigned bits = len >= 8 * (i + 1) ? 8 : len > 8 * i ? len - 8 * i : 0;
    a[i] &= (uint8_t)(bits == 0 ? 0 : 0xff << (8 - bits));
  }
}

static int covers(const struct ovl_route6 *r, const uint8_t *a) {
  uint8_t m[16];
  memcpy(m, a, 16);
  apply_mask(m, r->len);
  return memcmp(m, r->net, 16) == 0;
}

static const struct ovl_route6 *brute(const struct ovl_route6 *r, size_t n, const uint8_t *a) {
  const struct ovl_route6 *best = NULL;
  for (size_t i = 0; i < n; i++)
    if (covers(&r[i], a) && (best == NULL || r[i].len > best->len)) best = &r[i];
  return best;
}

static void rnd_addr(uint8_t *a) {
  for (int i = 0; i < 16; i++) a[i] = (uint8_t)rnd();
  if (rnd() % 4) { /* mostly inside fd00:10::/32 so that routes nest */
    a[0] = 0xfd, a[1] = 0x00, a[2] = 0x00, a[3] = 0x10;
    if (rnd() % 2) memset(a + 8, 0, 6);
  }
}

static void test_lpm(size_t want, uint32_t lookups) {
  struct ovl_route6 *r = calloc(want, sizeof(*r));
  TAP_ASSERT(r != NULL, "calloc");
  size_t n = 0;
  for (size_t tries = 0; n < want && tries < want * 20; tries++) {
    struct ovl_route6 c = {0};
    unsigned pick = rnd() % 10;
    c.len = (uint8_t)(pick < 6 ? 64 : pick < 8 ? 32 + rnd() % 97 : rnd() % 129);
    rnd_addr(c.net);
    apply_mask(c.net, c.len);
    c.peer = 0xc0a80000u | (rnd() % 512);
    c.has_peer6 = rnd() % 2;
    if (c.has_peer6) {
      memset(c.peer6, 0, 16);
      c.peer6[0] = 0x20, c.peer6[1] = 0x01, c.peer6[15] = (uint8_t)(rnd() % 200);
    }
    int dup = 0;
    for (size_t i = 0; i < n && !dup; i++) dup = r[i].len == c.len && memcmp(r[i].net, c.net, 16) == 0;
    if (!dup) r[n++] = c;
  }
  struct ovl_rtable6 *t;
  TAP_REQUIRE(ovl_rtable6_build(&t, r, n) == 0, "built an IPv6 table of %zu routes, lengths 0..128", n);
  tap_ok(ovl_rtable6_size(t) == n, "size is %zu", n);
  uint32_t bad = 0, hits = 0, bad_peer = 0;
  for (uint32_t i = 0; i < lookups; i++) {
    uint8_t a[16];
    if (i & 1) {
      const struct ovl_route6 *x = &r[rnd() % n];
      rnd_addr(a);
      uint8_t net[16];
      memcpy(net, a, 16);
      apply_mask(net, x->len);
      for (int k = 0; k < 16; k++) a[k] = (uint8_t)(x->net[k] | (a[k] ^ net[k])); /* x's prefix, random host */
    } else {
      rnd_addr(a);
    }
    const struct ovl_route6 *b = brute(r, n, a), *l = ovl_rtable6_lookup(t, a);
    if ((b == NULL) != (l == NULL) || (b && (b->len != l->len || memcmp(b->net, l->net, 16) != 0 || b->peer != l->peer ||
                                             b->has_peer6 != l->has_peer6 || memcmp(b->peer6, l->peer6, 16) != 0)))
      bad++;
    hits += b != NULL;
    uint8_t ip[16] = {0x20, 0x01};
    ip[15] = (uint8_t)(rnd() % 256);
    int want_peer = 0;
    for (size_t k = 0; k < n; k++) want_peer |= r[k].has_peer6 && memcmp(r[k].peer6, ip, 16) == 0;
    if (ovl_rtable6_is_peer6(t, ip) != (want_peer != 0)) bad_peer++;
  }
  tap_ok(bad == 0, "%zu routes: LPM == brute force on %u addresses (%u covered), %u mismatches", n, lookups, hits, bad);
  tap_ok(bad_peer == 0, "%zu routes: is_peer6 == brute force, %u mismatches", n, bad_peer);
  ovl_rtable6_free(t);
  free(r);
}

static void test_basics(void) {
  struct ovl_rtable6 *t;
  struct ovl_route6 bad1 = {.net = {0xfd, 0, 0, 0x10, 0, 0, 0, 0, 1}, .len = 64};
  struct ovl_route6 bad2 = {.len = 129};
  tap_ok(ovl_rtable6_build(&t, &bad1, 1) == -EINVAL, "host bits set: EINVAL");
  tap_ok(ovl_rtable6_build(&t, &bad2, 1) == -EINVAL, "len 129: EINVAL");
  TAP_REQUIRE(ovl_rtable6_build(&t, NULL, 0) == 0, "empty table");
  uint8_t a[16] = {0xfd};
  tap_ok(ovl_rtable6_lookup(t, a) == NULL && !ovl_rtable6_is_peer6(t, a), "empty: no route, no peer");
  ovl_rtable6_free(t);
  struct ovl_route6 r[3] = {
      {.net = {0xfd, 0, 0, 0x10, 0, 0, 0, 3}, .len = 64, .peer = 1, .has_peer6 = true, .peer6 = {0x20, 1, [15] = 1}},
      {.net = {0xfd}, .len = 8, .peer = 2},
      {.net = {0xfd, 0, 0, 0x10, 0, 0, 0, 3}, .len = 64, .peer = 3}, /* same subnet: last wins */
  };
  TAP_REQUIRE(ovl_rtable6_build(&t, r, 3) == 0, "table with nesting and a duplicate");
  tap_ok(ovl_rtable6_size(t) == 2, "the duplicate counts once");
  uint8_t x[16] = {0xfd, 0, 0, 0x10, 0, 0, 0, 3, [15] = 9};
  const struct ovl_route6 *l = ovl_rtable6_lookup(t, x);
  tap_ok(l && l->peer == 3 && !l->has_peer6, "/64 beats /8; the duplicate replaced the first");
  tap_ok(!ovl_rtable6_is_peer6(t, r[0].peer6), "a v6 peer of a replaced route is no peer any more");
  x[7] = 4;
  l = ovl_rtable6_lookup(t, x);
  tap_ok(l && l->peer == 2, "/8 covers the rest of fd00::/8");
  ovl_rtable6_free(t);
}

static void test_domain(void) {
  struct ovl_routes *d;
  TAP_REQUIRE(ovl_routes_create(&d, 2) == 0, "domain");
  uint8_t x[16] = {0xfd, 0, 0, 0x10, 0, 0, 0, 3, [15] = 9};
  (void)ovl_routes_enter(d, 0);
  const struct ovl_rtable6 *t0 = ovl_routes_table6(d);
  tap_ok(ovl_rtable6_size(t0) == 0, "a new domain has an empty IPv6 table");
  struct ovl_route6 r = {.net = {0xfd, 0, 0, 0x10, 0, 0, 0, 3}, .len = 64, .peer = 7};
  TAP_ASSERT(ovl_routes_set6(d, &r, 1) == 0, "set6");
  tap_ok(ovl_routes_reclaim(d) == 1 && ovl_rtable6_lookup(t0, x) == NULL, "reader 0 inside: its old table stays, unchanged");
  (void)ovl_routes_enter(d, 1);
  const struct ovl_route6 *l = ovl_rtable6_lookup(ovl_routes_table6(d), x);
  tap_ok(l && l->peer == 7, "a reader entering now sees the new IPv6 table");
  ovl_routes_leave(d, 0);
  ovl_routes_leave(d, 1);
  tap_ok(ovl_routes_reclaim(d) == 0, "freed once the readers left");
  struct ovl_route bad = {.net = 1, .len = 8};
  struct ovl_route6 bad6 = {.len = 200};
  tap_ok(ovl_routes_set(d, &bad, 1) == -EINVAL && ovl_routes_set6(d, &bad6, 1) == -EINVAL, "bad sets: EINVAL");
  (void)ovl_routes_enter(d, 0);
  l = ovl_rtable6_lookup(ovl_routes_table6(d), x);
  tap_ok(l && l->peer == 7, "the IPv6 table in force stays after a refused set");
  ovl_routes_leave(d, 0);
  TAP_ASSERT(ovl_routes_set6(d, &r, 1) == 0, "set6");
  ovl_routes_destroy(d);
  tap_ok(1, "destroy frees current and retired IPv6 tables (ASan/valgrind check leaks)");
}

/* ---- readers racing a writer ---- */

#define STRESS_ROUTES 32u /* /64s fd00:10:244:k::/64, all to peer `gen` in table `gen` */

struct stress {
  struct ovl_routes *d;
  atomic_bool done;
  atomic_uint sections[2];
  atomic_uint torn;
};

struct reader_arg {
  struct stress *s;
  uint32_t idx;
};

static void *reader_main(void *arg) {
  struct reader_arg *ra = arg;
  struct stress *s = ra->s;
  uint8_t a[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 0, [15] = 1};
  while (!atomic_load(&s->done)) {
    (void)ovl_routes_enter(s->d, ra->idx);
    const struct ovl_rtable6 *t = ovl_routes_table6(s->d);
    uint32_t first = UINT32_MAX;
    for (uint32_t k = 0; k < STRESS_ROUTES; k++) {
      a[7] = (uint8_t)k;
      const struct ovl_route6 *r = ovl_rtable6_lookup(t, a);
      uint32_t p = r ? r->peer : 0;
      if (first == UINT32_MAX) first = p;
      if (p != first) atomic_fetch_add(&s->torn, 1);
    }
    ovl_routes_leave(s->d, ra->idx);
    atomic_fetch_add(&s->sections[ra->idx], 1);
  }
  return NULL;
}

static void test_race(void) {
  struct stress s = {0};
  TAP_REQUIRE(ovl_routes_create(&s.d, 2) == 0, "domain with 2 readers");
  atomic_init(&s.done, false);
  pthread_t th[2];
  struct reader_arg ra[2];
  for (uint32_t i = 0; i < 2; i++) {
    ra[i] = (struct reader_arg){.s = &s, .idx = i};
    TAP_ASSERT(pthread_create(&th[i], NULL, reader_main, &ra[i]) == 0, "pthread_create");
  }
  uint32_t tables = getenv("OVL_UNDER_TSAN") || getenv("OVL_UNDER_VALGRIND") ? 500u : 5000u;
  struct ovl_route6 r[STRESS_ROUTES];
  int ok = 1;
  for (uint32_t gen = 1; gen <= tables; gen++) {
    for (uint32_t k = 0; k < STRESS_ROUTES; k++) {
      memset(&r[k], 0, sizeof(r[k]));
      r[k].net[0] = 0xfd, r[k].net[3] = 0x10, r[k].net[4] = 0x02, r[k].net[5] = 0x44, r[k].net[7] = (uint8_t)k;
      r[k].len = 64;
      r[k].peer = gen;
    }
    ok &= ovl_routes_set6(s.d, r, STRESS_ROUTES) == 0;
  }
  /* bounded: the readers make progress on their own */
  for (double t0 = now_sec(); now_sec() - t0 < 10.0 && (atomic_load(&s.sections[0]) < 10 || atomic_load(&s.sections[1]) < 10);) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  atomic_store(&s.done, true);
  for (uint32_t i = 0; i < 2; i++) pthread_join(th[i], NULL);
  tap_ok(ok && atomic_load(&s.torn) == 0, "%u IPv6 tables published while 2 readers ran %u + %u sections: none torn", tables,
         atomic_load(&s.sections[0]), atomic_load(&s.sections[1]));
  tap_ok(ovl_routes_reclaim(s.d) == 0, "every retired IPv6 table freed once the readers are offline");
  ovl_routes_destroy(s.d);
}

int main(void) {
  test_basics();
  test_lpm(10, 20000);
  test_lpm(1000, 20000);
  test_domain();
  test_race();
  return tap_done();
}
