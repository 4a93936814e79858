/*
 * The native engine's forwarding threads: the worker loop and the lifecycle (the parts it
 * drives: tunside.c, udpside.c, policy.c; their interfaces: engine_int.h). One thread per
 * queue q owns tun_fds[q] and udp_fds[q], its buffers, its route cache and its counter
 * block; threads share only the route domain (read side, lock-free: route.c), the stop
 * flag + eventfd, the ICMP id counter and the ICMP rate limit.
 *
 * One turn of a thread's loop:
 *   enter the route section (one acquire of the table for the whole turn)
 *   tun_burst: nonblocking TUN reads until EAGAIN or OVL_ENGINE_BATCH packets, each
 *     judged by the policy and queued (from where it was read) for ONE sendmmsg; drops
 *     answer ICMP straight into the TUN; then udp_flush sends the queue
 *   udp_burst (IPv4 socket, then IPv6): ONE recvmmsg, each datagram judged by the policy
 *     and delivered into the GRO table; then gro_flush writes it into the TUN
 *   leave the route section, publish the turn's counters (relaxed stores)
 *   poll(TUN POLLIN, UDP POLLIN, stop eventfd): timeout 0 when a burst hit its batch
 *     limit (more is waiting; the other side and the stop flag get their turn), else
 *     infinite — the only place a thread sleeps, so an idle engine costs nothing.
 * The stop eventfd is written once by ovl_engine_stop and never read, so it wakes every
 * thread (level-triggered) however many there are.
 */
#include "engine_int.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(struct ovl_engine_counters) % 64 == 0, "counter block is whole cache lines");
_Static_assert(OVL_EC_COMMON == 17, "the common counters are ENGINE_COUNTERS of engine.ts");

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
    [OVL_EC_DROP_ICMP_RATELIMIT] = "drop_icmp_ratelimit",
    [OVL_EC_DROP_TUN_OVERSIZE] = "drop_tun_oversize",
    [OVL_EC_TUN_READ_ERRORS] = "tun_read_errors",
    [OVL_EC_TUN_WRITE_ERRORS] = "tun_write_errors",
    [OVL_EC_UDP_RECV_ERRORS] = "udp_recv_errors",
    [OVL_EC_POLLS] = "polls",
    [OVL_EC_TUN_BURSTS] = "tun_bursts",
    [OVL_EC_UDP_BURSTS] = "udp_bursts",
    [OVL_EC_SENDMMSG_CALLS] = "sendmmsg_calls",
    [OVL_EC_TUN_GSO_READS] = "tun_gso_reads",
    [OVL_EC_TUN_GRO_WRITES] = "tun_gro_writes",
    [OVL_EC_UDP_GSO_SENDS] = "udp_gso_sends",
    [OVL_EC_UDP_GRO_RECVS] = "udp_gro_recvs",
    [OVL_EC_UDP_GSO_FALLBACK] = "udp_gso_fallback",
    [OVL_EC_TUN_GRO_FALLBACK] = "tun_gro_fallback",
    [OVL_EC_UDP_GSO_REENABLE] = "udp_gso_reenable",
    [OVL_EC_TUN_GRO_REENABLE] = "tun_gro_reenable",
    [OVL_EC_TUN_USO_READS] = "tun_uso_reads",
    [OVL_EC_CSUM_PARTIAL_SENT] = "csum_partial_sent",
    [OVL_EC_CSUM_PARTIAL_RECEIVED] = "csum_partial_received",
};

#ifndef OVL_ENGINE_MONO_NS
uint64_t mono_ns(void) {
  struct timespec ts;
  (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
#endif

void set_fatal(struct worker *w, int err, const char *syscall) {
  if (w->fatal_err == 0) {
    w->fatal_err = err;
    w->fatal_syscall = syscall;
  }
}

/* This thread is the only writer: a relaxed load + store, no locked instruction. */
static void publish_counters(struct worker *w) {
  for (uint32_t i = 0; i < OVL_EC_COUNT; i++) {
    if (w->acc[i] == 0) continue;
    _Atomic uint64_t *c = &w->ctr->v[i];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + w->acc[i], memory_order_relaxed);
    w->acc[i] = 0;
  }
}

/* Turns the offloads whose back-off is over back on (once per turn while one is off). */
static void retry_offloads(struct worker *w) {
  uint64_t now = mono_ns();
  if (ovl_offload_gate_poll(&w->gro_gate, now)) {
    w->tun_gro = true;
    w->acc[OVL_EC_TUN_GRO_REENABLE]++;
  }
  if (ovl_offload_gate_poll(&w->gso_gate, now)) {
    w->udp_gso = true;
    w->acc[OVL_EC_UDP_GSO_REENABLE]++;
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct ovl_engine *e = w->e;
  bool tun_ready = true, udp_ready = true, udp6_ready = w->udp6_fd >= 0;

  while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
    if (w->gro_gate.state == OVL_OFFLOAD_BACKOFF || w->gso_gate.state == OVL_OFFLOAD_BACKOFF) retry_offloads(w);
    const struct ovl_rtable *t = ovl_routes_enter(e->routes, w->q);
    bool more = false;
    if (tun_ready) {
      more |= tun_burst(w, t);
      udp_flush(w); /* the queue points into the TUN arena: sent before the next read */
    }
    /* each burst's runs point into udp_buf: written before the next receive */
    if (udp_ready && w->fatal_err == 0) {
      more |= udp_burst(w, t, w->udp_fd);
      gro_flush(w);
    }
    if (udp6_ready && w->fatal_err == 0) {
      more |= udp_burst(w, t, w->udp6_fd);
      gro_flush(w);
    }
    ovl_routes_leave(e->routes, w->q);
    if (w->fatal_err) break;

    struct pollfd pfd[4] = {
        {.fd = w->tun_fd, .events = POLLIN},
        {.fd = w->udp_fd, .events = POLLIN},
        {.fd = e->stop_efd, .events = POLLIN},
        {.fd = w->udp6_fd, .events = POLLIN}, /* -1 (ignored by poll) without IPv6 sockets */
    };
    w->acc[OVL_EC_POLLS]++;
    publish_counters(w);
    int rc = poll(pfd, 4, more ? 0 : -1);
    if (rc < 0) {
      if (errno != EINTR) { /* ENOMEM: back off instead of spinning */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = POLL_RETRY_NS};
        (void)nanosleep(&ts, NULL); /* an early return only shortens the pause */
      }
      continue;
    }
    if ((pfd[0].revents | pfd[1].revents | pfd[3].revents) & POLLNVAL) {
      set_fatal(w, EBADF, "poll");
      break;
    }
    tun_ready = (pfd[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
    udp_ready = (pfd[1].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
    udp6_ready = (pfd[3].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
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
  w->udp6_fd = cfg->udp6_fds ? cfg->udp6_fds[q] : -1;
  w->ctr = &cfg->counters[q];
  ovl_rcache_init(&w->cache);
  w->vnet = cfg->tun_vnet_hdr;
  w->tun_gro = cfg->tun_vnet_hdr && cfg->tun_gro;
  w->udp_runs = w->tun_gro;
  w->udp_gso = cfg->udp_gso;
  w->udp_gro = cfg->udp_gro;
  ovl_offload_gate_init(&w->gro_gate, w->tun_gro); /* not taken at start: off for good */
  ovl_offload_gate_init(&w->gso_gate, w->udp_gso);
  w->tun_arena = w->vnet ? VNET_ARENA : (size_t)BATCH * e->slot;
  w->rx_n = w->udp_gro ? GRO_MSGS : BATCH;
  w->rx_cap = w->udp_gro ? GRO_BUF : e->slot;
  w->tun_buf = malloc(w->tun_arena);
  w->stubs = w->vnet ? malloc(STUB_BYTES) : NULL;
  w->udp_buf = malloc((size_t)w->rx_n * w->rx_cap);
  w->gro = w->tun_gro ? malloc(sizeof(*w->gro)) : NULL;
  if (w->tun_buf == NULL || w->udp_buf == NULL || (w->tun_gro && w->gro == NULL) || (w->vnet && w->stubs == NULL)) {
    free(w->tun_buf);
    free(w->stubs);
    free(w->udp_buf);
    free(w->gro);
    free(w);
    return -ENOMEM;
  }
  if (w->gro) {
    w->gro->used = 0;
    ovl_gro_table_init(w->gro);
  }
  for (uint32_t i = 0; i < TXMAX; i++) {
    w->tx_to[i].v4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(e->port)};
    w->tx_msgs[i].msg_hdr = (struct msghdr){
        .msg_name = &w->tx_to[i], .msg_namelen = sizeof(struct sockaddr_in), .msg_iov = w->tx_iov, .msg_iovlen = 0};
  }
  for (uint32_t i = 0; i < w->rx_n; i++) {
    w->rx_iov[i] = (struct iovec){.iov_base = w->udp_buf + (size_t)i * w->rx_cap, .iov_len = w->rx_cap};
    w->rx_msgs[i].msg_hdr = (struct msghdr){
        .msg_name = &w->rx_from[i], .msg_namelen = sizeof(w->rx_from[i]), .msg_iov = &w->rx_iov[i], .msg_iovlen = 1};
  }
  *out = w;
  return 0;
}

static void worker_free(struct worker *w) {
  if (w == NULL) return;
  free(w->tun_buf);
  free(w->stubs);
  free(w->udp_buf);
  free(w->gro);
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
      cfg->subnet_len > 32 || (cfg->icmp_rate > 0 && cfg->icmp_burst == 0))
    return -EINVAL;
  uint32_t mask = cfg->subnet_len == 0 ? 0 : ~(uint32_t)0 << (32 - cfg->subnet_len);
  if ((cfg->subnet & ~mask) != 0) return -EINVAL;
  for (uint32_t q = 0; q < cfg->queues; q++)
    if (cfg->tun_fds[q] < 0 || cfg->udp_fds[q] < 0 || (cfg->udp6_fds && cfg->udp6_fds[q] < 0)) return -EINVAL;
  if (cfg->subnet6_len > 128 || (cfg->udp6_fds && !cfg->ipv6)) return -EINVAL;

  int err6 = 0;
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
  e->ipv6 = cfg->ipv6;
  memcpy(e->tun_address6, cfg->tun_address6, 16);
  for (uint32_t i = 0; i < 16; i++) {
    uint32_t bits = cfg->subnet6_len >= 8 * (i + 1) ? 8 : cfg->subnet6_len > 8 * i ? cfg->subnet6_len - 8 * i : 0;
    e->subnet6_mask[i] = (uint8_t)(bits == 0 ? 0 : 0xffu << (8 - bits));
    e->subnet6[i] = cfg->subnet6[i] & e->subnet6_mask[i];
    if (e->subnet6[i] != cfg->subnet6[i]) err6 = -EINVAL; /* host bits set */
  }
  e->routes = cfg->routes;
  if (err6) {
    *syscall = "config";
    free(e);
    return err6;
  }
  e->on_fatal = cfg->on_fatal;
  e->opaque = cfg->opaque;
  e->stop_efd = -1;
  atomic_init(&e->stop, false);
  (void)ovl_ratelimit_init(&e->icmp_limit, cfg->icmp_rate, cfg->icmp_burst); /* checked above */
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
