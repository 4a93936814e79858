/*
 * The IPv6 peer route table of the native engine (struct ovl_rtable6, immutable once
 * built): the IPv6 twin of route.c's table, published to the forwarding threads by the
 * same domain (struct ovl_routes: ovl_routes_set6 / ovl_routes_table6, see route.c).
 *
 * One open-addressing hash table per prefix length present (key: the 128-bit network
 * address; value: an index into the table's route array), the lengths kept longest first;
 * a lookup probes `addr & mask(len)` at each present length, longest first, so the first
 * hit is the longest match (an overlay has one or two lengths: IPv6SubnetLen, maybe a
 * default). The set of IPv6 peer addresses (routes with an IPv6 underlay address) is a
 * hash set in the same table, for the inbound "known peer" check of datagrams over IPv6.
 * No per-thread cache: with one or two lengths a lookup costs what a cache probe costs
 * (route.c measured it for IPv4).
 */
#include "overlayd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ROUTES6_MAX (1u << 24)
#define NONE UINT32_MAX

struct key6 {
  uint64_t hi, lo; /* the address as two big-endian halves, host order words */
};

struct slot6 {
  struct key6 key;
  uint32_t val; /* route index; NONE = empty slot */
};

/* Linear probing, capacity a power of two, at most half full (every probe ends). */
struct hmap6 {
  uint32_t mask;
  struct slot6 *slots;
};

struct level6 {
  uint32_t len;
  struct key6 mask;
  struct hmap6 map;
};

struct ovl_rtable6 {
  size_t nroutes;           /* distinct subnets */
  struct ovl_route6 *routes; /* [nroutes] the surviving routes (last of duplicates) */
  uint32_t nlevels;
  struct level6 levels[129]; /* longest first */
  struct hmap6 peers6;       /* key: an IPv6 underlay address of some route; val: 0 */
  uint64_t retired_at;       /* writer only (route.c) */
  struct ovl_rtable6 *next_retired;
};

static struct key6 key_of(const uint8_t a[16]) {
  struct key6 k = {0, 0};
  for (int i = 0; i < 8; i++) k.hi = (k.hi << 8) | a[i];
  for (int i = 8; i < 16; i++) k.lo = (k.lo << 8) | a[i];
  return k;
}

static struct key6 mask6(uint32_t len) {
  struct key6 m;
  m.hi = len == 0 ? 0 : len >= 64 ? UINT64_MAX : UINT64_MAX << (64 - len);
  m.lo = len <= 64 ? 0 : len >= 128 ? UINT64_MAX : UINT64_MAX << (128 - len);
  return m;
}

static inline uint32_t hash6(struct key6 k) {
  uint64_t x = k.hi * 0x9e3779b97f4a7c15ull ^ (k.lo + 0x632be59bd9b4e019ull);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return (uint32_t)x;
}

static int hmap6_init(struct hmap6 *h, size_t count) {
  size_t cap = 8;
  while (cap < count * 2) cap <<= 1;
  h->slots = malloc(cap * sizeof(struct slot6));
  if (h->slots == NULL) return -ENOMEM;
  for (size_t i = 0; i < cap; i++) h->slots[i].val = NONE;
  h->mask = (uint32_t)(cap - 1);
  return 0;
}

static inline bool key_eq(struct key6 a, struct key6 b) { return a.hi == b.hi && a.lo == b.lo; }

/* The slot holding key, or the empty slot where it would go. */
static inline struct slot6 *hmap6_find(const struct hmap6 *h, struct key6 k) {
  for (uint32_t i = hash6(k) & h->mask;; i = (i + 1) & h->mask) {
    struct slot6 *s = &h->slots[i];
    if (s->val == NONE || key_eq(s->key, k)) return s;
  }
}

void ovl_rtable6_free(struct ovl_rtable6 *t) {
  if (t == NULL) return;
  for (uint32_t i = 0; i < t->nlevels; i++) free(t->levels[i].map.slots);
  free(t->peers6.slots);
  free(t->routes);
  free(t);
}

static bool host_bits_zero(const struct ovl_route6 *r) {
  struct key6 k = key_of(r->net), m = mask6(r->len);
  return (k.hi & ~m.hi) == 0 && (k.lo & ~m.lo) == 0;
}

int ovl_rtable6_build(struct ovl_rtable6 **out, const struct ovl_route6 *routes, size_t n) {
  if (n > ROUTES6_MAX) return -E2BIG;
  size_t per_len[129] = {0};
  for (size_t i = 0; i < n; i++) {
    if (routes[i].len > 128 || !host_bits_zero(&routes[i])) return -EINVAL;
    per_len[routes[i].len]++;
  }
  struct ovl_rtable6 *t = calloc(1, sizeof(*t));
  if (t == NULL) return -ENOMEM;
  int level_of[129];
  for (int len = 128; len >= 0; len--) {
    level_of[len] = -1;
    if (per_len[len] == 0) continue;
    struct level6 *lv = &t->levels[t->nlevels];
    lv->len = (uint32_t)len;
    lv->mask = mask6((uint32_t)len);
    if (hmap6_init(&lv->map, per_len[len]) != 0) goto nomem;
    level_of[len] = (int)t->nlevels++;
  }
  t->routes = malloc(sizeof(struct ovl_route6) * (n ? n : 1));
  if (t->routes == NULL || hmap6_init(&t->peers6, n) != 0) goto nomem;
  for (size_t i = 0; i < n; i++) {
    const struct ovl_route6 *r = &routes[i];
    struct slot6 *s = hmap6_find(&t->levels[level_of[r->len]].map, key_of(r->net));
    if (s->val == NONE) { /* new subnet */
      s->key = key_of(r->net);
      s->val = (uint32_t)t->nroutes++;
    }
    t->routes[s->val] = *r; /* a duplicate: the last one wins */
  }
  for (size_t i = 0; i < t->nroutes; i++) {
    if (!t->routes[i].has_peer6) continue;
    struct slot6 *s = hmap6_find(&t->peers6, key_of(t->routes[i].peer6));
    s->key = key_of(t->routes[i].peer6);
    s->val = 0;
  }
  *out = t;
  return 0;
nomem:
  ovl_rtable6_free(t);
  return -ENOMEM;
}

const struct ovl_route6 *ovl_rtable6_lookup(const struct ovl_rtable6 *t, const uint8_t addr[16]) {
  struct key6 a = key_of(addr);
  for (uint32_t i = 0; i < t->nlevels; i++) {
    const struct level6 *lv = &t->levels[i];
    struct key6 k = {a.hi & lv->mask.hi, a.lo & lv->mask.lo};
    const struct slot6 *s = hmap6_find(&lv->map, k);
    if (s->val != NONE) return &t->routes[s->val];
  }
  return NULL;
}

bool ovl_rtable6_is_peer6(const struct ovl_rtable6 *t, const uint8_t ip[16]) {
  return hmap6_find(&t->peers6, key_of(ip))->val != NONE;
}

size_t ovl_rtable6_size(const struct ovl_rtable6 *t) { return t->nroutes; }

uint64_t *ovl_rtable6_retired_at(struct ovl_rtable6 *t) { return &t->retired_at; }
struct ovl_rtable6 **ovl_rtable6_next_retired(struct ovl_rtable6 *t) { return &t->next_retired; }
