/* Ring transfer micro-benchmark of the native core's SPSC packet ring (native/src/ring.c),
 * where JavaScript cannot time it: a producer thread copies packets of a fixed size into
 * the ring in batches (reserve/commit), the main thread copies them out (peek/release),
 * like the TUN port's I/O thread and the engine do. No syscalls, no TUN: this is the upper
 * bound the ring puts on a forwarding path, not a forwarding rate.
 *
 * usage: ring_bench PACKET_BYTES PACKETS BATCH
 * prints one JSON object: {"packetBytes":..,"packets":..,"batch":..,"seconds":..,
 *   "mpps":..,"gbytesPerSec":..,"producerWaits":..,"consumerWaits":..}
 * Bounded: alarm() kills it after TIME_LIMIT_SEC (exit by SIGALRM, non-zero). */
#include "overlayd.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOT_SIZE 1536u       /* bytes: the js engine's slot for a 1472-byte TUN MTU */
#define RING_SLOTS 1024u      /* slots: the js engine's RING_SLOTS */
#define TIME_LIMIT_SEC 60

static struct ovl_ring *ring;
static uint64_t npackets;
static uint32_t pkt_bytes, batch;
static uint64_t producer_waits;
static uint8_t src[SLOT_SIZE];

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *producer(void *arg) {
  (void)arg;
  uint64_t seq = 0;
  while (seq < npackets) {
    uint32_t want = batch;
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
      src[0] = (uint8_t)(seq + i);
      memcpy(s->data, src, pkt_bytes);
      s->len = pkt_bytes;
    }
    ovl_ring_commit(ring, n);
    seq += n;
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s PACKET_BYTES PACKETS BATCH\n", argv[0]);
    return 2;
  }
  pkt_bytes = (uint32_t)strtoul(argv[1], NULL, 10);
  npackets = strtoull(argv[2], NULL, 10);
  batch = (uint32_t)strtoul(argv[3], NULL, 10);
  if (pkt_bytes == 0 || pkt_bytes > SLOT_SIZE || npackets == 0 || batch == 0 || batch > RING_SLOTS) {
    fprintf(stderr, "bad arguments (PACKET_BYTES 1..%u, PACKETS > 0, BATCH 1..%u)\n", SLOT_SIZE, RING_SLOTS);
    return 2;
  }
  alarm(TIME_LIMIT_SEC);
  for (uint32_t i = 0; i < SLOT_SIZE; i++) src[i] = (uint8_t)(i * 131u + 7u);
  int rc = ovl_ring_create(&ring, SLOT_SIZE, RING_SLOTS);
  if (rc != 0) {
    fprintf(stderr, "ovl_ring_create: %s\n", ovl_errno_name(-rc));
    return 1;
  }
  static uint8_t dst[SLOT_SIZE];
  uint64_t seq = 0, consumer_waits = 0, check = 0;
  double t0 = now_sec();
  pthread_t th;
  if (pthread_create(&th, NULL, producer, NULL) != 0) return 1;
  while (seq < npackets) {
    uint32_t pos;
    uint32_t n = ovl_ring_peek(ring, batch, &pos);
    if (n == 0) {
      consumer_waits++;
      sched_yield();
      continue;
    }
    for (uint32_t i = 0; i < n; i++) {
      const struct ovl_slot *s = ovl_ring_slot(ring, pos + i);
      memcpy(dst, s->data, s->len);
      check += dst[0];
    }
    ovl_ring_release(ring, n);
    seq += n;
  }
  pthread_join(th, NULL);
  double dt = now_sec() - t0;
  ovl_ring_destroy(ring);
  printf("{\"packetBytes\":%u,\"packets\":%llu,\"batch\":%u,\"seconds\":%.6f,\"mpps\":%.3f,"
         "\"gbytesPerSec\":%.3f,\"producerWaits\":%llu,\"consumerWaits\":%llu,\"check\":%llu}\n",
         pkt_bytes, (unsigned long long)seq, batch, dt, (double)seq / dt / 1e6,
         (double)seq * pkt_bytes / dt / 1e9, (unsigned long long)producer_waits,
         (unsigned long long)consumer_waits, (unsigned long long)check);
  return 0;
}
