/* Ring basics, single-threaded: parameters, empty/full, FIFO order, wrap (slot index and
 * the uint32 position counters), batch reserve/commit and peek/release, size limits.
 * White-box: includes ring.c to reach the indices. */
#include "../src/ring.c"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tap.h"

static void fill(uint8_t *p, uint32_t len, uint32_t seed) {
  for (uint32_t i = 0; i < len; i++) p[i] = (uint8_t)(seed * 7u + i);
}
static int check(const uint8_t *p, uint32_t len, uint32_t seed) {
  for (uint32_t i = 0; i < len; i++)
    if (p[i] != (uint8_t)(seed * 7u + i)) return 0;
  return 1;
}

static void test_params(void) {
  struct ovl_ring *r = NULL;
  tap_ok(ovl_ring_create(&r, 0, 16) == -EINVAL, "slot_size 0 refused");
  tap_ok(ovl_ring_create(&r, OVL_RING_SLOT_SIZE_MAX + 1, 16) == -EINVAL, "slot_size 65536 refused");
  tap_ok(ovl_ring_create(&r, 100, 0) == -EINVAL, "0 slots refused");
  tap_ok(ovl_ring_create(&r, 100, 1) == -EINVAL, "1 slot refused");
  tap_ok(ovl_ring_create(&r, 100, 3) == -EINVAL, "3 slots (not a power of two) refused");
  tap_ok(ovl_ring_create(&r, 100, OVL_RING_SLOTS_MAX * 2) == -EINVAL, "more than OVL_RING_SLOTS_MAX refused");
  tap_ok(ovl_ring_create(&r, 65535, 65536) == -EINVAL, "65535 x 65536 (> 1 GiB) refused");
  tap_ok(ovl_ring_memory_size(65535, 65536) == 0, "memory_size 0 for invalid parameters");
  tap_ok(ovl_ring_memory_size(1500, 1024) >= 1024u * 1504u, "memory_size covers the slots");
  tap_ok(r == NULL, "nothing returned on failure");

  TAP_REQUIRE(ovl_ring_create(&r, 65535, 2) == 0, "65535 x 2 accepted");
  tap_ok(ovl_ring_capacity(r) == 2 && ovl_ring_slot_size(r) == 65535, "capacity 2, slot size 65535");
  ovl_ring_destroy(r);
  ovl_ring_destroy(NULL);

  TAP_REQUIRE(ovl_ring_create(&r, 100, 16) == 0, "100 x 16 created");
  tap_ok(offsetof(struct ovl_ring, tail) - offsetof(struct ovl_ring, head) >= 64,
         "head and tail on separate cache lines");
  tap_ok(((uintptr_t)r % 64) == 0, "ring memory 64-byte aligned");
  int aligned = 1;
  for (uint32_t i = 0; i < 16; i++) aligned &= ((uintptr_t)ovl_ring_slot(r, i) % 64) == 0;
  tap_ok(aligned, "every slot 64-byte aligned");
  tap_ok((uint8_t *)ovl_ring_slot(r, 1) - (uint8_t *)ovl_ring_slot(r, 0) >= (ptrdiff_t)(sizeof(uint32_t) + 100),
         "stride holds length + slot_size bytes");
  tap_ok(ovl_ring_slot(r, 16) == ovl_ring_slot(r, 0), "position 16 maps to slot 0");
  ovl_ring_destroy(r);
}

static void test_empty_full(void) {
  struct ovl_ring *r;
  uint8_t buf[256];
  uint32_t pos;
  TAP_REQUIRE(ovl_ring_create(&r, 100, 16) == 0, "ring 100 x 16");
  tap_ok(ovl_ring_count(r) == 0, "new ring empty");
  tap_ok(ovl_ring_peek(r, 8, &pos) == 0, "peek on empty gives 0");
  tap_ok(ovl_ring_pop(r, buf, sizeof(buf)) == -EAGAIN, "pop on empty gives -EAGAIN");
  tap_ok(ovl_ring_reserve(r, 100, &pos) == 16, "reserve on empty offers all 16 slots");

  int all = 1;
  for (uint32_t i = 0; i < 16; i++) {
    fill(buf, 50 + i, i);
    all &= ovl_ring_push(r, buf, 50 + i) == 0;
  }
  tap_ok(all, "16 pushes succeed");
  tap_ok(ovl_ring_count(r) == 16, "count 16");
  tap_ok(ovl_ring_push(r, buf, 10) == -ENOBUFS, "17th push gives -ENOBUFS");
  tap_ok(ovl_ring_reserve(r, 4, &pos) == 0, "reserve on full gives 0");

  tap_ok(ovl_ring_pop(r, buf, 49) == -EMSGSIZE, "pop into a too small buffer gives -EMSGSIZE");
  tap_ok(ovl_ring_count(r) == 16, "and leaves the packet queued");
  int ok = 1;
  for (uint32_t i = 0; i < 16; i++) {
    int n = ovl_ring_pop(r, buf, sizeof(buf));
    ok &= n == (int)(50 + i) && check(buf, (uint32_t)n, i);
  }
  tap_ok(ok, "16 pops return the packets in order, intact");
  tap_ok(ovl_ring_count(r) == 0 && ovl_ring_pop(r, buf, sizeof(buf)) == -EAGAIN, "empty again");

  tap_ok(ovl_ring_push(r, buf, 101) == -EMSGSIZE, "push of slot_size+1 bytes gives -EMSGSIZE");
  tap_ok(ovl_ring_count(r) == 0, "and queues nothing");
  fill(buf, 100, 9);
  tap_ok(ovl_ring_push(r, buf, 100) == 0, "push of exactly slot_size bytes");
  tap_ok(ovl_ring_push(r, buf, 0) == 0, "push of 0 bytes");
  memset(buf, 0, sizeof(buf));
  tap_ok(ovl_ring_pop(r, buf, 100) == 100 && check(buf, 100, 9), "slot_size packet intact");
  tap_ok(ovl_ring_pop(r, buf, 0) == 0, "0-byte packet pops with length 0");
  ovl_ring_destroy(r);
}

static void test_wrap(void) {
  struct ovl_ring *r;
  uint8_t buf[64];
  TAP_REQUIRE(ovl_ring_create(&r, 64, 4) == 0, "ring 64 x 4");
  uint32_t seq_in = 0, seq_out = 0;
  int ok = 1;
  for (int round = 0; round < 1000; round++) { /* 3 in, 3 out: slot index wraps often */
    for (int k = 0; k < 3; k++) {
      uint32_t len = 1 + seq_in % 64;
      fill(buf, len, seq_in);
      ok &= ovl_ring_push(r, buf, len) == 0;
      seq_in++;
    }
    for (int k = 0; k < 3; k++) {
      int n = ovl_ring_pop(r, buf, sizeof(buf));
      ok &= n == (int)(1 + seq_out % 64) && check(buf, (uint32_t)n, seq_out);
      seq_out++;
    }
  }
  tap_ok(ok && seq_out == 3000, "3000 packets through a 4-slot ring in order, intact");

  /* uint32 position wrap: start both indices just below 2^32. */
  r->head = UINT32_MAX - 5;
  r->tail = UINT32_MAX - 5;
  r->tail_cache = UINT32_MAX - 5;
  r->head_cache = UINT32_MAX - 5;
  ok = 1;
  for (uint32_t i = 0; i < 40; i++) {
    uint32_t len = 1 + i;
    fill(buf, len, i);
    ok &= ovl_ring_push(r, buf, len) == 0;
    if (i % 2 == 1) { /* keep two in flight across the wrap */
      for (uint32_t j = i - 1; j <= i; j++) {
        int n = ovl_ring_pop(r, buf, sizeof(buf));
        ok &= n == (int)(1 + j) && check(buf, (uint32_t)n, j);
      }
    }
  }
  tap_ok(ok, "positions wrap past 2^32 without losing or reordering packets");
  for (int k = 0; k < 4; k++) ok &= ovl_ring_push(r, buf, 1) == 0;
  tap_ok(ok && ovl_ring_count(r) == 4 && ovl_ring_push(r, buf, 1) == -ENOBUFS, "full detection across the wrap");
  ovl_ring_destroy(r);
}

static void test_batch(void) {
  struct ovl_ring *r;
  uint32_t pos, pos2;
  TAP_REQUIRE(ovl_ring_create(&r, 32, 16) == 0, "ring 32 x 16");

  tap_ok(ovl_ring_reserve(r, 0, &pos) == 0, "reserve 0 gives 0");
  uint32_t n = ovl_ring_reserve(r, 10, &pos);
  tap_ok(n == 10 && pos == 0, "reserve 10 gives 10 at position 0");
  for (uint32_t i = 0; i < n; i++) {
    struct ovl_slot *s = ovl_ring_slot(r, pos + i);
    fill(s->data, 20, 100 + i);
    s->len = 20;
  }
  tap_ok(ovl_ring_count(r) == 0, "nothing visible before commit");
  tap_ok(ovl_ring_peek(r, 16, &pos2) == 0, "peek sees nothing before commit");
  ovl_ring_commit(r, 7);
  tap_ok(ovl_ring_count(r) == 7, "commit 7 of 10 publishes 7");
  n = ovl_ring_reserve(r, 16, &pos);
  tap_ok(n == 9 && pos == 7, "uncommitted slots are offered again (9 free from position 7)");
  for (uint32_t i = 0; i < n; i++) {
    struct ovl_slot *s = ovl_ring_slot(r, pos + i);
    fill(s->data, 21, 200 + i);
    s->len = 21;
  }
  ovl_ring_commit(r, n);
  tap_ok(ovl_ring_count(r) == 16 && ovl_ring_reserve(r, 1, &pos) == 0, "full after committing 9 more");

  n = ovl_ring_peek(r, 5, &pos2);
  tap_ok(n == 5 && pos2 == 0, "peek 5 gives 5 at position 0");
  int ok = 1;
  for (uint32_t i = 0; i < n; i++) {
    const struct ovl_slot *s = ovl_ring_slot(r, pos2 + i);
    ok &= s->len == 20 && check(s->data, 20, 100 + i);
  }
  tap_ok(ok, "peeked slots hold the committed packets");
  ovl_ring_release(r, 3);
  tap_ok(ovl_ring_count(r) == 13, "release 3 of 5 frees 3");
  n = ovl_ring_reserve(r, 16, &pos);
  tap_ok(n == 3 && pos == 16, "producer sees the 3 freed slots");
  n = ovl_ring_peek(r, 100, &pos2);
  tap_ok(n == 13 && pos2 == 3, "unreleased slots are peeked again (13 from position 3)");
  ok = 1;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t p = pos2 + i;
    const struct ovl_slot *s = ovl_ring_slot(r, p);
    if (p < 7) ok &= s->len == 20 && check(s->data, 20, 100 + p);
    else ok &= s->len == 21 && check(s->data, 21, 200 + (p - 7));
  }
  tap_ok(ok, "batch contents in order across both commits");
  ovl_ring_release(r, n);
  tap_ok(ovl_ring_count(r) == 0 && ovl_ring_peek(r, 1, &pos2) == 0, "empty after releasing all");
  ovl_ring_destroy(r);
}

int main(void) {
  test_params();
  test_empty_full();
  test_wrap();
  test_batch();
  return tap_done();
}
