/* The TUN port's I/O thread over a SOCK_SEQPACKET socketpair (no root, no TUN): one end is
 * the port's fd, the other is the "kernel" side driven by the test.
 *
 * Covers: idle without spinning; rx order and integrity with a paced writer (lossless,
 * one drain per burst, so every burst needs a fresh notify: a lost wakeup is a timeout);
 * rx under a flood into a small ring (delivered packets in order and intact, delivered +
 * dropped == sent, and no lost wakeup at the end); rx-ring-full drops and notify at most
 * once until drained; oversize drops; tx order and integrity through EAGAIN/POLLOUT
 * without spinning; EOF on the fd (reading stops, no spin, writes counted as errors, no
 * SIGPIPE death); stop joins promptly in every state. Every wait is bounded. */
#include "overlayd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"

#define WAIT_SEC 10.0 /* bound of any single wait in this test */
#define STOP_MAX_SEC 1.0

struct fx {
  int port_fd;  /* the port's side (nonblocking) */
  int peer_fd;  /* the test's side (blocking) */
  int note_efd; /* written by the notify callback */
  atomic_uint notes;
  struct ovl_tun_counters c;
  struct ovl_tunport *p;
  uint32_t slot_size;
};

static void on_notify(void *opaque) { /* I/O thread */
  struct fx *f = opaque;
  atomic_fetch_add(&f->notes, 1);
  uint64_t one = 1;
  if (write(f->note_efd, &one, sizeof(one)) != sizeof(one)) abort();
}

static uint64_t ctr(struct fx *f, enum ovl_tun_counter i) {
  return atomic_load_explicit(&f->c.v[i], memory_order_relaxed);
}

static void fx_start(struct fx *f, uint32_t slot_size, uint32_t ring_slots) {
  memset(f, 0, sizeof(*f));
  int sp[2];
  TAP_ASSERT(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0, "socketpair");
  f->port_fd = sp[0];
  f->peer_fd = sp[1];
  int fl = fcntl(f->port_fd, F_GETFL);
  TAP_ASSERT(fl >= 0 && fcntl(f->port_fd, F_SETFL, fl | O_NONBLOCK) == 0, "port fd nonblocking");
  f->note_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  TAP_ASSERT(f->note_efd >= 0, "notify eventfd");
  f->slot_size = slot_size;
  struct ovl_tunport_config cfg = {
      .fd = f->port_fd, .slot_size = slot_size, .ring_slots = ring_slots,
      .notify = on_notify, .opaque = f, .counters = &f->c};
  const char *sc = NULL;
  int err = ovl_tunport_start(&f->p, &cfg, &sc);
  TAP_REQUIRE(err == 0, "port started (slot %u, ring %u): %d %s", slot_size, ring_slots, err, sc ? sc : "");
}

static double fx_stop(struct fx *f) {
  double t0 = now_sec();
  ovl_tunport_stop(f->p);
  double dt = now_sec() - t0;
  if (f->peer_fd >= 0) close(f->peer_fd);
  close(f->port_fd);
  close(f->note_efd);
  return dt;
}

/* Waits up to `sec` for a notify; returns 1 if one came (and consumes it). */
static int wait_note(struct fx *f, double sec) {
  struct pollfd pfd = {.fd = f->note_efd, .events = POLLIN};
  int rc;
  do rc = poll(&pfd, 1, (int)(sec * 1000)); while (rc < 0 && errno == EINTR);
  if (rc <= 0) return 0;
  uint64_t v;
  return read(f->note_efd, &v, sizeof(v)) == sizeof(v);
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Waits until counter a + counter b reaches `want` (or the deadline). */
static int wait_ctr(struct fx *f, enum ovl_tun_counter a, int b, uint64_t want) {
  double end = now_sec() + WAIT_SEC;
  while (now_sec() < end) {
    uint64_t v = ctr(f, a) + (b >= 0 ? ctr(f, (enum ovl_tun_counter)b) : 0);
    if (v >= want) return 1;
    sleep_ms(1);
  }
  return 0;
}

/* Packet seq: length 4..slot (the first 4 bytes carry seq), bytes derived from seq. */
static void pfill(uint8_t *b, uint32_t seq, uint32_t len) {
  for (uint32_t i = 0; i < len; i++) b[i] = (uint8_t)(seq * 31u + i * 7u + (i >> 8));
  memcpy(b, &seq, len < 4 ? len : 4);
}
/* Lengths used where the seq must be recoverable: 4..slot. */
static uint32_t plen4(uint32_t seq, uint32_t slot) { return 4 + (seq * 2654435761u >> 7) % (slot - 3); }
static int pcheck4(const uint8_t *b, uint32_t len, uint32_t slot, uint32_t *seq_out) {
  uint32_t seq;
  if (len < 4) return 0;
  memcpy(&seq, b, 4);
  *seq_out = seq;
  if (len != plen4(seq, slot)) return 0;
  for (uint32_t i = 4; i < len; i++)
    if (b[i] != (uint8_t)(seq * 31u + i * 7u + (i >> 8))) return 0;
  return 1;
}

static void test_config(void) {
  struct ovl_tun_counters c;
  struct ovl_tunport *p = NULL;
  const char *sc = NULL;
  struct ovl_tunport_config cfg = {.fd = -1, .slot_size = 1500, .ring_slots = 64, .counters = &c};
  tap_ok(ovl_tunport_start(&p, &cfg, &sc) == -EINVAL && sc && strcmp(sc, "config") == 0, "fd -1 refused (config)");
  cfg.fd = 0;
  cfg.ring_slots = 63;
  tap_ok(ovl_tunport_start(&p, &cfg, &sc) == -EINVAL, "ring_slots 63 refused");
  cfg.ring_slots = 64;
  cfg.counters = NULL;
  tap_ok(ovl_tunport_start(&p, &cfg, &sc) == -EINVAL, "missing counters refused");
  tap_ok(p == NULL, "nothing started");
  ovl_tunport_stop(NULL);
  for (int i = 0; i < OVL_TC_COUNT; i++)
    if (!ovl_tun_counter_names[i] || !*ovl_tun_counter_names[i]) tap_ok(0, "counter %d has a name", i);
  tap_ok(strcmp(ovl_tun_counter_names[OVL_TC_TUN_RX_PACKETS], "tun_rx_packets") == 0 &&
             strcmp(ovl_tun_counter_names[OVL_TC_POLLS], "polls") == 0,
         "counter names in enum order");
}

static void test_idle(void) {
  struct fx f;
  fx_start(&f, 1500, 64);
  sleep_ms(50);
  uint64_t p0 = ctr(&f, OVL_TC_POLLS);
  sleep_ms(300);
  uint64_t p1 = ctr(&f, OVL_TC_POLLS);
  tap_ok(p1 == p0 && p0 <= 2, "idle: the thread sleeps in poll (polls %llu -> %llu over 300 ms)",
         (unsigned long long)p0, (unsigned long long)p1);
  uint8_t buf[1500];
  uint32_t lens[4];
  tap_ok(ovl_tunport_recv(f.p, buf, sizeof(buf), lens, 1) == 0, "recv on an empty port gives 0");
  tap_ok(atomic_load(&f.notes) == 0, "no notify without packets");
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stop of an idle port joins promptly (%.3f ms)", dt * 1e3);
}

/* ---- rx, paced: writer bursts, consumer drains fully, then acks. Lossless. */
struct pace {
  struct fx *f;
  uint32_t bursts, total;
  atomic_uint acked; /* bursts fully received */
  int failed;
};

static void *paced_writer(void *arg) {
  struct pace *pc = arg;
  uint8_t buf[2048];
  uint32_t seq = 0;
  for (uint32_t b = 0; b < pc->bursts; b++) {
    uint32_t n = 1 + (b * 7919u) % 300; /* 1..300 packets per burst; ring has 512 slots */
    for (uint32_t i = 0; i < n; i++, seq++) {
      uint32_t len = plen4(seq, pc->f->slot_size);
      pfill(buf, seq, len);
      if (write(pc->f->peer_fd, buf, len) != (ssize_t)len) {
        pc->failed = 1;
        return NULL;
      }
    }
    double end = now_sec() + WAIT_SEC;
    while (atomic_load(&pc->acked) <= b) {
      if (now_sec() > end) {
        pc->failed = 1;
        return NULL;
      }
      sched_yield();
    }
  }
  pc->total = seq;
  return NULL;
}

static void test_rx_paced(void) {
  struct fx f;
  fx_start(&f, 1500, 512);
  struct pace pc = {.f = &f, .bursts = 400};
  pthread_t th;
  TAP_ASSERT(pthread_create(&th, NULL, paced_writer, &pc) == 0, "paced writer started");

  static uint8_t buf[32 * 1500];
  uint32_t lens[32];
  uint32_t expect = 0, bad = 0, lost_wakeup = 0;
  for (uint32_t b = 0; b < pc.bursts && !bad; b++) {
    uint32_t n = 1 + (b * 7919u) % 300, got = 0;
    while (got < n) {
      if (!wait_note(&f, WAIT_SEC)) {
        lost_wakeup = 1;
        break;
      }
      uint32_t k;
      do { /* drain until fewer than asked: that re-arms the notify */
        k = ovl_tunport_recv(f.p, buf, 1500, lens, 32);
        for (uint32_t i = 0; i < k; i++) {
          uint32_t seq;
          if (!pcheck4(buf + i * 1500, lens[i], 1500, &seq) || seq != expect) bad++;
          expect++;
        }
        got += k;
      } while (k == 32);
    }
    if (lost_wakeup) break;
    atomic_store(&pc.acked, b + 1);
  }
  if (lost_wakeup || bad) atomic_store(&pc.acked, UINT32_MAX); /* release the writer */
  pthread_join(th, NULL);
  tap_ok(!lost_wakeup, "rx paced: every burst was announced by a notify (no lost wakeup)");
  tap_ok(bad == 0 && !pc.failed, "rx paced: %u packets in order and intact", expect);
  tap_ok(expect == pc.total && ctr(&f, OVL_TC_TUN_RX_PACKETS) == expect, "rx paced: counted %llu of %u sent",
         (unsigned long long)ctr(&f, OVL_TC_TUN_RX_PACKETS), pc.total);
  tap_ok(ctr(&f, OVL_TC_RX_RING_FULL_DROPS) == 0, "rx paced: no drops");
  tap_ok(ctr(&f, OVL_TC_RX_NOTIFIES) >= pc.bursts && ctr(&f, OVL_TC_RX_NOTIFIES) == atomic_load(&f.notes),
         "rx paced: %llu notifies for %u bursts (at least one per burst)",
         (unsigned long long)ctr(&f, OVL_TC_RX_NOTIFIES), pc.bursts);
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stop joins promptly (%.3f ms)", dt * 1e3);
}

/* ---- rx, flood: writer as fast as it can into a 64-slot ring; consumer only reads after a
 * notify. Delivered packets are an ordered, intact subsequence; delivered + dropped == sent. */
struct flood {
  struct fx *f;
  uint32_t n;
  int failed;
};

static void *flood_writer(void *arg) {
  struct flood *fl = arg;
  uint8_t buf[2048];
  for (uint32_t seq = 0; seq < fl->n; seq++) {
    uint32_t len = plen4(seq, fl->f->slot_size);
    pfill(buf, seq, len);
    if (write(fl->f->peer_fd, buf, len) != (ssize_t)len) {
      fl->failed = 1;
      return NULL;
    }
  }
  return NULL;
}

static void test_rx_flood(void) {
  struct fx f;
  fx_start(&f, 1024, 64);
  struct flood fl = {.f = &f, .n = 200000};
  pthread_t th;
  TAP_ASSERT(pthread_create(&th, NULL, flood_writer, &fl) == 0, "flood writer started");
  static uint8_t buf[16 * 1024];
  uint32_t lens[16];
  uint64_t got = 0;
  uint32_t last = 0, bad = 0;
  int first = 1, timed_out = 0;
  double end = now_sec() + 60;
  for (;;) {
    uint64_t accounted = got + ctr(&f, OVL_TC_RX_RING_FULL_DROPS);
    if (accounted >= fl.n) break;
    if (now_sec() > end) {
      timed_out = 1;
      break;
    }
    if (!wait_note(&f, 0.2)) continue; /* dropped tails bring no notify: re-check the sum */
    uint32_t k;
    do {
      k = ovl_tunport_recv(f.p, buf, 1024, lens, 16);
      for (uint32_t i = 0; i < k; i++) {
        uint32_t seq;
        if (!pcheck4(buf + i * 1024, lens[i], 1024, &seq) || (!first && seq <= last)) bad++;
        last = seq;
        first = 0;
      }
      got += k;
    } while (k == 16);
  }
  pthread_join(th, NULL);
  uint64_t drops = ctr(&f, OVL_TC_RX_RING_FULL_DROPS);
  /* Anything still in the ring now would mean a notify was lost. */
  uint32_t left = ovl_tunport_recv(f.p, buf, 1024, lens, 16);
  tap_ok(!timed_out && !fl.failed, "rx flood: finished (got %llu, dropped %llu)", (unsigned long long)got,
         (unsigned long long)drops);
  tap_ok(bad == 0, "rx flood: delivered packets intact and in increasing order");
  tap_ok(got + drops == fl.n && ctr(&f, OVL_TC_TUN_RX_PACKETS) == got, "rx flood: delivered + dropped == sent (%u)",
         fl.n);
  tap_ok(left == 0, "rx flood: nothing left behind un-notified");
  tap_diag("rx flood: %llu notifies, %llu polls, %llu delivered, %llu dropped",
           (unsigned long long)ctr(&f, OVL_TC_RX_NOTIFIES), (unsigned long long)ctr(&f, OVL_TC_POLLS),
           (unsigned long long)got, (unsigned long long)drops);
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stop joins promptly (%.3f ms)", dt * 1e3);
}

/* ---- notify race: short bursts with jittered gaps, so commits land while the consumer is
 * inside ovl_tunport_recv (between finding the ring empty and re-arming). A notify lost
 * there strands the burst's last packet: the consumer then times out waiting. */
struct race {
  struct fx *f;
  uint32_t rounds;
  atomic_uint acked;
  int failed;
};

static uint32_t race_burst(uint32_t r) { return 1 + (r * 2246822519u >> 13) % 4; }

static void spin_ns(uint32_t ns) {
  double end = now_sec() + ns * 1e-9;
  while (now_sec() < end) {
  }
}

static void *race_writer(void *arg) {
  struct race *rc = arg;
  uint8_t buf[64];
  uint32_t seq = 0, rnd = 12345;
  for (uint32_t r = 0; r < rc->rounds; r++) {
    uint32_t k = race_burst(r);
    for (uint32_t i = 0; i < k; i++, seq++) {
      rnd = rnd * 1103515245u + 12345u;
      spin_ns((rnd >> 16) % 20000); /* 0..20 us */
      uint32_t len = plen4(seq, 64);
      pfill(buf, seq, len);
      if (write(rc->f->peer_fd, buf, len) != (ssize_t)len) {
        rc->failed = 1;
        return NULL;
      }
    }
    double end = now_sec() + WAIT_SEC;
    while (atomic_load(&rc->acked) <= r) {
      if (now_sec() > end) {
        rc->failed = 1;
        return NULL;
      }
    }
  }
  return NULL;
}

static void test_notify_race(void) {
  struct fx f;
  fx_start(&f, 64, 64);
  const char *env = getenv("OVL_UNDER_VALGRIND");
  struct race rc = {.f = &f, .rounds = env ? 500 : 20000};
  pthread_t th;
  TAP_ASSERT(pthread_create(&th, NULL, race_writer, &rc) == 0, "race writer started");
  uint8_t buf[4 * 64];
  uint32_t lens[4];
  uint32_t expect = 0, bad = 0, lost = 0, r;
  double t0 = now_sec();
  for (r = 0; r < rc.rounds && !lost; r++) {
    uint32_t k = race_burst(r), got = 0;
    while (got < k) {
      if (!wait_note(&f, 2.0)) {
        lost = 1;
        break;
      }
      uint32_t n;
      do {
        n = ovl_tunport_recv(f.p, buf, 64, lens, 2);
        for (uint32_t i = 0; i < n; i++) {
          uint32_t seq;
          if (!pcheck4(buf + i * 64, lens[i], 64, &seq) || seq != expect) bad++;
          expect++;
        }
        got += n;
      } while (n == 2);
    }
    atomic_store(&rc.acked, r + 1);
  }
  if (lost) atomic_store(&rc.acked, UINT32_MAX);
  pthread_join(th, NULL);
  tap_ok(!lost && !rc.failed, "notify race: %u rounds of 1..4 jittered packets, no lost wakeup (stopped at round %u)",
         rc.rounds, r);
  tap_ok(bad == 0, "notify race: %u packets in order and intact", expect);
  tap_diag("notify race: %.2f s, %llu notifies", now_sec() - t0, (unsigned long long)ctr(&f, OVL_TC_RX_NOTIFIES));
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stop joins promptly (%.3f ms)", dt * 1e3);
}

static void test_ring_full_and_notify(void) {
  struct fx f;
  fx_start(&f, 600, 4);
  uint8_t buf[600 * 8];
  uint32_t lens[8];
  for (uint32_t seq = 0; seq < 100; seq++) {
    uint32_t len = plen4(seq, 600);
    pfill(buf, seq, len);
    TAP_ASSERT(write(f.peer_fd, buf, len) == (ssize_t)len, "peer write %u", seq);
  }
  tap_ok(wait_ctr(&f, OVL_TC_TUN_RX_PACKETS, OVL_TC_RX_RING_FULL_DROPS, 100), "100 packets read from the fd");
  tap_ok(ctr(&f, OVL_TC_TUN_RX_PACKETS) == 4 && ctr(&f, OVL_TC_RX_RING_FULL_DROPS) == 96,
         "4-slot ring: 4 queued, 96 counted as rx_ring_full_drops (got %llu, %llu)",
         (unsigned long long)ctr(&f, OVL_TC_TUN_RX_PACKETS), (unsigned long long)ctr(&f, OVL_TC_RX_RING_FULL_DROPS));
  sleep_ms(20);
  tap_ok(ctr(&f, OVL_TC_RX_NOTIFIES) == 1 && atomic_load(&f.notes) == 1, "one notify until drained");
  uint32_t k = ovl_tunport_recv(f.p, buf, 600, lens, 8);
  int ok = k == 4;
  for (uint32_t i = 0; i < k; i++) {
    uint32_t seq;
    ok &= pcheck4(buf + i * 600, lens[i], 600, &seq) && seq == i;
  }
  tap_ok(ok, "the queued ones are packets 0..3, intact");
  uint32_t len = plen4(1000, 600);
  pfill(buf, 1000, len);
  TAP_ASSERT(write(f.peer_fd, buf, len) == (ssize_t)len, "peer write after drain");
  tap_ok(wait_note(&f, WAIT_SEC) && wait_ctr(&f, OVL_TC_RX_NOTIFIES, -1, 2), "drained ring: next packet notifies again");
  uint32_t seq = 0;
  tap_ok(ovl_tunport_recv(f.p, buf, 600, lens, 8) == 1 && pcheck4(buf, lens[0], 600, &seq) && seq == 1000,
         "and it is delivered");

  /* oversize: slot 600 */
  static uint8_t big[5000];
  memset(big, 0xab, sizeof(big));
  TAP_ASSERT(write(f.peer_fd, big, 601) == 601, "peer write 601 bytes");
  TAP_ASSERT(write(f.peer_fd, big, 5000) == 5000, "peer write 5000 bytes");
  TAP_ASSERT(write(f.peer_fd, big, 600) == 600, "peer write 600 bytes");
  tap_ok(wait_ctr(&f, OVL_TC_RX_OVERSIZE_DROPS, -1, 2) && ctr(&f, OVL_TC_RX_OVERSIZE_DROPS) == 2,
         "packets longer than the slot counted as rx_oversize_drops");
  tap_ok(wait_note(&f, WAIT_SEC) && ovl_tunport_recv(f.p, buf, 600, lens, 8) == 1 && lens[0] == 600 &&
             buf[0] == 0xab && buf[599] == 0xab,
         "a packet of exactly slot_size bytes is delivered whole");
  tap_ok(ctr(&f, OVL_TC_TUN_READ_ERRORS) == 0, "no read errors");
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stop joins promptly (%.3f ms)", dt * 1e3);
}

/* ---- tx */
struct reader {
  struct fx *f;
  uint32_t n, got, bad;
  int timed_out;
};

static void *tx_reader(void *arg) {
  struct reader *rd = arg;
  uint8_t buf[4096];
  while (rd->got < rd->n) {
    struct pollfd pfd = {.fd = rd->f->peer_fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)(WAIT_SEC * 1000)) <= 0) {
      rd->timed_out = 1;
      return NULL;
    }
    ssize_t r = read(rd->f->peer_fd, buf, sizeof(buf));
    if (r <= 0) {
      rd->timed_out = 1;
      return NULL;
    }
    uint32_t seq;
    if (!pcheck4(buf, (uint32_t)r, rd->f->slot_size, &seq) || seq != rd->got) rd->bad++;
    rd->got++;
  }
  return NULL;
}

static void test_tx(void) {
  struct fx f;
  fx_start(&f, 1400, 1024);
  const uint32_t N = 100000;
  static uint8_t store[64][1400];
  struct iovec iov[64];
  uint32_t seq = 0, partial = 0;
  double end = now_sec() + 60;

  /* Phase 1: no reader. The socket buffer fills, the thread gets EAGAIN and must wait for
   * POLLOUT without spinning while the tx ring holds the rest. */
  while (seq < 1024 + 200) {
    uint32_t n = 0;
    for (; n < 64; n++) {
      uint32_t len = plen4(seq + n, 1400);
      pfill(store[n], seq + n, len);
      iov[n] = (struct iovec){.iov_base = store[n], .iov_len = len};
    }
    int k = ovl_tunport_send(f.p, iov, n);
    TAP_ASSERT(k >= 0, "send");
    seq += (uint32_t)k;
    if ((uint32_t)k < n) break; /* tx ring full */
  }
  sleep_ms(100);
  uint64_t p0 = ctr(&f, OVL_TC_POLLS), w0 = ctr(&f, OVL_TC_TUN_TX_PACKETS);
  sleep_ms(200);
  uint64_t p1 = ctr(&f, OVL_TC_POLLS);
  tap_ok(w0 > 0 && w0 < seq, "tx blocked: %llu of %u written, the rest waits in the ring", (unsigned long long)w0, seq);
  tap_ok(p1 - p0 <= 1, "tx blocked on POLLOUT without spinning (polls +%llu in 200 ms)",
         (unsigned long long)(p1 - p0));

  /* Phase 2: a reader drains; the owner keeps sending until N. */
  struct reader rd = {.f = &f, .n = N};
  pthread_t th;
  TAP_ASSERT(pthread_create(&th, NULL, tx_reader, &rd) == 0, "reader started");
  while (seq < N && now_sec() < end) {
    uint32_t n = 0;
    for (; n < 64 && seq + n < N; n++) {
      uint32_t len = plen4(seq + n, 1400);
      pfill(store[n], seq + n, len);
      iov[n] = (struct iovec){.iov_base = store[n], .iov_len = len};
    }
    int k = ovl_tunport_send(f.p, iov, n);
    TAP_ASSERT(k >= 0, "send");
    seq += (uint32_t)k;
    if ((uint32_t)k < n) {
      partial++;
      sched_yield();
    }
  }
  pthread_join(th, NULL);
  tap_ok(seq == N && !rd.timed_out, "tx: %u packets queued and %u arrived at the peer", seq, rd.got);
  tap_ok(rd.bad == 0, "tx: in order and intact");
  uint64_t bytes = 0;
  for (uint32_t s = 0; s < N; s++) bytes += plen4(s, 1400);
  tap_ok(wait_ctr(&f, OVL_TC_TUN_TX_PACKETS, -1, N) && ctr(&f, OVL_TC_TUN_TX_BYTES) == bytes,
         "tx counters: %llu packets, %llu bytes", (unsigned long long)ctr(&f, OVL_TC_TUN_TX_PACKETS),
         (unsigned long long)ctr(&f, OVL_TC_TUN_TX_BYTES));
  tap_ok(ctr(&f, OVL_TC_TUN_WRITE_ERRORS) == 0, "tx: no write errors");
  tap_ok(ctr(&f, OVL_TC_WAKEUPS) >= 1, "tx: the thread was woken through the eventfd (%llu wakeups, %u partial sends)",
         (unsigned long long)ctr(&f, OVL_TC_WAKEUPS), partial);
  struct iovec too_big = {.iov_base = store[0], .iov_len = 1401};
  tap_ok(ovl_tunport_send(f.p, &too_big, 1) == -EMSGSIZE, "send of slot_size+1 bytes gives -EMSGSIZE");

  /* Stop while the thread waits for POLLOUT and both rings hold packets. */
  for (int i = 0; i < 3; i++) {
    uint32_t n;
    for (n = 0; n < 64; n++) iov[n] = (struct iovec){.iov_base = store[n], .iov_len = 1400};
    while (ovl_tunport_send(f.p, iov, n) > 0) {
    }
  }
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stop with a blocked, full tx ring joins promptly (%.3f ms)", dt * 1e3);
}

static void test_eof(void) {
  struct fx f;
  fx_start(&f, 1500, 64);
  uint8_t buf[1500];
  uint32_t lens[4];
  pfill(buf, 7, plen4(7, 1500));
  TAP_ASSERT(write(f.peer_fd, buf, plen4(7, 1500)) > 0, "peer write");
  close(f.peer_fd);
  f.peer_fd = -1;
  tap_ok(wait_ctr(&f, OVL_TC_TUN_READ_STOPPED, -1, 1), "EOF: the thread stops reading the fd");
  uint32_t seq;
  tap_ok(ovl_tunport_recv(f.p, buf, 1500, lens, 4) == 1 && pcheck4(buf, lens[0], 1500, &seq) && seq == 7,
         "the packet before EOF is delivered");
  sleep_ms(50);
  uint64_t p0 = ctr(&f, OVL_TC_POLLS);
  sleep_ms(200);
  tap_ok(ctr(&f, OVL_TC_POLLS) == p0, "after EOF: no spinning on the hung-up fd");
  struct iovec iov = {.iov_base = buf, .iov_len = 100};
  tap_ok(ovl_tunport_send(f.p, &iov, 1) == 1, "send after EOF is queued");
  tap_ok(wait_ctr(&f, OVL_TC_TUN_WRITE_ERRORS, -1, 1), "and its write failure is counted (EPIPE, no SIGPIPE death)");
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stop joins promptly (%.3f ms)", dt * 1e3);
}

int main(void) {
  alarm(300); /* hard bound for the whole test */
  test_config();
  test_idle();
  test_rx_paced();
  test_rx_flood();
  test_notify_race();
  test_ring_full_and_notify();
  test_tx();
  test_eof();
  return tap_done();
}
