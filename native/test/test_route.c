/* route.c: the table against a brute-force longest-prefix match (10 / 1,000 / 10,000
 * random routes of mixed lengths, random and covered addresses), the peer set, the
 * per-thread cache across table swaps, reclamation bookkeeping, and readers racing a
 * writer that publishes thousands of tables (run under ASan/UBSan, TSan and valgrind:
 * a use-after-free or a data race fails there). Every wait is bounded. */
#include "overlayd.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

static uint32_t mask(unsigned len) { return len == 0 ? 0 : ~0u << (32 - len); }

/* Brute force: the longest route covering addr (routes have distinct subnets). */
static int brute(const struct ovl_route *r, size_t n, uint32_t addr, uint32_t *peer) {
  int best = -1;
  for (size_t i = 0; i < n; i++)
    if ((addr & mask(r[i].len)) == r[i].net && (best < 0 || r[i].len > r[best].len)) best = (int)i;
  if (best >= 0) *peer = r[best].peer;
  return best >= 0;
}

static int brute_peer(const struct ovl_route *r, size_t n, uint32_t ip) {
  for (size_t i = 0; i < n; i++)
    if (r[i].peer == ip) return 1;
  return 0;
}

/* n random routes with distinct subnets, mostly /24 inside 10/8; `mixed`: some other
 * lengths (0..32) so that nesting happens and the block index is built; else /24 and /16
 * only (two lengths: plain per-length probing, no cache). Peers from a small pool. */
static size_t random_routes(struct ovl_route *r, size_t n, int mixed) {
  size_t k = 0;
  for (size_t tries = 0; k < n && tries < n * 20; tries++) {
    unsigned pick = rnd() % 10, len;
    if (pick < 6) len = 24;
    else if (!mixed) len = 16;
    else if (pick < 8) len = 8 + rnd() % 25;
    else len = rnd() % 33;
    uint32_t base = pick < 6 ? (0x0a000000u | (rnd() & 0x00ffff00u)) : rnd();
    struct ovl_route c = {.net = base & mask(len), .len = (uint8_t)len, .peer = 0xc0a80000u | (rnd() % 512)};
    int dup = 0;
    for (size_t i = 0; i < k && !dup; i++) dup = r[i].net == c.net && r[i].len == c.len;
    if (!dup) r[k++] = c;
  }
  return k;
}

static void test_lpm(size_t want, uint32_t lookups, int mixed) {
  struct ovl_route *r = malloc(sizeof(*r) * want);
  TAP_ASSERT(r != NULL, "malloc");
  size_t n = random_routes(r, want, mixed);
  struct ovl_rtable *t;
  TAP_REQUIRE(ovl_rtable_build(&t, r, n) == 0, "built a table of %zu routes (%s)", n,
              mixed ? "lengths 0..32: block index, cache" : "/24 and /16 only");
  tap_ok(ovl_rtable_size(t) == n, "size is %zu", n);
  struct ovl_rcache *c = malloc(sizeof(*c));
  TAP_ASSERT(c != NULL, "malloc");
  ovl_rcache_init(c);
  uint32_t bad = 0, bad_cached = 0, hits = 0, bad_peer = 0;
  for (uint32_t i = 0; i < lookups; i++) {
    /* half inside a route (random host part), half anywhere */
    uint32_t a;
    if (i & 1) {
      const struct ovl_route *x = &r[rnd() % n];
      a = x->net | (rnd() & ~mask(x->len));
    } else {
      a = rnd();
    }
    uint32_t p1 = 0, p2 = 0, p3 = 0;
    int f1 = brute(r, n, a, &p1);
    int f2 = ovl_rtable_lookup(t, a, &p2);
    int f3 = ovl_rcache_lookup(c, t, a, &p3);
    if (f1 != f2 || (f1 && p1 != p2)) bad++;
    if (f1 != f3 || (f1 && p1 != p3)) bad_cached++;
    hits += (uint32_t)f1;
    uint32_t ip = (i & 2) ? r[rnd() % n].peer : (0xc0a80000u | (rnd() % 1024));
    if (ovl_rtable_is_peer(t, ip) != (brute_peer(r, n, ip) != 0)) bad_peer++;
  }
  tap_ok(bad == 0, "%zu routes: LPM == brute force on %u addresses (%u covered), %u mismatches", n, lookups, hits, bad);
  tap_ok(bad_cached == 0, "%zu routes: cached lookups == brute force, %u mismatches", n, bad_cached);
  tap_ok(bad_peer == 0, "%zu routes: is_peer == brute force, %u mismatches", n, bad_peer);
  free(c);
  ovl_rtable_free(t);
  free(r);
}

static void test_table_basics(void) {
  struct ovl_rtable *t;
  struct ovl_route bad1 = {.net = 0x0a000001, .len = 24, .peer = 1};
  struct ovl_route bad2 = {.net = 0, .len = 33, .peer = 1};
  tap_ok(ovl_rtable_build(&t, &bad1, 1) == -EINVAL, "host bits set: EINVAL");
  tap_ok(ovl_rtable_build(&t, &bad2, 1) == -EINVAL, "len 33: EINVAL");
  TAP_REQUIRE(ovl_rtable_build(&t, NULL, 0) == 0, "empty table");
  uint32_t p = 7;
  tap_ok(!ovl_rtable_lookup(t, 0x0a000001, &p) && !ovl_rtable_is_peer(t, 0), "empty: no route, no peer");
  ovl_rtable_free(t);

  struct ovl_route r[] = {
      {.net = 0x0af40100, .len = 24, .peer = 1},
      {.net = 0x0af40000, .len = 16, .peer = 2},
      {.net = 0, .len = 0, .peer = 3},
      {.net = 0x0af40105, .len = 32, .peer = 4},
      {.net = 0x0af40100, .len = 24, .peer = 5}, /* the same subnet again: last wins */
  };
  TAP_REQUIRE(ovl_rtable_build(&t, r, 5) == 0, "table with nesting and a duplicate");
  tap_ok(ovl_rtable_size(t) == 4, "the duplicate subnet counts once");
  tap_ok(ovl_rtable_lookup(t, 0x0af40107, &p) && p == 5, "/24 beats /16 and /0; duplicate: last one wins");
  tap_ok(ovl_rtable_lookup(t, 0x0af40105, &p) && p == 4, "/32 beats /24");
  tap_ok(ovl_rtable_lookup(t, 0x0af40205, &p) && p == 2, "/16");
  tap_ok(ovl_rtable_lookup(t, 0x08080808, &p) && p == 3, "/0 catches the rest");
  tap_ok(!ovl_rtable_is_peer(t, 1) && ovl_rtable_is_peer(t, 5), "a peer replaced by a duplicate is no peer any more");
  ovl_rtable_free(t);
}

static void test_cache_swap(void) {
  /* Three more lengths that do not cover 10.244.2.9, so that the cache fronts the tables. */
  struct ovl_route a[4] = {{.net = 0x0af40200, .len = 24, .peer = 11},
                           {.net = 0xc0a80000, .len = 16, .peer = 1},
                           {.net = 0xac100000, .len = 12, .peer = 1},
                           {.net = 0xc0a80100, .len = 25, .peer = 1}};
  struct ovl_route b[4];
  memcpy(b, a, sizeof(a));
  b[0].peer = 22;
  struct ovl_rtable *ta, *tb, *te;
  TAP_ASSERT(ovl_rtable_build(&ta, a, 4) == 0 && ovl_rtable_build(&tb, b, 4) == 0 &&
                 ovl_rtable_build(&te, a + 1, 3) == 0,
             "tables");
  struct ovl_rcache c;
  ovl_rcache_init(&c);
  uint32_t p = 0;
  int ok = ovl_rcache_lookup(&c, ta, 0x0af40209, &p) && p == 11;
  ok &= ovl_rcache_lookup(&c, ta, 0x0af40209, &p) && p == 11; /* now from the cache */
  ok &= !ovl_rcache_lookup(&c, te, 0x0af40209, &p);           /* another table: no stale hit */
  ok &= !ovl_rcache_lookup(&c, te, 0x0af40209, &p);           /* cached miss */
  ok &= ovl_rcache_lookup(&c, tb, 0x0af40209, &p) && p == 22; /* no stale miss either */
  tap_ok(ok, "the cache follows table swaps: hit, miss, changed peer");
  ovl_rtable_free(ta);
  ovl_rtable_free(tb);
  ovl_rtable_free(te);
}

static void test_reclaim(void) {
  struct ovl_routes *d;
  TAP_REQUIRE(ovl_routes_create(&d, 2) == 0, "domain with 2 readers");
  tap_ok(ovl_routes_create(&(struct ovl_routes *){NULL}, 0) == -EINVAL, "0 readers: EINVAL");
  struct ovl_route r = {.net = 0x0af40200, .len = 24, .peer = 1};
  const struct ovl_rtable *t0 = ovl_routes_enter(d, 0);
  uint32_t p;
  tap_ok(!ovl_rtable_lookup(t0, 0x0af40201, &p), "a new domain starts with an empty table");
  TAP_ASSERT(ovl_routes_set(d, &r, 1) == 0, "set");
  tap_ok(ovl_routes_reclaim(d) == 1, "reader 0 is inside: the old table stays");
  tap_ok(!ovl_rtable_lookup(t0, 0x0af40201, &p), "and is still readable, unchanged");
  const struct ovl_rtable *t1 = ovl_routes_enter(d, 1);
  tap_ok(ovl_rtable_lookup(t1, 0x0af40201, &p) && p == 1, "a reader entering now sees the new table");
  ovl_routes_leave(d, 0);
  tap_ok(ovl_routes_reclaim(d) == 0, "reader 0 left: freed (reader 1 entered after the swap)");
  r.peer = 2;
  TAP_ASSERT(ovl_routes_set(d, &r, 1) == 0, "set");
  tap_ok(ovl_routes_reclaim(d) == 1, "reader 1 still holds the previous one");
  ovl_routes_leave(d, 1);
  tap_ok(ovl_routes_reclaim(d) == 0, "freed after it left");
  struct ovl_route bad = {.net = 1, .len = 8, .peer = 1};
  tap_ok(ovl_routes_set(d, &bad, 1) == -EINVAL, "a bad route set: EINVAL");
  t0 = ovl_routes_enter(d, 0);
  tap_ok(ovl_rtable_lookup(t0, 0x0af40201, &p) && p == 2, "and the table in force stays");
  ovl_routes_leave(d, 0);
  TAP_ASSERT(ovl_routes_set(d, &r, 1) == 0, "set");
  ovl_routes_destroy(d); /* with a retired table pending or not: valgrind/ASan check no leak */
  tap_ok(1, "destroy frees the current and retired tables");
}

/* ---- readers racing a writer ---- */

#define STRESS_ROUTES 64u /* /24s in 10.0.0.0/18, all to peer k in table k */

struct stress {
  struct ovl_routes *d;
  atomic_bool done;
  atomic_uint sections[4];
  atomic_uint torn;
};

struct reader_arg {
  struct stress *s;
  uint32_t idx;
};

/* Table k maps every route to peer k: a section that sees two peers saw a torn table,
 * a freed table is a use-after-free under ASan/valgrind. */
static void *reader_main(void *arg) {
  struct reader_arg *ra = arg;
  struct stress *s = ra->s;
  struct ovl_rcache *c = malloc(sizeof(*c));
  if (c == NULL) abort();
  ovl_rcache_init(c);
  uint32_t x = 0x12345u + ra->idx;
  while (!atomic_load_explicit(&s->done, memory_order_acquire)) {
    const struct ovl_rtable *t = ovl_routes_enter(s->d, ra->idx);
    uint32_t first = 0, p = 0;
    int have = 0;
    for (int i = 0; i < 32; i++) {
      x = x * 1103515245u + 12345u;
      uint32_t a = 0x0a000000u | ((x >> 8) % STRESS_ROUTES) << 8 | (x & 0xff);
      int f = (i & 1) ? ovl_rcache_lookup(c, t, a, &p) : ovl_rtable_lookup(t, a, &p);
      if (!f) continue; /* the empty first table */
      if (!have) {
        first = p;
        have = 1;
      } else if (p != first || !ovl_rtable_is_peer(t, p)) {
        atomic_fetch_add(&s->torn, 1);
      }
    }
    ovl_routes_leave(s->d, ra->idx);
    atomic_fetch_add_explicit(&s->sections[ra->idx], 1, memory_order_relaxed);
  }
  free(c);
  return NULL;
}

static void test_concurrent(void) {
  const char *vg = getenv("OVL_UNDER_VALGRIND");
  const char *tsan = getenv("OVL_UNDER_TSAN");
  uint32_t swaps = (vg || tsan) ? 2000 : 50000;
  struct stress s;
  memset(&s, 0, sizeof(s));
  const uint32_t nreaders = 3;
  TAP_REQUIRE(ovl_routes_create(&s.d, nreaders) == 0, "domain");
  pthread_t th[3];
  struct reader_arg ra[3];
  for (uint32_t i = 0; i < nreaders; i++) {
    ra[i] = (struct reader_arg){.s = &s, .idx = i};
    TAP_ASSERT(pthread_create(&th[i], NULL, reader_main, &ra[i]) == 0, "pthread_create");
  }
  struct ovl_route r[STRESS_ROUTES];
  size_t max_pending = 0;
  double t0 = now_sec();
  for (uint32_t k = 1; k <= swaps; k++) {
    for (uint32_t i = 0; i < STRESS_ROUTES; i++) r[i] = (struct ovl_route){.net = 0x0a000000u | i << 8, .len = 24, .peer = k};
    /* more lengths (index and cache in play) in every 8th table: both kinds get swapped */
    if (k % 8 == 1) {
      r[0] = (struct ovl_route){.net = 0xac100000u, .len = 12, .peer = k};
      r[1] = (struct ovl_route){.net = 0xc0a80000u, .len = 16, .peer = k};
      r[2] = (struct ovl_route){.net = 0x0a000000u, .len = 8, .peer = k};
    }
    TAP_ASSERT(ovl_routes_set(s.d, r, STRESS_ROUTES) == 0, "set %u", k);
    size_t pending = ovl_routes_reclaim(s.d);
    if (pending > max_pending) max_pending = pending;
  }
  double dt = now_sec() - t0;
  /* Let every reader finish a few more sections on the last table, bounded. */
  unsigned base[3];
  for (uint32_t i = 0; i < nreaders; i++) base[i] = atomic_load(&s.sections[i]);
  for (double t1 = now_sec(); now_sec() - t1 < 10.0;) {
    int all = 1;
    for (uint32_t i = 0; i < nreaders; i++) all &= atomic_load(&s.sections[i]) > base[i] + 2;
    if (all) break;
  }
  atomic_store_explicit(&s.done, true, memory_order_release);
  for (uint32_t i = 0; i < nreaders; i++) pthread_join(th[i], NULL);
  unsigned total = 0;
  for (uint32_t i = 0; i < nreaders; i++) total += atomic_load(&s.sections[i]);
  tap_ok(atomic_load(&s.torn) == 0, "%u swaps in %.2f s against 3 readers (%u sections): no torn table", swaps, dt,
         total);
  tap_ok(total > 0, "the readers ran");
  tap_ok(ovl_routes_reclaim(s.d) == 0, "all retired tables freed once the readers are gone (peak pending %zu)",
         max_pending);
  ovl_routes_destroy(s.d);
}

int main(void) {
  test_table_basics();
  const char *vg = getenv("OVL_UNDER_VALGRIND");
  test_lpm(10, 200000, 1);
  test_lpm(1000, vg ? 20000 : 200000, 1);
  test_lpm(10000, vg ? 2000 : 20000, 1);
  test_lpm(10, 200000, 0);
  test_lpm(1000, vg ? 20000 : 200000, 0);
  test_lpm(10000, vg ? 2000 : 20000, 0);
  test_cache_swap();
  test_reclaim();
  test_concurrent();
  return tap_done();
}
