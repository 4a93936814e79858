/*
 * Single-producer single-consumer ring of fixed-size packet slots.
 *
 * head: next position the producer fills; written only by the producer (release), read by
 *       the consumer (acquire). tail: next position the consumer reads; written only by the
 *       consumer (release), read by the producer (acquire). Both are free-running uint32
 *       counters; head - tail is the fill level (capacity is a power of two <= 2^24, so the
 *       subtraction is exact across the 2^32 wrap). Each side keeps a private cached copy of
 *       the other side's index on its own cache line and reloads it only when the cache says
 *       there is not enough room / data, so a batch costs at most one shared load and one
 *       release store per side.
 *
 * Ordering: the producer writes slot memory, then release-stores head; the consumer
 * acquire-loads head, then reads slot memory. Symmetrically the consumer finishes reading
 * slots before it release-stores tail, and the producer acquire-loads tail before it
 * overwrites them.
 */
#include "overlayd.h"

#include <errno.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_LINE 64

struct ovl_ring {
  /* producer's line */
  alignas(CACHE_LINE) _Atomic uint32_t head;
  uint32_t tail_cache; /* producer-private: last tail it loaded */
  /* consumer's line */
  alignas(CACHE_LINE) _Atomic uint32_t tail;
  uint32_t head_cache; /* consumer-private: last head it loaded */
  /* read-only after creation */
  alignas(CACHE_LINE) uint32_t mask;  /* capacity - 1 */
  uint32_t slot_size;                 /* payload bytes per slot */
  size_t stride;                      /* bytes from one slot to the next, multiple of 64 */
  alignas(CACHE_LINE) unsigned char slots[];
};

static size_t slot_stride(uint32_t slot_size) {
  size_t s = sizeof(struct ovl_slot) + (size_t)slot_size;
  return (s + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
}

size_t ovl_ring_memory_size(uint32_t slot_size, uint32_t slot_count) {
  if (slot_size == 0 || slot_size > OVL_RING_SLOT_SIZE_MAX) return 0;
  if (slot_count < 2 || slot_count > OVL_RING_SLOTS_MAX) return 0;
  if ((slot_count & (slot_count - 1)) != 0) return 0;
  size_t bytes = slot_stride(slot_size) * (size_t)slot_count;
  if (bytes > OVL_RING_BYTES_MAX) return 0;
  return sizeof(struct ovl_ring) + bytes; /* sizeof is a multiple of 64 (alignas) */
}

int ovl_ring_create(struct ovl_ring **out, uint32_t slot_size, uint32_t slot_count) {
  size_t bytes = ovl_ring_memory_size(slot_size, slot_count);
  if (bytes == 0) return -EINVAL;
  struct ovl_ring *r = aligned_alloc(CACHE_LINE, bytes);
  if (r == NULL) return -ENOMEM;
  /* Header only: slot memory is written by the producer before it is ever read. */
  memset(r, 0, sizeof(*r));
  atomic_init(&r->head, 0);
  atomic_init(&r->tail, 0);
  r->mask = slot_count - 1;
  r->slot_size = slot_size;
  r->stride = slot_stride(slot_size);
  *out = r;
  return 0;
}

void ovl_ring_destroy(struct ovl_ring *r) { free(r); }

uint32_t ovl_ring_slot_size(const struct ovl_ring *r) { return r->slot_size; }

uint32_t ovl_ring_capacity(const struct ovl_ring *r) { return r->mask + 1; }

uint32_t ovl_ring_count(const struct ovl_ring *r) {
  uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
  uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
  return head - tail;
}

struct ovl_slot *ovl_ring_slot(const struct ovl_ring *r, uint32_t pos) {
  /* The cast drops const: slots are written by whichever side currently owns them. */
  return (struct ovl_slot *)(void *)((unsigned char *)r->slots + (size_t)(pos & r->mask) * r->stride);
}

uint32_t ovl_ring_reserve(struct ovl_ring *r, uint32_t max, uint32_t *pos) {
  uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed); /* own index */
  uint32_t cap = r->mask + 1;
  uint32_t space = cap - (head - r->tail_cache);
  if (space < max) {
    r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
    space = cap - (head - r->tail_cache);
  }
  *pos = head;
  return space < max ? space : max;
}

void ovl_ring_commit(struct ovl_ring *r, uint32_t n) {
  uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  atomic_store_explicit(&r->head, head + n, memory_order_release);
}

uint32_t ovl_ring_peek(struct ovl_ring *r, uint32_t max, uint32_t *pos) {
  uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed); /* own index */
  uint32_t avail = r->head_cache - tail;
  if (avail < max) {
    r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
    avail = r->head_cache - tail;
  }
  *pos = tail;
  return avail < max ? avail : max;
}

void ovl_ring_release(struct ovl_ring *r, uint32_t n) {
  uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
  atomic_store_explicit(&r->tail, tail + n, memory_order_release);
}

int ovl_ring_push(struct ovl_ring *r, const void *data, uint32_t len) {
  if (len > r->slot_size) return -EMSGSIZE;
  uint32_t pos;
  if (ovl_ring_reserve(r, 1, &pos) == 0) return -ENOBUFS;
  struct ovl_slot *s = ovl_ring_slot(r, pos);
  if (len) memcpy(s->data, data, len);
  s->len = len;
  ovl_ring_commit(r, 1);
  return 0;
}

int ovl_ring_pop(struct ovl_ring *r, void *buf, uint32_t cap) {
  uint32_t pos;
  if (ovl_ring_peek(r, 1, &pos) == 0) return -EAGAIN;
  const struct ovl_slot *s = ovl_ring_slot(r, pos);
  uint32_t len = s->len;
  if (len > cap) return -EMSGSIZE;
  if (len) memcpy(buf, s->data, len);
  ovl_ring_release(r, 1);
  return (int)len;
}
