/* Route lookup micro-benchmark of the native engine's C table (native/src/route.c), through
 * its public API (native/include/overlayd.h): ovl_rtable_lookup (uncached longest-prefix
 * match) and ovl_rcache_lookup (the per-thread direct-mapped cache in front of it).
 *
 * The routes and destinations are those of the JS benchmark (bench/micro.ts): N /24 routes
 * 10.A.B.0/24 from 10.0.0.0 upwards, peer 10.99.x.y (one per route); destination j is in
 * route j % N, host 1 + (j / N) % 254. Patterns:
 *   hot    256 destinations cycled, through the cache
 *   churn  16,384 destinations cycled, through the cache (far more than its slots)
 *   lpm    16,384 destinations cycled, uncached ovl_rtable_lookup
 * For the cached patterns an untimed pass measures the hit rate from outside (is the
 * address in a cache entry before the lookup?), or reports "cacheUsed":false when the
 * table does not use its cache (route.c bypasses it for tables with few prefix lengths).
 *
 * usage: route_bench          prints one JSON object per (routes, pattern) line
 * Bounded: a fixed number of lookups per measurement; alarm() kills it after
 * TIME_LIMIT_SEC. */
#include "overlayd.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define HOT 256u
#define CHURN 16384u
#define REPEATS 5                 /* measurements per pattern; the median is printed */
#define LOOKUPS 4000000u          /* lookups per measurement */
#define TIME_LIMIT_SEC 120

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static volatile uint32_t sink;

/* ns per lookup, median of REPEATS, over `count` destinations cycled (count a power of two) */
static double measure(const struct ovl_rtable *t, struct ovl_rcache *c, const uint32_t *dst, uint32_t count) {
  double runs[REPEATS];
  for (int r = 0; r < REPEATS; r++) {
    uint32_t acc = 0, found = 0;
    double t0 = now_ns();
    for (uint32_t i = 0; i < LOOKUPS; i++) {
      uint32_t peer;
      bool ok = c ? ovl_rcache_lookup(c, t, dst[i & (count - 1)], &peer) : ovl_rtable_lookup(t, dst[i & (count - 1)], &peer);
      found += ok;
      acc += peer;
    }
    runs[r] = (now_ns() - t0) / LOOKUPS;
    if (found != LOOKUPS) {
      fprintf(stderr, "route_bench: %u of %u lookups found no route\n", LOOKUPS - found, LOOKUPS);
      exit(1);
    }
    sink = acc;
  }
  qsort(runs, REPEATS, sizeof(runs[0]), cmp_double);
  return runs[REPEATS / 2];
}

/* fraction of lookups answered from the cache while cycling dst (after one warm pass), or
 * -1 when the warm pass left the cache empty: ovl_rcache_lookup bypassed it */
static double hit_rate(const struct ovl_rtable *t, struct ovl_rcache *c, const uint32_t *dst, uint32_t count) {
  uint32_t peer, hits = 0, used = 0;
  for (uint32_t i = 0; i < count; i++) ovl_rcache_lookup(c, t, dst[i], &peer);
  for (uint32_t s = 0; s < OVL_RCACHE_SLOTS; s++) used += c->e[s].state != 0;
  if (used == 0) return -1;
  for (uint32_t i = 0; i < count; i++) {
    for (uint32_t s = 0; s < OVL_RCACHE_SLOTS; s++) {
      if (c->e[s].state != 0 && c->e[s].addr == dst[i]) {
        hits++;
        break;
      }
    }
    ovl_rcache_lookup(c, t, dst[i], &peer);
  }
  return (double)hits / count;
}

int main(void) {
  alarm(TIME_LIMIT_SEC);
  static const uint32_t sizes[] = {10, 1000, 10000};
  static uint32_t hot[HOT], churn[CHURN];
  static struct ovl_rcache cache;
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    uint32_t n = sizes[k];
    struct ovl_route *routes = calloc(n, sizeof(*routes));
    if (!routes) return 1;
    for (uint32_t i = 0; i < n; i++) routes[i] = (struct ovl_route){.net = 0x0a000000u + i * 256u, .peer = 0x0a630001u + i, .len = 24};
    struct ovl_rtable *t;
    int rc = ovl_rtable_build(&t, routes, n);
    free(routes);
    if (rc != 0) {
      fprintf(stderr, "ovl_rtable_build: %d\n", rc);
      return 1;
    }
    for (uint32_t j = 0; j < HOT; j++) hot[j] = 0x0a000000u + (j % n) * 256u + 1u + (j / n) % 254u;
    for (uint32_t j = 0; j < CHURN; j++) churn[j] = 0x0a000000u + (j % n) * 256u + 1u + (j / n) % 254u;

    ovl_rcache_init(&cache);
    double hr = hit_rate(t, &cache, hot, HOT);
    double ns = measure(t, &cache, hot, HOT);
    printf("{\"routes\":%u,\"pattern\":\"hot %u dsts, cached\",\"nsPerLookup\":%.2f,", n, HOT, ns);
    if (hr < 0) printf("\"cacheUsed\":false}\n"); else printf("\"hitRate\":%.3f}\n", hr);
    ovl_rcache_init(&cache);
    hr = hit_rate(t, &cache, churn, CHURN);
    ns = measure(t, &cache, churn, CHURN);
    printf("{\"routes\":%u,\"pattern\":\"%u dsts cycled, cached\",\"nsPerLookup\":%.2f,", n, CHURN, ns);
    if (hr < 0) printf("\"cacheUsed\":false}\n"); else printf("\"hitRate\":%.3f}\n", hr);
    ns = measure(t, NULL, churn, CHURN);
    printf("{\"routes\":%u,\"pattern\":\"LPM without cache\",\"nsPerLookup\":%.2f}\n", n, ns);
    ovl_rtable_free(t);
  }
  return 0;
}
