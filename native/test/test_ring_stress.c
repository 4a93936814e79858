/* Two-thread stress of the SPSC ring: a producer thread pushes N packets of lengths
 * 1..slot_size derived from their sequence number, in batches of varying size; the main
 * thread consumes them in batches of varying size and checks the length, every byte, and
 * the order. N = 10,000,000 by default; OVL_STRESS_PACKETS overrides it (the valgrind
 * target uses fewer and says so). Bounded by alarm(): a hang kills the test (non-zero). */
#include "overlayd.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"

#define SLOT_SIZE 1500u
#define RING_SLOTS 1024u
#define MAX_BATCH 64u
#define DEFAULT_PACKETS 10000000ull
#define TIME_LIMIT_SEC 600 /* hard bound for the whole test (SIGALRM kills it) */

static struct ovl_ring *ring;
static uint64_t npackets;
static uint8_t pattern[SLOT_SIZE + 256];
static uint64_t producer_waits;

static uint32_t mix(uint64_t x) { /* splitmix64 finalizer */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return (uint32_t)(x ^ (x >> 31));
}

/* Packet seq: length 1..SLOT_SIZE; bytes 0..7 the seq (little endian, cut to the length),
 * the rest from the pattern at an offset that depends on seq. */
static uint32_t pkt_len(uint64_t seq) {
  uint32_t h = mix(seq);
  if ((h & 0xff) == 0) return SLOT_SIZE; /* make sure the extremes are frequent */
  if ((h & 0xff) == 1) return 1;
  return 1 + (h >> 8) % SLOT_SIZE;
}

static void pkt_fill(uint8_t *p, uint64_t seq, uint32_t len) {
  uint8_t hdr[8];
  for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(seq >> (8 * i));
  uint32_t h = len < 8 ? len : 8;
  memcpy(p, hdr, h);
  if (len > 8) memcpy(p + 8, pattern + (seq & 255), len - 8);
}

static int pkt_check(const uint8_t *p, uint64_t seq, uint32_t len) {
  uint8_t want[8];
  for (int i = 0; i < 8; i++) want[i] = (uint8_t)(seq >> (8 * i));
  uint32_t h = len < 8 ? len : 8;
  if (memcmp(p, want, h) != 0) return 0;
  if (len > 8 && memcmp(p + 8, pattern + (seq & 255), len - 8) != 0) return 0;
  return 1;
}

static void *producer(void *arg) {
  (void)arg;
  uint64_t seq = 0;
  while (seq < npackets) {
    uint32_t want = 1 + mix(seq ^ 0x5555) % MAX_BATCH;
    if (want > npackets - seq) want = (uint32_t)(npackets - seq);
    uint32_t pos;
    uint32_t n = ovl_ring_reserve(ring, want, &pos);
    if (n == 0) {
      producer_waits++;
      sched_yield();
      continue;
    }
    for (uint32_t i = 0; i < n; i++) {
      struct ovl_slot *s = ovl_ring_slot(ring, pos + i);
      uint32_t len = pkt_len(seq + i);
      pkt_fill(s->data, seq + i, len);
      s->len = len;
    }
    ovl_ring_commit(ring, n);
    seq += n;
  }
  return NULL;
}

int main(void) {
  alarm(TIME_LIMIT_SEC);
  npackets = DEFAULT_PACKETS;
  const char *env = getenv("OVL_STRESS_PACKETS");
  if (env && *env) npackets = strtoull(env, NULL, 10);
  const char *why = npackets == DEFAULT_PACKETS ? "full run" : "REDUCED by OVL_STRESS_PACKETS";
  const char *note = getenv("OVL_STRESS_NOTE"); /* the Makefile says why it reduced the count */
  if (npackets != DEFAULT_PACKETS && note && *note) why = note;
  tap_diag("packets=%llu (%s), slot_size=%u, ring_slots=%u, batches 1..%u", (unsigned long long)npackets, why,
           SLOT_SIZE, RING_SLOTS, MAX_BATCH);

  for (size_t i = 0; i < sizeof(pattern); i++) pattern[i] = (uint8_t)(i * 131u + 7u);
  TAP_REQUIRE(ovl_ring_create(&ring, SLOT_SIZE, RING_SLOTS) == 0, "ring %u x %u created", SLOT_SIZE, RING_SLOTS);

  double t0 = now_sec();
  pthread_t th;
  TAP_REQUIRE(pthread_create(&th, NULL, producer, NULL) == 0, "producer thread started");

  uint64_t seq = 0, bytes = 0, consumer_waits = 0, bad = 0;
  uint64_t first_bad = 0;
  while (seq < npackets) {
    uint32_t want = 1 + mix(seq ^ 0xaaaa) % MAX_BATCH;
    uint32_t pos;
    uint32_t n = ovl_ring_peek(ring, want, &pos);
    if (n == 0) {
      consumer_waits++;
      sched_yield();
      continue;
    }
    for (uint32_t i = 0; i < n; i++) {
      const struct ovl_slot *s = ovl_ring_slot(ring, pos + i);
      uint32_t len = pkt_len(seq + i);
      if (s->len != len || !pkt_check(s->data, seq + i, len)) {
        if (bad++ == 0) first_bad = seq + i;
      }
      bytes += s->len;
    }
    ovl_ring_release(ring, n);
    seq += n;
    if (bad) break;
  }
  if (bad) { /* the producer may be stuck on a full ring: report and let exit() end it */
    tap_ok(0, "every packet has its length and every byte, in order: first bad packet seq %llu",
           (unsigned long long)first_bad);
    return tap_done();
  }
  TAP_REQUIRE(pthread_join(th, NULL) == 0, "producer joined");
  double dt = now_sec() - t0;

  tap_ok(1, "every packet has its length and every byte, in order");
  tap_ok(seq == npackets, "consumer saw all %llu packets", (unsigned long long)seq);
  uint32_t pos;
  tap_ok(ovl_ring_count(ring) == 0 && ovl_ring_peek(ring, 1, &pos) == 0, "ring empty at the end");
  tap_diag("%.2f s, %.2f Mpackets/s, %.2f GB/s payload, producer waits %llu, consumer waits %llu", dt,
           (double)seq / dt / 1e6, (double)bytes / dt / 1e9, (unsigned long long)producer_waits,
           (unsigned long long)consumer_waits);
  ovl_ring_destroy(ring);
  return tap_done();
}
