/*
 * The TUN port: one I/O thread between a nonblocking packet fd and two SPSC rings.
 *
 *   fd --read--> rx ring --ovl_tunport_recv--> owner thread (JS main thread in the addon)
 *   owner thread --ovl_tunport_send--> tx ring --write--> fd
 *
 * Roles: the I/O thread is the producer of rx and the consumer of tx; the owner thread is
 * the consumer of rx and the producer of tx. The I/O thread only ever blocks in poll(), on
 * the fd (POLLIN while reading; POLLOUT only while a tx write got EAGAIN) and the wake
 * eventfd. When a burst hit its batch limit it polls with timeout 0 instead, so the other
 * direction and the stop flag get their turn; otherwise it sleeps (no busy spinning).
 *
 * Two "pending" flags, each an atomic exchange on both sides (so the side that clears the
 * flag synchronizes with the side that set it, and no wakeup can fall between them):
 *  - rx_notified: set by the I/O thread when it calls notify(); cleared by the consumer
 *    when it finds rx empty, after which the consumer looks at the ring once more. Any
 *    commit after the clear sees 0 and notifies; any commit before it is seen by that look.
 *  - tx_wake: set by the owner after committing to tx (it writes the eventfd only when the
 *    flag was 0); cleared by the I/O thread right before it looks at the tx ring.
 */
#include "overlayd.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(_Atomic uint64_t) == sizeof(uint64_t), "counters must be plain 64-bit words");
_Static_assert(alignof(_Atomic uint64_t) == alignof(uint64_t), "counters must be plain 64-bit words");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(sizeof(struct ovl_tun_counters) % 64 == 0, "counter block is whole cache lines");

const char *const ovl_tun_counter_names[OVL_TC_COUNT] = {
    [OVL_TC_TUN_RX_PACKETS] = "tun_rx_packets",
    [OVL_TC_TUN_RX_BYTES] = "tun_rx_bytes",
    [OVL_TC_TUN_TX_PACKETS] = "tun_tx_packets",
    [OVL_TC_TUN_TX_BYTES] = "tun_tx_bytes",
    [OVL_TC_RX_RING_FULL_DROPS] = "rx_ring_full_drops",
    [OVL_TC_RX_OVERSIZE_DROPS] = "rx_oversize_drops",
    [OVL_TC_TUN_READ_ERRORS] = "tun_read_errors",
    [OVL_TC_TUN_WRITE_ERRORS] = "tun_write_errors",
    [OVL_TC_TUN_READ_STOPPED] = "tun_read_stopped",
    [OVL_TC_WAKEUPS] = "wakeups",
    [OVL_TC_RX_NOTIFIES] = "rx_notifies",
    [OVL_TC_POLLS] = "polls",
};

/* Consecutive failed reads (errors that are not known to be fatal) after which the thread
 * stops reading the fd, so that an fd stuck in an error state cannot make poll() spin. */
#define RX_ERROR_LIMIT 256u
/* Bytes read into when a packet is to be dropped (ring full), and the spill-over behind a
 * slot that makes an oversize packet visible: a TUN read returns the full packet length
 * even when the buffer is shorter, a socket read returns at most the buffer size. */
#define SCRATCH_BYTES 64u
/* Pause after an unexpected poll() failure (ENOMEM), in nanoseconds. */
#define POLL_RETRY_NS 1000000L

struct ovl_tunport {
  int fd;  /* borrowed */
  int efd; /* owned: wake eventfd */
  uint32_t slot_size;
  struct ovl_ring *rx; /* I/O thread produces, owner consumes */
  struct ovl_ring *tx; /* owner produces, I/O thread consumes */
  void (*notify)(void *opaque);
  void *opaque;
  struct ovl_tun_counters *ctr; /* borrowed; written by the I/O thread only */
  pthread_t thread;
  uint32_t rx_errors_in_row; /* I/O thread only */
  unsigned char scratch[SCRATCH_BYTES]; /* I/O thread only */
  alignas(64) atomic_bool stop;
  alignas(64) atomic_uint rx_notified;
  alignas(64) atomic_uint tx_wake;
};

/* I/O thread only (single writer): a relaxed load + store, no locked instruction. */
static void ctr_add(struct ovl_tunport *p, enum ovl_tun_counter i, uint64_t n) {
  if (n == 0) return;
  _Atomic uint64_t *c = &p->ctr->v[i];
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

/* Reads up to OVL_TUNPORT_RX_BATCH packets into rx. Returns false when the fd must not be
 * read any more (EOF, fatal error). *more is set when the burst hit its limit. */
static bool rx_burst(struct ovl_tunport *p, bool *more) {
  uint32_t pos;
  uint32_t room = ovl_ring_reserve(p->rx, OVL_TUNPORT_RX_BATCH, &pos);
  uint32_t got = 0, reads = 0;
  uint64_t bytes = 0, full = 0, oversize = 0, errors = 0;
  bool open = true;
  *more = false;

  while (reads < OVL_TUNPORT_RX_BATCH) {
    struct iovec iov[2];
    struct ovl_slot *s = NULL;
    int cnt;
    if (got < room) {
      s = ovl_ring_slot(p->rx, pos + got);
      iov[0] = (struct iovec){.iov_base = s->data, .iov_len = p->slot_size};
      iov[1] = (struct iovec){.iov_base = p->scratch, .iov_len = sizeof(p->scratch)};
      cnt = 2;
    } else {
      iov[0] = (struct iovec){.iov_base = p->scratch, .iov_len = sizeof(p->scratch)};
      cnt = 1;
    }
    ssize_t r = readv(p->fd, iov, cnt);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      errors++;
      reads++;
      if (ovl_io_error_is_fatal(err) || ++p->rx_errors_in_row >= RX_ERROR_LIMIT) {
        open = false;
        break;
      }
      continue;
    }
    reads++;
    if (r == 0) { /* EOF; a TUN never delivers an empty packet */
      open = false;
      break;
    }
    p->rx_errors_in_row = 0;
    if (s == NULL) {
      full++;
    } else if ((size_t)r > p->slot_size) {
      oversize++;
    } else {
      s->len = (uint32_t)r;
      bytes += (uint64_t)r;
      got++;
    }
  }
  if (open && reads == OVL_TUNPORT_RX_BATCH) *more = true;

  if (got) {
    ovl_ring_commit(p->rx, got);
    ctr_add(p, OVL_TC_TUN_RX_PACKETS, got);
    ctr_add(p, OVL_TC_TUN_RX_BYTES, bytes);
    if (atomic_exchange_explicit(&p->rx_notified, 1u, memory_order_acq_rel) == 0u) {
      ctr_add(p, OVL_TC_RX_NOTIFIES, 1);
      if (p->notify) p->notify(p->opaque);
    }
  }
  ctr_add(p, OVL_TC_RX_RING_FULL_DROPS, full);
  ctr_add(p, OVL_TC_RX_OVERSIZE_DROPS, oversize);
  ctr_add(p, OVL_TC_TUN_READ_ERRORS, errors);
  if (!open) ctr_add(p, OVL_TC_TUN_READ_STOPPED, 1);
  return open;
}

/* Writes up to OVL_TUNPORT_TX_BATCH packets from tx to the fd. Returns true when a write
 * got EAGAIN (the packet stays queued; wait for POLLOUT). *more is set when the burst hit
 * its limit with packets possibly left. A failed write drops its packet (counted). */
static bool tx_burst(struct ovl_tunport *p, bool *more) {
  uint32_t pos;
  uint32_t n = ovl_ring_peek(p->tx, OVL_TUNPORT_TX_BATCH, &pos);
  uint32_t done = 0;
  uint64_t pkts = 0, bytes = 0, errors = 0;
  bool blocked = false;
  *more = false;

  while (done < n) {
    const struct ovl_slot *s = ovl_ring_slot(p->tx, pos + done);
    ssize_t w = write(p->fd, s->data, s->len);
    if (w < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        blocked = true;
        break;
      }
      errors++;
    } else if ((size_t)w != s->len) {
      errors++; /* a packet fd writes all or nothing; a short write is a broken packet */
    } else {
      pkts++;
      bytes += s->len;
    }
    done++;
  }
  if (done) ovl_ring_release(p->tx, done);
  if (!blocked && n == OVL_TUNPORT_TX_BATCH) *more = true;
  ctr_add(p, OVL_TC_TUN_TX_PACKETS, pkts);
  ctr_add(p, OVL_TC_TUN_TX_BYTES, bytes);
  ctr_add(p, OVL_TC_TUN_WRITE_ERRORS, errors);
  return blocked;
}

static void *io_main(void *arg) {
  struct ovl_tunport *p = arg;
  bool rx_open = true, rx_ready = true, tx_blocked = false;

  while (!atomic_load_explicit(&p->stop, memory_order_acquire)) {
    bool rx_more = false, tx_more = false;
    if (rx_open && rx_ready) {
      rx_open = rx_burst(p, &rx_more);
      rx_ready = rx_more;
    }
    atomic_exchange_explicit(&p->tx_wake, 0u, memory_order_acq_rel);
    if (!tx_blocked) tx_blocked = tx_burst(p, &tx_more);

    struct pollfd pfd[2] = {
        {.fd = (rx_open || tx_blocked) ? p->fd : -1,
         .events = (short)((rx_open ? POLLIN : 0) | (tx_blocked ? POLLOUT : 0))},
        {.fd = p->efd, .events = POLLIN},
    };
    int rc = poll(pfd, 2, (rx_more || tx_more) ? 0 : -1);
    ctr_add(p, OVL_TC_POLLS, 1);
    if (rc < 0) {
      if (errno != EINTR) { /* ENOMEM: back off instead of spinning */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = POLL_RETRY_NS};
        (void)nanosleep(&ts, NULL); /* an early return (EINTR) only shortens the pause */
      }
      continue;
    }
    if (pfd[1].revents & POLLIN) {
      uint64_t v;
      /* EAGAIN: another read already reset it; the wakeup is still accounted by tx_wake. */
      if (read(p->efd, &v, sizeof(v)) == (ssize_t)sizeof(v)) ctr_add(p, OVL_TC_WAKEUPS, 1);
    }
    short re = pfd[0].revents;
    if (re & POLLNVAL) {
      if (rx_open) ctr_add(p, OVL_TC_TUN_READ_STOPPED, 1);
      rx_open = false;
      tx_blocked = false; /* writes will fail and drop: bounded by what JS queues */
      continue;
    }
    if (re & (POLLIN | POLLERR | POLLHUP)) rx_ready = true;
    if (re & (POLLOUT | POLLERR | POLLHUP)) tx_blocked = false;
  }
  return NULL;
}

/* Owner thread: wakes the I/O thread. An eventfd write fails only with EAGAIN (counter at
 * its maximum: a wakeup is pending anyway) or EINTR (retried). */
static void wake(struct ovl_tunport *p) {
  uint64_t one = 1;
  while (write(p->efd, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

int ovl_tunport_start(struct ovl_tunport **out, const struct ovl_tunport_config *cfg,
                      const char **syscall) {
  *syscall = "config";
  if (cfg->fd < 0 || cfg->counters == NULL) return -EINVAL;
  if (ovl_ring_memory_size(cfg->slot_size, cfg->ring_slots) == 0) return -EINVAL;

  *syscall = "malloc";
  struct ovl_tunport *p = aligned_alloc(alignof(struct ovl_tunport), sizeof(struct ovl_tunport));
  if (p == NULL) return -ENOMEM;
  memset(p, 0, sizeof(*p));
  p->fd = cfg->fd;
  p->efd = -1;
  p->slot_size = cfg->slot_size;
  p->notify = cfg->notify;
  p->opaque = cfg->opaque;
  p->ctr = cfg->counters;
  atomic_init(&p->stop, false);
  atomic_init(&p->rx_notified, 0u);
  atomic_init(&p->tx_wake, 0u);

  int err = ovl_ring_create(&p->rx, cfg->slot_size, cfg->ring_slots);
  if (err == 0) err = ovl_ring_create(&p->tx, cfg->slot_size, cfg->ring_slots);
  if (err != 0) goto fail;

  *syscall = "eventfd";
  p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (p->efd < 0) {
    err = -errno;
    goto fail;
  }

  /* The I/O thread runs with every signal blocked (EPIPE on a socket fd cannot kill). */
  err = ovl_thread_spawn(&p->thread, io_main, p, syscall);
  if (err != 0) goto fail;
  *syscall = NULL;
  *out = p;
  return 0;

fail:
  if (p->efd >= 0) (void)close(p->efd); /* never shared: no pending data to lose */
  ovl_ring_destroy(p->rx);
  ovl_ring_destroy(p->tx);
  free(p);
  return err;
}

void ovl_tunport_stop(struct ovl_tunport *p) {
  if (p == NULL) return;
  atomic_store_explicit(&p->stop, true, memory_order_release);
  wake(p);
  /* pthread_join fails only for an invalid or already-joined thread: not reachable here. */
  (void)pthread_join(p->thread, NULL);
  (void)close(p->efd); /* eventfd: close cannot lose data */
  ovl_ring_destroy(p->rx);
  ovl_ring_destroy(p->tx);
  free(p);
}

uint32_t ovl_tunport_slot_size(const struct ovl_tunport *p) { return p->slot_size; }

uint32_t ovl_tunport_recv(struct ovl_tunport *p, uint8_t *buf, size_t stride, uint32_t *lens,
                          uint32_t max) {
  uint32_t total = 0;
  bool rearmed = false;
  while (total < max) {
    uint32_t pos;
    uint32_t n = ovl_ring_peek(p->rx, max - total, &pos);
    for (uint32_t i = 0; i < n; i++) {
      const struct ovl_slot *s = ovl_ring_slot(p->rx, pos + i);
      uint32_t len = s->len; /* <= slot_size <= stride: written by rx_burst */
      memcpy(buf + (size_t)(total + i) * stride, s->data, len);
      lens[total + i] = len;
    }
    if (n) ovl_ring_release(p->rx, n);
    total += n;
    if (total == max) break;
    if (rearmed) break; /* empty after the re-arm: done */
    atomic_exchange_explicit(&p->rx_notified, 0u, memory_order_acq_rel);
    rearmed = true; /* look once more: packets committed before the clear are not notified */
  }
  return total;
}

int ovl_tunport_send(struct ovl_tunport *p, const struct iovec *pkts, uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    if (pkts[i].iov_len > p->slot_size) return -EMSGSIZE;
  uint32_t sent = 0;
  while (sent < n) {
    uint32_t pos;
    uint32_t k = ovl_ring_reserve(p->tx, n - sent, &pos);
    if (k == 0) break;
    for (uint32_t i = 0; i < k; i++) {
      struct ovl_slot *s = ovl_ring_slot(p->tx, pos + i);
      const struct iovec *v = &pkts[sent + i];
      if (v->iov_len) memcpy(s->data, v->iov_base, v->iov_len);
      s->len = (uint32_t)v->iov_len;
    }
    ovl_ring_commit(p->tx, k);
    sent += k;
  }
  if (sent && atomic_exchange_explicit(&p->tx_wake, 1u, memory_order_acq_rel) == 0u) wake(p);
  return (int)sent;
}
