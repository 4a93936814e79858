/*
 * The peer route table of the native engine, its per-thread lookup cache, and how new
 * tables reach the forwarding threads without a lock on their side.
 *
 * TABLE (struct ovl_rtable, immutable once built). One open-addressing hash table per
 * prefix length present (key: network address; value: peer), the lengths kept longest
 * first. A lookup probes `addr & mask(len)` at each present length, longest first, and the
 * first hit is by construction the longest match — the structure of the js engine's
 * RouteTable (src/dataplane/route-table.ts), so the two agree by construction and the
 * tests check both against brute force. Cost: one hashed probe per distinct length (an
 * overlay has one or two: the network's SubnetLen, maybe a default), independent of the
 * number of routes; not a linear scan. A table with more than INDEX_MIN_LEVELS lengths
 * also gets a block index: for each /16 block of the address space, a bitmap of the
 * prefix lengths 1..32 that have a route overlapping the block (256 KiB; a /0 route is
 * the fallback after them), so a lookup probes
 * only the lengths present where the address is — one index load plus, typically, one
 * probe, however many lengths the table has. The set of peers (distinct peer addresses)
 * is a hash set in the same table, so "is the sender a known peer" and "which peer owns
 * this source" are answered from the same snapshot.
 *
 * CACHE (struct ovl_rcache, one per thread). Direct-mapped, OVL_RCACHE_SLOTS entries,
 * remembering hits and misses. It is tagged with the generation of the table it caches
 * (unique per table in the process) and empties itself when used with another table, so
 * a route change can never be answered from a stale entry. It fronts only tables with
 * more than CACHE_MIN_LEVELS lengths: with one or two a lookup is one or two probes, the
 * cost of the cache probe itself, and a cache thrashed by many destinations would double
 * it (measured with routeBench: 12 ns bare vs 20 ns cached for 10,000 /24 routes and
 * 10,000 destinations; with 25 lengths and 64 destinations, 86 ns bare vs 13 ns cached
 * before the block index).
 *
 * PUBLICATION (struct ovl_routes): quiescent-state-based reclamation with per-reader
 * epochs, in the shape of liburcu's QSBR flavour.
 *  - `current` points at the table in force. The writer (one thread at a time: the JS
 *    thread) builds a complete new table, then swaps `current` to it (seq_cst exchange,
 *    which includes release: every byte of the new table is visible to whoever loads the
 *    pointer with acquire), then increments the global `epoch` to E (seq_cst), and puts the
 *    old table on its private retired list tagged E.
 *  - Each reader (forwarding thread q) owns one slot `readers[q].epoch` on its own cache
 *    line. Around each batch it calls enter (store slot = the global epoch it just read,
 *    seq_cst; then load `current`, seq_cst) and leave (store slot = OFFLINE, release). Outside
 *    enter/leave — in particular while blocked in poll() — a thread holds no table and is
 *    "offline", so an idle thread never holds up reclamation.
 *  - The writer may free a table retired at E once every slot is OFFLINE or >= E (checked
 *    at each publish and by ovl_routes_reclaim; tables not yet free stay on the list, and
 *    ovl_routes_destroy frees the rest after the threads are joined). Why that is safe:
 *    a reader that still uses the old table loaded `current` before the exchange, and it
 *    stored its slot before that load, from an epoch read before the increment, so its
 *    slot holds a value < E until it leaves (its release store of OFFLINE orders all its
 *    reads of the table before the writer's load that sees OFFLINE). A slot >= E means the
 *    reader read the epoch after the increment (acquire), hence after the exchange, so its
 *    load of `current` returns the new table or a newer one. The one remaining case, the
 *    writer reading OFFLINE while a reader is entering, is the store/load (Dekker) pattern
 *    and is why those four accesses are seq_cst: either the reader's slot store comes
 *    first in the single total order (the writer sees it and waits), or the writer's
 *    exchange does (the reader's later load of `current` sees the new table).
 *  - Readers pay per batch one seq_cst store, one acquire/seq_cst load each of `epoch`
 *    and `current`, and one release store: no lock, no read-modify-write, no waiting.
 *    The writer never waits for readers either; it only defers frees.
 *  - The IPv6 table (route6.c) is published by the same domain the same way: its own
 *    `current6` pointer and retired list, the same epoch and reader slots, so a reader
 *    that loads `current6` inside a section (ovl_routes_table6) is covered by the same
 *    argument as for `current`.
 * Generations: a process-wide counter (atomic, so tables built by different domains or
 * by tests in parallel never share one).
 */
#include "overlayd.h"
#include "internal.h"

#include <errno.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define OFFLINE UINT64_MAX
#define READERS_MAX 1024u
/* Most routes in one table: keeps every hash capacity (<= 4x this) within 32 bits. */
#define ROUTES_MAX (1u << 24)
/* Tables with more prefix lengths than this get the block index (one load, then probes
 * only for the lengths present in the address's /16 block). */
#define INDEX_MIN_LEVELS 2u
#define INDEX_BLOCKS (1u << 16) /* one entry per /16 */
/* The per-thread cache fronts tables with more prefix lengths than this. */
#define CACHE_MIN_LEVELS 2u

/* ---------------------------------------------------------------- hash sets ------------ */

struct slot {
  uint32_t key;
  uint32_t val;
  uint8_t used;
  uint8_t flags; /* the route maps: the OVL_ROUTE_* flags of the route put last */
};

/* Open addressing with linear probing; capacity a power of two, at most half full, so
 * every probe sequence ends at an empty slot. Built once, then read-only. */
struct hmap {
  uint32_t mask;
  struct slot *slots;
};

static inline uint32_t hash32(uint32_t x) { /* murmur3 fmix32 */
  x ^= x >> 16;
  x *= 0x85ebca6bu;
  x ^= x >> 13;
  x *= 0xc2b2ae35u;
  x ^= x >> 16;
  return x;
}

static int hmap_init(struct hmap *h, size_t count) {
  size_t cap = 8;
  while (cap < count * 2) cap <<= 1; /* count <= ROUTES_MAX: cap <= 2^25 */
  h->slots = calloc(cap, sizeof(struct slot));
  if (h->slots == NULL) return -ENOMEM;
  h->mask = (uint32_t)(cap - 1);
  return 0;
}

/* Inserts or overwrites key (its val and flags); returns true when the key was new. */
static bool hmap_put(struct hmap *h, uint32_t key, uint32_t val, uint8_t flags) {
  for (uint32_t i = hash32(key) & h->mask;; i = (i + 1) & h->mask) {
    struct slot *s = &h->slots[i];
    if (!s->used) {
      *s = (struct slot){.key = key, .val = val, .used = 1, .flags = flags};
      return true;
    }
    if (s->key == key) {
      s->val = val;
      s->flags = flags;
      return false;
    }
  }
}

/* The peer set: inserts key with val = bits, or ORs bits into the val it has. */
static void hmap_or(struct hmap *h, uint32_t key, uint32_t bits) {
  for (uint32_t i = hash32(key) & h->mask;; i = (i + 1) & h->mask) {
    struct slot *s = &h->slots[i];
    if (!s->used) {
      *s = (struct slot){.key = key, .val = bits, .used = 1};
      return;
    }
    if (s->key == key) {
      s->val |= bits;
      return;
    }
  }
}

static inline const struct slot *hmap_get(const struct hmap *h, uint32_t key) {
  for (uint32_t i = hash32(key) & h->mask;; i = (i + 1) & h->mask) {
    const struct slot *s = &h->slots[i];
    if (!s->used) return NULL;
    if (s->key == key) return s;
  }
}

/* ---------------------------------------------------------------- table ---------------- */

struct level {
  uint32_t mask; /* netmask of this prefix length */
  struct hmap map;
};

struct ovl_rtable {
  uint64_t gen;     /* unique in the process, never 0 */
  size_t routes;    /* distinct subnets */
  uint32_t nlevels; /* distinct prefix lengths, 0..33 */
  struct level levels[33]; /* longest length first */
  int8_t level_of[33];     /* prefix length -> index in levels, -1 when absent */
  uint32_t *blocks; /* NULL, or [INDEX_BLOCKS]: bit L-1 set when a /L route (L >= 1) overlaps the block */
  struct hmap peers;       /* key: peer address; val: OVL_ROUTE_* flags of its routes */
  uint64_t retired_at;     /* writer only: the epoch it was retired at */
  struct ovl_rtable *next_retired; /* writer only */
};

static _Atomic uint64_t next_gen = 1;

static inline uint32_t mask_of(uint32_t len) { return len == 0 ? 0 : ~(uint32_t)0 << (32 - len); }

void ovl_rtable_free(struct ovl_rtable *t) {
  if (t == NULL) return;
  for (uint32_t i = 0; i < t->nlevels; i++) free(t->levels[i].map.slots);
  free(t->peers.slots);
  free(t->blocks);
  free(t);
}

int ovl_rtable_build(struct ovl_rtable **out, const struct ovl_route *routes, size_t n) {
  if (n > ROUTES_MAX) return -E2BIG;
  size_t per_len[33] = {0};
  for (size_t i = 0; i < n; i++) {
    const struct ovl_route *r = &routes[i];
    if (r->len > 32 || (r->net & ~mask_of(r->len)) != 0) return -EINVAL;
    per_len[r->len]++;
  }
  struct ovl_rtable *t = calloc(1, sizeof(*t));
  if (t == NULL) return -ENOMEM;
  t->gen = atomic_fetch_add_explicit(&next_gen, 1, memory_order_relaxed);
  for (int len = 32; len >= 0; len--) {
    t->level_of[len] = -1;
    if (per_len[len] == 0) continue;
    struct level *lv = &t->levels[t->nlevels];
    lv->mask = mask_of((uint32_t)len);
    if (hmap_init(&lv->map, per_len[len]) != 0) goto nomem;
    t->level_of[len] = (int8_t)t->nlevels++;
  }
  if (hmap_init(&t->peers, n) != 0) goto nomem;
  if (t->nlevels > INDEX_MIN_LEVELS && (t->blocks = calloc(INDEX_BLOCKS, sizeof(uint32_t))) == NULL) goto nomem;
  for (size_t i = 0; i < n; i++) {
    const struct ovl_route *r = &routes[i];
    if (hmap_put(&t->levels[t->level_of[r->len]].map, r->net, r->peer, r->flags & OVL_ROUTE_FLAGS)) t->routes++;
  }
  /* Peers, with their flags, from the routes that survived (a later duplicate may have
   * replaced a peer, and its flags went with it), and
   * the block index: a /L route overlaps 2^(16-L) blocks when L < 16 (at most 2^16 block
   * updates per length, as there are at most 2^L such routes), one block otherwise. */
  for (uint32_t l = 0; l < t->nlevels; l++) {
    const struct hmap *m = &t->levels[l].map;
    uint32_t len = (uint32_t)__builtin_popcount(t->levels[l].mask);
    for (uint32_t i = 0; i <= m->mask; i++) {
      if (!m->slots[i].used) continue;
      hmap_or(&t->peers, m->slots[i].val, m->slots[i].flags); /* peers' val: the OR of their routes' flags */
      if (t->blocks == NULL || len == 0) continue;
      uint32_t first = m->slots[i].key >> 16, count = len < 16 ? 1u << (16 - len) : 1u;
      for (uint32_t b = 0; b < count; b++) t->blocks[first + b] |= 1u << (len - 1);
    }
  }
  *out = t;
  return 0;
nomem:
  ovl_rtable_free(t);
  return -ENOMEM;
}

bool ovl_rtable_lookup(const struct ovl_rtable *t, uint32_t addr, uint32_t *peer) {
  if (t->blocks) {
    /* Only the lengths present in this /16 block, longest first (at most 32 rounds), then
     * the /0 route if there is one. */
    for (uint32_t m = t->blocks[addr >> 16]; m; m &= ~(1u << (31 - __builtin_clz(m)))) {
      const struct level *lv = &t->levels[t->level_of[32 - __builtin_clz(m)]];
      const struct slot *s = hmap_get(&lv->map, addr & lv->mask);
      if (s) {
        *peer = s->val;
        return true;
      }
    }
    if (t->level_of[0] < 0) return false;
    *peer = hmap_get(&t->levels[t->level_of[0]].map, 0)->val; /* the one /0 route */
    return true;
  }
  for (uint32_t i = 0; i < t->nlevels; i++) {
    const struct slot *s = hmap_get(&t->levels[i].map, addr & t->levels[i].mask);
    if (s) {
      *peer = s->val;
      return true;
    }
  }
  return false;
}

bool ovl_rtable_is_peer(const struct ovl_rtable *t, uint32_t ip) { return hmap_get(&t->peers, ip) != NULL; }

uint32_t ovl_rtable_peer_flags(const struct ovl_rtable *t, uint32_t ip) {
  const struct slot *s = hmap_get(&t->peers, ip);
  return s ? s->val : 0;
}

size_t ovl_rtable_size(const struct ovl_rtable *t) { return t->routes; }

/* ---------------------------------------------------------------- cache ---------------- */

enum { CACHE_EMPTY = 0, CACHE_MISS = 1, CACHE_HIT = 2 };

void ovl_rcache_init(struct ovl_rcache *c) { memset(c, 0, sizeof(*c)); }

bool ovl_rcache_lookup(struct ovl_rcache *c, const struct ovl_rtable *t, uint32_t addr, uint32_t *peer) {
  if (t->nlevels <= CACHE_MIN_LEVELS) return ovl_rtable_lookup(t, addr, peer);
  if (c->gen != t->gen) {
    memset(c->e, 0, sizeof(c->e));
    c->gen = t->gen;
  }
  /* Fibonacci hashing: the top bits of addr * 2^32/phi, well spread for any address pattern. */
  uint32_t i = (uint32_t)(addr * 0x9e3779b1u) >> (32 - 8);
  _Static_assert(OVL_RCACHE_SLOTS == 1u << 8, "the cache index takes 8 bits");
  if (c->e[i].state != CACHE_EMPTY && c->e[i].addr == addr) {
    *peer = c->e[i].peer;
    return c->e[i].state == CACHE_HIT;
  }
  uint32_t p = 0;
  bool found = ovl_rtable_lookup(t, addr, &p);
  c->e[i].addr = addr;
  c->e[i].peer = p;
  c->e[i].state = found ? CACHE_HIT : CACHE_MISS;
  *peer = p;
  return found;
}

/* ---------------------------------------------------------------- publication ---------- */

struct reader {
  alignas(64) _Atomic uint64_t epoch; /* OFFLINE, or the epoch read on entering */
};

struct ovl_routes {
  alignas(64) _Atomic(struct ovl_rtable *) current;
  alignas(64) _Atomic uint64_t epoch;
  alignas(64) _Atomic(struct ovl_rtable6 *) current6;
  alignas(64) struct ovl_rtable *retired; /* writer only */
  struct ovl_rtable6 *retired6;           /* writer only */
  uint32_t nreaders;
  struct reader *readers; /* [nreaders], each on its own cache line */
};

int ovl_routes_create(struct ovl_routes **out, uint32_t readers) {
  if (readers == 0 || readers > READERS_MAX) return -EINVAL;
  struct ovl_routes *r = aligned_alloc(alignof(struct ovl_routes), sizeof(*r));
  if (r == NULL) return -ENOMEM;
  memset(r, 0, sizeof(*r));
  r->nreaders = readers;
  r->readers = aligned_alloc(alignof(struct reader), sizeof(struct reader) * readers);
  struct ovl_rtable *empty = NULL;
  struct ovl_rtable6 *empty6 = NULL;
  if (r->readers == NULL || ovl_rtable_build(&empty, NULL, 0) != 0 || ovl_rtable6_build(&empty6, NULL, 0) != 0) {
    ovl_rtable_free(empty);
    free(r->readers);
    free(r);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < readers; i++) atomic_init(&r->readers[i].epoch, OFFLINE);
  atomic_init(&r->epoch, 1);
  atomic_init(&r->current, empty);
  atomic_init(&r->current6, empty6);
  *out = r;
  return 0;
}

size_t ovl_routes_reclaim(struct ovl_routes *r) {
  uint64_t min = OFFLINE;
  for (uint32_t i = 0; i < r->nreaders; i++) {
    uint64_t e = atomic_load_explicit(&r->readers[i].epoch, memory_order_seq_cst);
    if (e < min) min = e;
  }
  size_t left = 0;
  struct ovl_rtable **pp = &r->retired;
  while (*pp) { /* bounded: the list only shrinks here */
    struct ovl_rtable *t = *pp;
    if (t->retired_at <= min) {
      *pp = t->next_retired;
      ovl_rtable_free(t);
    } else {
      left++;
      pp = &t->next_retired;
    }
  }
  struct ovl_rtable6 **pp6 = &r->retired6;
  while (*pp6) {
    struct ovl_rtable6 *t = *pp6;
    if (*ovl_rtable6_retired_at(t) <= min) {
      *pp6 = *ovl_rtable6_next_retired(t);
      ovl_rtable6_free(t);
    } else {
      left++;
      pp6 = ovl_rtable6_next_retired(t);
    }
  }
  return left;
}

int ovl_routes_set(struct ovl_routes *r, const struct ovl_route *routes, size_t n) {
  struct ovl_rtable *t;
  int err = ovl_rtable_build(&t, routes, n);
  if (err) return err;
  struct ovl_rtable *old = atomic_exchange_explicit(&r->current, t, memory_order_seq_cst);
  old->retired_at = atomic_fetch_add_explicit(&r->epoch, 1, memory_order_seq_cst) + 1;
  old->next_retired = r->retired;
  r->retired = old;
  (void)ovl_routes_reclaim(r);
  return 0;
}

int ovl_routes_set6(struct ovl_routes *r, const struct ovl_route6 *routes, size_t n) {
  struct ovl_rtable6 *t;
  int err = ovl_rtable6_build(&t, routes, n);
  if (err) return err;
  struct ovl_rtable6 *old = atomic_exchange_explicit(&r->current6, t, memory_order_seq_cst);
  *ovl_rtable6_retired_at(old) = atomic_fetch_add_explicit(&r->epoch, 1, memory_order_seq_cst) + 1;
  *ovl_rtable6_next_retired(old) = r->retired6;
  r->retired6 = old;
  (void)ovl_routes_reclaim(r);
  return 0;
}

const struct ovl_rtable6 *ovl_routes_table6(struct ovl_routes *r) {
  return atomic_load_explicit(&r->current6, memory_order_seq_cst);
}

void ovl_routes_destroy(struct ovl_routes *r) {
  if (r == NULL) return;
  while (r->retired6) {
    struct ovl_rtable6 *t = r->retired6;
    r->retired6 = *ovl_rtable6_next_retired(t);
    ovl_rtable6_free(t);
  }
  ovl_rtable6_free(atomic_load_explicit(&r->current6, memory_order_relaxed));
  while (r->retired) {
    struct ovl_rtable *t = r->retired;
    r->retired = t->next_retired;
    ovl_rtable_free(t);
  }
  ovl_rtable_free(atomic_load_explicit(&r->current, memory_order_relaxed));
  free(r->readers);
  free(r);
}

const struct ovl_rtable *ovl_routes_enter(struct ovl_routes *r, uint32_t reader) {
  uint64_t e = atomic_load_explicit(&r->epoch, memory_order_acquire);
  atomic_store_explicit(&r->readers[reader].epoch, e, memory_order_seq_cst);
  return atomic_load_explicit(&r->current, memory_order_seq_cst);
}

void ovl_routes_leave(struct ovl_routes *r, uint32_t reader) {
  atomic_store_explicit(&r->readers[reader].epoch, OFFLINE, memory_order_release);
}
