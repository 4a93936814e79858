/*
 * The native engine's forwarding threads. One thread per queue q owns tun_fds[q] and
 * udp_fds[q], its buffers, its route cache and its counter block; threads share only the
 * route domain (read side, lock-free: route.c), the stop flag + eventfd and the ICMP id
 * counter. Per packet they do exactly what src/dataplane/js-engine.ts does — the same
 * checks in the same order, the same counters, the same ICMP errors — with packet.c's
 * rules (validation, TTL, ICMP builder) and route.c's lookup.
 *
 * One turn of a thread's loop:
 *   enter the route section (one acquire of the table for the whole turn)
 *   TUN side: nonblocking reads until EAGAIN or OVL_ENGINE_BATCH packets; each packet is
 *     validated, looked up and TTL-decremented in its read buffer and queued as one
 *     message (with its own destination address) of ONE sendmmsg for the burst; drops
 *     answer ICMP straight into the TUN.
 *   UDP side: ONE recvmmsg of up to OVL_ENGINE_BATCH datagrams (MSG_TRUNC: the real
 *     length of an oversize datagram is seen and it is dropped at the same check as in
 *     the js engine); each is checked and written into the TUN (one write per packet).
 *   leave the route section, publish the turn's counters (relaxed stores)
 *   poll(TUN POLLIN, UDP POLLIN, stop eventfd): timeout 0 when a burst hit its batch
 *     limit (more is waiting; the other side and the stop flag get their turn), else
 *     infinite — the only place a thread sleeps, so an idle engine costs nothing.
 * A full UDP send buffer (EAGAIN) is waited out with poll(POLLOUT, stop) for at most
 * SEND_WAITS x SEND_WAIT_MS per burst; what is still unsent then counts as tx_error.
 * The stop eventfd is written once by ovl_engine_stop and never read, so it wakes every
 * thread (level-triggered) however many there are.
 */
#include "overlayd.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(struct ovl_engine_counters) % 64 == 0, "counter block is whole cache lines");
_Static_assert(OVL_EC_COMMON == 16, "the common counters are ENGINE_COUNTERS of engine.ts");

const char *const ovl_engine_counter_names[OVL_EC_COUNT] = {
    [OVL_EC_TUN_RX] = "tun_rx",
    [OVL_EC_TX] = "tx",
    [OVL_EC_TX_BYTES] = "tx_bytes",
    [OVL_EC_RX] = "rx",
    [OVL_EC_RX_BYTES] = "rx_bytes",
    [OVL_EC_TUN_TX] = "tun_tx",
    [OVL_EC_ICMP_SENT] = "icmp_sent",
    [OVL_EC_DROP_NO_ROUTE] = "drop_no_route",
    [OVL_EC_DROP_TTL] = "drop_ttl",
    [OVL_EC_DROP_MALFORMED] = "drop_malformed",
    [OVL_EC_DROP_UNKNOWN_PEER] = "drop_unknown_peer",
    [OVL_EC_DROP_SPOOFED] = "drop_spoofed",
    [OVL_EC_DROP_WRONG_DST] = "drop_wrong_dst",
    [OVL_EC_DROP_TOO_BIG] = "drop_too_big",
    [OVL_EC_DROP_RING_FULL] = "drop_ring_full",
    [OVL_EC_TX_ERROR] = "tx_error",
    [OVL_EC_DROP_TUN_OVERSIZE] = "drop_tun_oversize",
    [OVL_EC_TUN_READ_ERRORS] = "tun_read_errors",
    [OVL_EC_TUN_WRITE_ERRORS] = "tun_write_errors",
    [OVL_EC_UDP_RECV_ERRORS] = "udp_recv_errors",
    [OVL_EC_POLLS] = "polls",
    [OVL_EC_TUN_BURSTS] = "tun_bursts",
    [OVL_EC_UDP_BURSTS] = "udp_bursts",
    [OVL_EC_SENDMMSG_CALLS] = "sendmmsg_calls",
};

#define BATCH OVL_ENGINE_BATCH
/* Smallest buffer per packet, bytes (as the js engine's ring slots): >= 576 and >= 60. */
#define SLOT_MIN 576u
/* Consecutive failed reads (TUN) or receives (UDP), of errors not known to be fatal, after
 * which the thread gives up (reported as fatal) instead of spinning on a broken fd. */
#define ERRORS_IN_ROW_MAX 256u
/* A full UDP send buffer is waited out this long per wait, this many waits per burst. */
#define SEND_WAIT_MS 5
#define SEND_WAITS 10u
/* Bytes read past a TUN buffer, to tell an oversize packet (a socket read stops at the
 * buffer; a TUN read returns the full length either way). */
#define SCRATCH_BYTES 64u
/* Pause after an unexpected poll() failure (ENOMEM), in nanoseconds. */
#define POLL_RETRY_NS 1000000L

struct worker {
  struct ovl_engine *e;
  uint32_t q;
  int tun_fd, udp_fd; /* borrowed */
  pthread_t thread;
  struct ovl_engine_counters *ctr; /* shared; this thread is the only writer */
  uint64_t acc[OVL_EC_COUNT];      /* this turn's increments, published once per turn */
  uint32_t tun_errors_in_row, udp_errors_in_row;
  int fatal_err; /* positive errno once the thread must stop */
  const char *fatal_syscall;
  struct ovl_rcache cache;
  uint8_t *tun_buf; /* BATCH * slot: packets read from the TUN, sent from in place */
  uint8_t *udp_buf; /* BATCH * slot: datagrams received, written to the TUN from in place */
  uint32_t ntx;     /* messages queued in tx_msgs this burst */
  struct mmsghdr tx_msgs[BATCH];
  struct iovec tx_iov[BATCH];
  struct sockaddr_in tx_to[BATCH];
  struct mmsghdr rx_msgs[BATCH];
  struct iovec rx_iov[BATCH];
  struct sockaddr_in rx_from[BATCH];
  uint8_t scratch[SCRATCH_BYTES];
  uint8_t icmp[OVL_ICMP_ERROR_MAX];
};

struct ovl_engine {
  uint32_t queues;
  uint32_t slot; /* bytes per packet buffer */
  uint16_t port;
  uint32_t tun_address, tun_mtu, subnet, subnet_mask;
  struct ovl_routes *routes;
  void (*on_fatal)(void *opaque, uint32_t queue, int err, const char *syscall);
  void *opaque;
  int stop_efd;
  alignas(64) atomic_bool stop;
  alignas(64) _Atomic uint32_t icmp_id; /* IP id of the ICMP errors, shared by the queues */
  struct worker **w; /* [queues] */
};

/* ---------------------------------------------------------------- into the TUN --------- */

static void tun_write(struct worker *w, const uint8_t *pkt, size_t len) {
  for (int attempt = 0; attempt < 3; attempt++) { /* retried only after EINTR */
    ssize_t r = write(w->tun_fd, pkt, len);
    if (r == (ssize_t)len) {
      w->acc[OVL_EC_TUN_TX]++;
      return;
    }
    if (r >= 0) break; /* a packet fd writes all or nothing: a short write is a broken packet */
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      w->acc[OVL_EC_DROP_RING_FULL]++;
      return;
    }
    break;
  }
  w->acc[OVL_EC_TUN_WRITE_ERRORS]++;
}

/* The js engine's icmpError(): only where RFC 1812 allows, counted, written into the TUN. */
static void icmp_error(struct worker *w, const uint8_t *pkt, size_t len, uint8_t type, uint8_t code) {
  if (!ovl_icmp_may_respond(pkt, len)) return;
  w->acc[OVL_EC_ICMP_SENT]++;
  uint16_t id = (uint16_t)atomic_fetch_add_explicit(&w->e->icmp_id, 1, memory_order_relaxed);
  size_t n = ovl_icmp_error_build(w->icmp, type, code, w->e->tun_address, pkt, len, 0, id);
  tun_write(w, w->icmp, n);
}

/* The TTL step of both directions: decrements the TTL (packet.c's rule), or counts the
 * drop and answers time exceeded. Returns false when the packet is dropped. */
static bool ttl_step(struct worker *w, uint8_t *pkt, size_t len) {
  if (ovl_ipv4_decrement_ttl(pkt)) return true;
  w->acc[OVL_EC_DROP_TTL]++;
  icmp_error(w, pkt, len, OVL_ICMP_TIME_EXCEEDED, OVL_ICMP_TTL_EXCEEDED);
  return false;
}

/* ---------------------------------------------------------------- outbound ------------- */

/* js-engine.ts outbound(): one packet read from the TUN, in its read buffer. */
static void outbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len) {
  w->acc[OVL_EC_TUN_RX]++;
  if (ovl_ipv4_validate(pkt, len) != OVL_IPV4_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return;
  }
  uint32_t peer;
  if (!ovl_rcache_lookup(&w->cache, t, ovl_ipv4_dst(pkt), &peer)) {
    w->acc[OVL_EC_DROP_NO_ROUTE]++;
    icmp_error(w, pkt, len, OVL_ICMP_DEST_UNREACH, OVL_ICMP_NET_UNREACH);
    return;
  }
  if (!ttl_step(w, pkt, len)) return;
  uint32_t i = w->ntx++;
  w->tx_to[i].sin_addr.s_addr = htonl(peer);
  w->tx_iov[i] = (struct iovec){.iov_base = pkt, .iov_len = len};
}

/* Sends the queued messages with as few sendmmsg calls as the socket allows. */
static void flush_tx(struct worker *w) {
  uint32_t i = 0, n = w->ntx, waits = 0;
  /* Each iteration sends >= 1 message, skips a failed one, or waits (at most SEND_WAITS
   * times); EINTR cannot happen with every signal blocked, and is bounded anyway. */
  for (uint32_t iter = 0; i < n && iter < 2 * BATCH + SEND_WAITS; iter++) {
    int r = sendmmsg(w->udp_fd, &w->tx_msgs[i], n - i, 0);
    w->acc[OVL_EC_SENDMMSG_CALLS]++;
    if (r > 0) {
      for (uint32_t j = i; j < i + (uint32_t)r; j++) w->acc[OVL_EC_TX_BYTES] += w->tx_iov[j].iov_len;
      w->acc[OVL_EC_TX] += (uint32_t)r;
      i += (uint32_t)r;
      continue;
    }
    int err = r == 0 ? EAGAIN : errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      if (waits++ == SEND_WAITS || atomic_load_explicit(&w->e->stop, memory_order_relaxed)) break;
      struct pollfd pfd[2] = {{.fd = w->udp_fd, .events = POLLOUT}, {.fd = w->e->stop_efd, .events = POLLIN}};
      (void)poll(pfd, 2, SEND_WAIT_MS); /* any outcome: the next sendmmsg tells */
      w->acc[OVL_EC_POLLS]++;
      continue;
    }
    w->acc[OVL_EC_TX_ERROR]++; /* the message at i failed (unreachable, EPERM, ...): skip it */
    i++;
  }
  w->acc[OVL_EC_TX_ERROR] += n - i;
  w->ntx = 0;
}

static void set_fatal(struct worker *w, int err, const char *syscall) {
  if (w->fatal_err == 0) {
    w->fatal_err = err;
    w->fatal_syscall = syscall;
  }
}

/* TUN -> peers. Returns true when the burst hit its limit (more may be waiting). */
static bool tun_burst(struct worker *w, const struct ovl_rtable *t) {
  const uint32_t slot = w->e->slot;
  uint32_t n = 0, reads = 0;
  uint32_t lens[BATCH];
  while (reads < BATCH) {
    uint8_t *buf = w->tun_buf + (size_t)n * slot;
    struct iovec iov[2] = {{.iov_base = buf, .iov_len = slot}, {.iov_base = w->scratch, .iov_len = SCRATCH_BYTES}};
    ssize_t r = readv(w->tun_fd, iov, 2);
    reads++;
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      w->acc[OVL_EC_TUN_READ_ERRORS]++;
      if (ovl_io_error_is_fatal(err) || ++w->tun_errors_in_row >= ERRORS_IN_ROW_MAX) {
        set_fatal(w, err, "read(tun)");
        break;
      }
      continue;
    }
    if (r == 0) { /* EOF: a TUN never delivers an empty packet; a test's socketpair closed */
      set_fatal(w, ENOTCONN, "read(tun)");
      break;
    }
    w->tun_errors_in_row = 0;
    if ((size_t)r > slot) {
      w->acc[OVL_EC_DROP_TUN_OVERSIZE]++;
      continue;
    }
    lens[n++] = (uint32_t)r;
  }
  if (n) w->acc[OVL_EC_TUN_BURSTS]++;
  for (uint32_t i = 0; i < n; i++) outbound(w, t, w->tun_buf + (size_t)i * slot, lens[i]);
  if (w->ntx) flush_tx(w);
  return reads == BATCH && w->fatal_err == 0;
}

/* ---------------------------------------------------------------- inbound -------------- */

/* js-engine.ts inbound(): one datagram of `len` bytes (its real length; the buffer holds
 * min(len, slot) of them) from `from`. */
static void inbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len,
                    const struct sockaddr_in *from, socklen_t fromlen) {
  const struct ovl_engine *e = w->e;
  w->acc[OVL_EC_RX]++;
  w->acc[OVL_EC_RX_BYTES] += len;
  uint32_t sender = ntohl(from->sin_addr.s_addr);
  if (fromlen < (socklen_t)sizeof(*from) || from->sin_family != AF_INET || ntohs(from->sin_port) != e->port ||
      !ovl_rtable_is_peer(t, sender)) {
    w->acc[OVL_EC_DROP_UNKNOWN_PEER]++;
    return;
  }
  /* Reads at most 60 header bytes, all present: the buffer holds min(len, slot >= 576). */
  if (ovl_ipv4_validate(pkt, len) != OVL_IPV4_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return;
  }
  uint32_t owner;
  if (!ovl_rcache_lookup(&w->cache, t, ovl_ipv4_src(pkt), &owner) || owner != sender) {
    w->acc[OVL_EC_DROP_SPOOFED]++;
    return;
  }
  if ((ovl_ipv4_dst(pkt) & e->subnet_mask) != e->subnet) {
    w->acc[OVL_EC_DROP_WRONG_DST]++;
    return;
  }
  if (len > e->tun_mtu) { /* from here on the whole packet is in the buffer: tun_mtu <= slot */
    w->acc[OVL_EC_DROP_TOO_BIG]++;
    return;
  }
  if (!ttl_step(w, pkt, len)) return;
  tun_write(w, pkt, len);
}

/* Peers -> TUN. Returns true when the burst hit its limit (more may be waiting). */
static bool udp_burst(struct worker *w, const struct ovl_rtable *t) {
  for (uint32_t i = 0; i < BATCH; i++) w->rx_msgs[i].msg_hdr.msg_namelen = sizeof(w->rx_from[i]);
  int r = recvmmsg(w->udp_fd, w->rx_msgs, BATCH, MSG_DONTWAIT | MSG_TRUNC, NULL);
  if (r < 0) {
    int err = errno;
    if (err == EINTR) return true;
    if (err == EAGAIN || err == EWOULDBLOCK) return false;
    w->acc[OVL_EC_UDP_RECV_ERRORS]++;
    /* Other errors are pending socket errors, reported once each (and cleared). */
    if (ovl_io_error_is_fatal(err) || ++w->udp_errors_in_row >= ERRORS_IN_ROW_MAX) set_fatal(w, err, "recvmmsg");
    return false;
  }
  w->udp_errors_in_row = 0;
  if (r > 0) w->acc[OVL_EC_UDP_BURSTS]++;
  for (int i = 0; i < r; i++)
    inbound(w, t, w->udp_buf + (size_t)i * w->e->slot, w->rx_msgs[i].msg_len, &w->rx_from[i],
            w->rx_msgs[i].msg_hdr.msg_namelen);
  return r == (int)BATCH;
}

/* ---------------------------------------------------------------- the thread ----------- */

/* This thread is the only writer: a relaxed load + store, no locked instruction. */
static void publish_counters(struct worker *w) {
  for (uint32_t i = 0; i < OVL_EC_COUNT; i++) {
    if (w->acc[i] == 0) continue;
    _Atomic uint64_t *c = &w->ctr->v[i];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + w->acc[i], memory_order_relaxed);
    w->acc[i] = 0;
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct ovl_engine *e = w->e;
  bool tun_ready = true, udp_ready = true;

  while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
    const struct ovl_rtable *t = ovl_routes_enter(e->routes, w->q);
    bool more = false;
    if (tun_ready) more |= tun_burst(w, t);
    if (udp_ready && w->fatal_err == 0) more |= udp_burst(w, t);
    ovl_routes_leave(e->routes, w->q);
    if (w->fatal_err) break;

    struct pollfd pfd[3] = {
        {.fd = w->tun_fd, .events = POLLIN},
        {.fd = w->udp_fd, .events = POLLIN},
        {.fd = e->stop_efd, .events = POLLIN},
    };
    w->acc[OVL_EC_POLLS]++;
    publish_counters(w);
    int rc = poll(pfd, 3, more ? 0 : -1);
    if (rc < 0) {
      if (errno != EINTR) { /* ENOMEM: back off instead of spinning */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = POLL_RETRY_NS};
        (void)nanosleep(&ts, NULL); /* an early return only shortens the pause */
      }
      continue;
    }
    if ((pfd[0].revents | pfd[1].revents) & POLLNVAL) {
      set_fatal(w, EBADF, "poll");
      break;
    }
    tun_ready = (pfd[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
    udp_ready = (pfd[1].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
  }
  publish_counters(w);
  if (w->fatal_err && e->on_fatal) e->on_fatal(e->opaque, w->q, w->fatal_err, w->fatal_syscall);
  return NULL;
}

static int worker_init(struct worker **out, struct ovl_engine *e, uint32_t q, const struct ovl_engine_config *cfg) {
  struct worker *w = aligned_alloc(alignof(struct worker), sizeof(struct worker));
  if (w == NULL) return -ENOMEM;
  memset(w, 0, sizeof(*w));
  w->e = e;
  w->q = q;
  w->tun_fd = cfg->tun_fds[q];
  w->udp_fd = cfg->udp_fds[q];
  w->ctr = &cfg->counters[q];
  ovl_rcache_init(&w->cache);
  w->tun_buf = malloc((size_t)BATCH * e->slot);
  w->udp_buf = malloc((size_t)BATCH * e->slot);
  if (w->tun_buf == NULL || w->udp_buf == NULL) {
    free(w->tun_buf);
    free(w->udp_buf);
    free(w);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < BATCH; i++) {
    w->tx_to[i] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(e->port)};
    w->tx_msgs[i].msg_hdr = (struct msghdr){
        .msg_name = &w->tx_to[i], .msg_namelen = sizeof(w->tx_to[i]), .msg_iov = &w->tx_iov[i], .msg_iovlen = 1};
    w->rx_iov[i] = (struct iovec){.iov_base = w->udp_buf + (size_t)i * e->slot, .iov_len = e->slot};
    w->rx_msgs[i].msg_hdr = (struct msghdr){
        .msg_name = &w->rx_from[i], .msg_namelen = sizeof(w->rx_from[i]), .msg_iov = &w->rx_iov[i], .msg_iovlen = 1};
  }
  *out = w;
  return 0;
}

static void worker_free(struct worker *w) {
  if (w == NULL) return;
  free(w->tun_buf);
  free(w->udp_buf);
  free(w);
}

/* Stops and joins the first `started` threads, frees everything. */
static void engine_teardown(struct ovl_engine *e, uint32_t started) {
  atomic_store_explicit(&e->stop, true, memory_order_release);
  if (e->stop_efd >= 0) {
    uint64_t one = 1;
    /* EAGAIN: the counter is already non-zero, which is all that is needed. */
    while (write(e->stop_efd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }
  /* pthread_join fails only for an invalid or already-joined thread: not reachable here. */
  for (uint32_t q = 0; q < started; q++) (void)pthread_join(e->w[q]->thread, NULL);
  if (e->stop_efd >= 0) (void)close(e->stop_efd); /* eventfd: close cannot lose data */
  for (uint32_t q = 0; q < e->queues; q++) worker_free(e->w[q]);
  free(e->w);
  free(e);
}

int ovl_engine_start(struct ovl_engine **out, const struct ovl_engine_config *cfg, const char **syscall) {
  *syscall = "config";
  if (cfg->queues == 0 || cfg->queues > OVL_ENGINE_QUEUES_MAX || cfg->tun_fds == NULL || cfg->udp_fds == NULL ||
      cfg->routes == NULL || cfg->counters == NULL || cfg->tun_mtu < 68 || cfg->tun_mtu > 65535 ||
      cfg->subnet_len > 32)
    return -EINVAL;
  uint32_t mask = cfg->subnet_len == 0 ? 0 : ~(uint32_t)0 << (32 - cfg->subnet_len);
  if ((cfg->subnet & ~mask) != 0) return -EINVAL;
  for (uint32_t q = 0; q < cfg->queues; q++)
    if (cfg->tun_fds[q] < 0 || cfg->udp_fds[q] < 0) return -EINVAL;

  *syscall = "malloc";
  struct ovl_engine *e = aligned_alloc(alignof(struct ovl_engine), sizeof(struct ovl_engine));
  if (e == NULL) return -ENOMEM;
  memset(e, 0, sizeof(*e));
  e->queues = cfg->queues;
  e->slot = (cfg->tun_mtu + 63u) & ~63u;
  if (e->slot < SLOT_MIN) e->slot = SLOT_MIN;
  e->port = cfg->port;
  e->tun_address = cfg->tun_address;
  e->tun_mtu = cfg->tun_mtu;
  e->subnet = cfg->subnet;
  e->subnet_mask = mask;
  e->routes = cfg->routes;
  e->on_fatal = cfg->on_fatal;
  e->opaque = cfg->opaque;
  e->stop_efd = -1;
  atomic_init(&e->stop, false);
  struct timespec now;
  (void)clock_gettime(CLOCK_REALTIME, &now); /* cannot fail for CLOCK_REALTIME */
  atomic_init(&e->icmp_id, (uint32_t)now.tv_nsec ^ (uint32_t)getpid()); /* any start value */

  e->w = calloc(cfg->queues, sizeof(*e->w));
  if (e->w == NULL) {
    free(e);
    return -ENOMEM;
  }
  int err = 0;
  for (uint32_t q = 0; q < cfg->queues && err == 0; q++) err = worker_init(&e->w[q], e, q, cfg);
  if (err == 0) {
    *syscall = "eventfd";
    e->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->stop_efd < 0) err = -errno;
  }
  if (err) {
    engine_teardown(e, 0);
    return err;
  }

  /* The threads run with every signal blocked (a broken socket cannot kill with SIGPIPE). */
  uint32_t started = 0;
  for (; started < cfg->queues; started++) {
    err = ovl_thread_spawn(&e->w[started]->thread, worker_main, e->w[started], syscall);
    if (err != 0) {
      engine_teardown(e, started);
      return err;
    }
  }
  *syscall = NULL;
  *out = e;
  return 0;
}

void ovl_engine_stop(struct ovl_engine *e) {
  if (e == NULL) return;
  engine_teardown(e, e->queues);
}
