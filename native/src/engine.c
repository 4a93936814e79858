/*
 * The native engine's forwarding threads. One thread per queue q owns tun_fds[q] and
 * udp_fds[q], its buffers, its route cache and its counter block; threads share only the
 * route domain (read side, lock-free: route.c), the stop flag + eventfd and the ICMP id
 * counter. Per packet they do exactly what src/dataplane/js-engine.ts does — the same
 * checks in the same order, the same counters, the same ICMP errors — with packet.c's
 * rules (validation, TTL, ICMP builder) and route.c's lookup. Two things are decided once
 * per TUN super-packet rather than per segment (its segments cannot differ in them):
 * validation, the route and the TTL rule, so it draws at most one ICMP error; and ICMP
 * errors of all queues share one rate limit (ratelimit.c; suppressed: drop_icmp_ratelimit).
 * An offload the kernel refuses at run time is off on that queue for a back-off
 * (backoff.c), then tried again.
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
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
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
/* Messages of one sendmmsg: a burst of plain packets plus the segments of one super-packet. */
#define TXMAX (BATCH + OVL_GSO_SEGS_MAX)
/* One UDP_SEGMENT message: at most this many datagrams (UDP_MAX_SEGMENTS of older
 * kernels) and payload bytes (under the 64 KB an IPv4 datagram can describe). */
#define GSO_SEGS 64u
#define GSO_BYTES 65000u
/* Bytes a TUN read with a virtio_net_hdr may return (the super-packet stays where it was
 * read: its segments are sent from it, see outbound_vnet). */
#define SUPER_MAX 65535u
#define VNET_NEED SUPER_MAX
#define VNET_ARENA (1u << 20)
/* Headers of the segments cut from one burst's super-packets (ovl_gso_cut's stubs), and
 * the most one super-packet may need of them. */
#define STUB_HDR_MAX (OVL_IPV4_MAX_HEADER + OVL_TCP_MAX_HEADER)
#define STUB_NEED (OVL_GSO_SEGS_MAX * STUB_HDR_MAX)
#define STUB_BYTES (256u << 10)
/* iovecs of one burst's messages: a datagram takes 1 (a packet as read) or 2 (a cut
 * segment: header stub + payload slice). */
#define IOV_CAP 2048u
#define IOV_NEED (2u * OVL_GSO_SEGS_MAX)
_Static_assert(STUB_BYTES >= STUB_NEED && IOV_CAP >= IOV_NEED + BATCH, "room for one super-packet per burst at least");
_Static_assert(2u * GSO_SEGS <= 1024u, "a UDP_SEGMENT message has at most UIO_MAXIOV iovecs");
/* Receives of one recvmmsg with UDP_GRO (each buffer holds a 64 KB coalesced receive). */
#define GRO_MSGS 16u
#define GRO_BUF 65536u
#define CTL_BYTES 64u

/* A peer's underlay address as sendmmsg/recvmmsg take it: IPv4 or IPv6. */
union ovl_sa {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
};

/* Where outbound() sends a packet: the IPv4 underlay (v4, host order) or the IPv6 one. */
struct dest {
  bool over6;
  uint32_t v4;
  uint8_t v6[16];
};

struct worker {
  struct ovl_engine *e;
  uint32_t q;
  int tun_fd, udp_fd; /* borrowed */
  int udp6_fd;        /* borrowed; -1 without an IPv6 underlay */
  /* The IPv6 table of the current route section: loaded on first use in a burst
   * (table6()), forgotten at the start of every burst (tun_burst, udp_burst run inside the
   * section, so it is valid for the whole burst). */
  const struct ovl_rtable6 *t6;
  pthread_t thread;
  struct ovl_engine_counters *ctr; /* shared; this thread is the only writer */
  uint64_t acc[OVL_EC_COUNT];      /* this turn's increments, published once per turn */
  uint32_t tun_errors_in_row, udp_errors_in_row;
  int fatal_err; /* positive errno once the thread must stop */
  const char *fatal_syscall;
  struct ovl_rcache cache;
  bool vnet, tun_gro, udp_gso, udp_gro; /* offloads in force on this queue now: tun_gro and
                                           udp_gso mirror "gate ON" of their gates */
  struct ovl_offload_gate gro_gate, gso_gate; /* run-time refusals: back-off, then on again */
  /* Lifetime: queued messages point into tun_buf and stubs (no copy); both are reused
   * only by the next tun_burst, after flush_tx sent (or gave up on) every message. */
  uint8_t *tun_buf;  /* arena of tun_arena bytes: packets read from the TUN, back to back,
                        sent from in place (super-packets: their payload, sliced) */
  size_t tun_arena;
  uint8_t *stubs;    /* STUB_BYTES: headers of the segments cut this burst (ovl_gso_cut) */
  size_t stub_used;
  uint8_t *udp_buf;  /* rx_n * rx_cap: datagrams received, written to the TUN from in place */
  uint32_t rx_n, rx_cap;
  uint32_t ntx;      /* messages queued in tx_msgs this burst */
  uint32_t niov;     /* tx_iov entries used this burst; message i's are consecutive */
  struct mmsghdr tx_msgs[TXMAX];
  struct iovec tx_iov[IOV_CAP];
  union ovl_sa tx_to[TXMAX];
  uint32_t tx_bytes[TXMAX]; /* bytes of message i (all its datagrams) */
  uint16_t tx_seg[TXMAX];  /* datagram size of message i (its first datagram) */
  uint16_t tx_nseg[TXMAX]; /* datagrams in message i */
  bool tx_closed[TXMAX];   /* a shorter last datagram joined: no more */
  _Alignas(8) uint8_t tx_ctl[TXMAX][CMSG_SPACE(sizeof(uint16_t))];
  struct mmsghdr rx_msgs[BATCH];
  struct iovec rx_iov[BATCH];
  union ovl_sa rx_from[BATCH];
  _Alignas(8) uint8_t rx_ctl[BATCH][CTL_BYTES];
  struct ovl_gso_seg segs[OVL_GSO_SEGS_MAX]; /* the cut of the super-packet at hand */
  struct ovl_gro_table *gro; /* with tun_gro at start (kept while a back-off has it off) */
  uint8_t scratch[SCRATCH_BYTES];
  uint8_t icmp[OVL_ICMP_ERROR_MAX];
  uint8_t icmp6[OVL_ICMP6_ERROR_MAX];
};

struct ovl_engine {
  uint32_t queues;
  uint32_t slot; /* bytes per packet buffer */
  uint16_t port;
  uint32_t tun_address, tun_mtu, subnet, subnet_mask;
  bool ipv6;                /* inner IPv6 forwarded (else drop_malformed, as IPv4-only) */
  uint8_t tun_address6[16]; /* source of the ICMPv6 errors */
  uint8_t subnet6[16], subnet6_mask[16];
  struct ovl_routes *routes;
  void (*on_fatal)(void *opaque, uint32_t queue, int err, const char *syscall);
  void *opaque;
  int stop_efd;
  alignas(64) atomic_bool stop;
  alignas(64) _Atomic uint32_t icmp_id; /* IP id of the ICMP errors, shared by the queues */
  alignas(64) struct ovl_ratelimit icmp_limit; /* shared by the queues (one atomic word) */
  struct worker **w; /* [queues] */
};

/* CLOCK_MONOTONIC in ns (vDSO, no system call): read only on rare paths (an ICMP error,
 * an offload refused, a turn while an offload is backing off), never per packet. A file
 * that compiles this one into itself (the fuzz target) may define OVL_ENGINE_MONO_NS as
 * the name of its own `uint64_t f(void)` clock instead. */
#ifdef OVL_ENGINE_MONO_NS
#define mono_ns OVL_ENGINE_MONO_NS
#else
static uint64_t mono_ns(void) {
  struct timespec ts;
  (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
#endif

/* ---------------------------------------------------------------- into the TUN --------- */

/* One write into the TUN (with a virtio_net_hdr first when the queue has one: h, or all
 * zero). Returns 0 or the errno of the failure (nothing counted). */
static int tun_write_raw(struct worker *w, const struct ovl_vnet_hdr *h, const uint8_t *pkt, size_t len) {
  static const struct ovl_vnet_hdr none;
  struct iovec iov[2] = {{.iov_base = (void *)(h ? h : &none), .iov_len = OVL_VNET_HDR_LEN},
                         {.iov_base = (void *)pkt, .iov_len = len}};
  size_t want = len + (w->vnet ? OVL_VNET_HDR_LEN : 0);
  for (int attempt = 0; attempt < 3; attempt++) { /* retried only after EINTR */
    ssize_t r = w->vnet ? writev(w->tun_fd, iov, 2) : write(w->tun_fd, pkt, len);
    if (r == (ssize_t)want) return 0;
    if (r >= 0) return EIO; /* a packet fd writes all or nothing: a short write is a broken packet */
    if (errno == EINTR) continue;
    return errno;
  }
  return EINTR;
}

static void count_write_error(struct worker *w, int err, uint64_t n) {
  if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS)
    w->acc[OVL_EC_DROP_RING_FULL] += n;
  else
    w->acc[OVL_EC_TUN_WRITE_ERRORS] += n;
}

static void tun_write(struct worker *w, const uint8_t *pkt, size_t len) {
  int err = tun_write_raw(w, NULL, pkt, len);
  if (err == 0)
    w->acc[OVL_EC_TUN_TX]++;
  else
    count_write_error(w, err, 1);
}

/* Writes one run of the GRO table, if it holds one: one super-packet, or its one packet
 * plainly; then the flow is empty. A TUN that refuses the GSO write (EINVAL) gets the
 * original packets, and no GSO writes from this queue until its back-off is over
 * (gro_gate); runs still in the table then go out packet by packet too. */
static void flush_flow(struct worker *w, struct ovl_gro *g) {
  if (g->nseg == 0) return;
  if (g->nseg == 1 || !w->tun_gro) {
    for (uint32_t i = 0; i < g->nseg; i++) tun_write(w, g->segs[i], g->seg_lens[i]);
  } else {
    struct ovl_vnet_hdr h;
    struct iovec iov[1 + OVL_GRO_SEGS_MAX];
    uint32_t n;
    size_t len = ovl_gro_finish(g, &h, iov + 1, &n);
    iov[0] = (struct iovec){.iov_base = &h, .iov_len = OVL_VNET_HDR_LEN};
    int err = 0;
    for (int attempt = 0; attempt < 3; attempt++) { /* retried only after EINTR */
      ssize_t r = writev(w->tun_fd, iov, (int)n + 1);
      err = r == (ssize_t)(len + OVL_VNET_HDR_LEN) ? 0 : r >= 0 ? EIO : errno;
      if (err != EINTR) break;
    }
    if (err == 0) {
      w->acc[OVL_EC_TUN_TX] += g->nseg;
      w->acc[OVL_EC_TUN_GRO_WRITES]++;
    } else if (err == EINVAL) { /* off for a back-off (a transient path MTU drop does this too) */
      if (ovl_offload_gate_fail(&w->gro_gate, mono_ns())) w->acc[OVL_EC_TUN_GRO_FALLBACK]++;
      w->tun_gro = false;
      ovl_gro_restore(g);
      for (uint32_t i = 0; i < g->nseg; i++) tun_write(w, g->segs[i], g->seg_lens[i]);
    } else {
      count_write_error(w, err, g->nseg);
    }
  }
  ovl_gro_init(g);
}

/* Writes every run of the GRO table (end of a batch of receives: they point into udp_buf). */
static void gro_flush(struct worker *w) {
  struct ovl_gro_table *t = w->gro;
  if (t == NULL) return;
  for (uint32_t i = 0; i < t->used; i++) flush_flow(w, &t->flows[i]);
  ovl_gro_table_init(t);
}

/* An inbound packet (IPv4 or IPv6) that passed every check: into the run of its TCP flow
 * in the GRO table, or written. Per flow the order is kept: a packet that does not join
 * its flow's run goes after that run (and one whose flow cannot be told, after all runs). */
static void deliver(struct worker *w, uint8_t *pkt, size_t len) {
  struct ovl_gro_table *t = w->gro;
  if (t == NULL) {
    tun_write(w, pkt, len);
    return;
  }
  int f = ovl_gro_table_find(t, pkt, len);
  if (w->tun_gro && ovl_gro_eligible(pkt, len)) { /* eligible: TCP with ports, never FIND_ALL */
    if (f >= 0) {
      if (ovl_gro_add(&t->flows[f], pkt, len)) return;
      flush_flow(w, &t->flows[f]);
    } else {
      f = (int)ovl_gro_table_slot(t);
      flush_flow(w, &t->flows[f]); /* a victim when the table is full; else empty */
    }
    (void)ovl_gro_add(&t->flows[f], pkt, len); /* an empty flow takes any eligible packet */
    return;
  }
  if (f == OVL_GRO_FIND_ALL)
    gro_flush(w);
  else if (f >= 0)
    flush_flow(w, &t->flows[f]);
  tun_write(w, pkt, len);
}

/* The js engine's icmpError(): only where RFC 1812 allows and the engine's rate limit has
 * a token (else counted as drop_icmp_ratelimit), counted, written into the TUN. */
static void icmp_error(struct worker *w, const uint8_t *pkt, size_t len, uint8_t type, uint8_t code) {
  if (!ovl_icmp_may_respond(pkt, len)) return;
  if (!ovl_ratelimit_take(&w->e->icmp_limit, mono_ns())) {
    w->acc[OVL_EC_DROP_ICMP_RATELIMIT]++;
    return;
  }
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

/* ---------------------------------------------------------------- IPv6 helpers --------- */

static const struct ovl_rtable6 *table6(struct worker *w) {
  if (w->t6 == NULL) w->t6 = ovl_routes_table6(w->e->routes);
  return w->t6;
}

static bool in_subnet6(const struct ovl_engine *e, const uint8_t *a) {
  for (int i = 0; i < 16; i++)
    if ((a[i] & e->subnet6_mask[i]) != e->subnet6[i]) return false;
  return true;
}

/* An ICMPv6 error about pkt (avail bytes present, validated: info) where RFC 4443 allows
 * and the shared rate limit has a token (else drop_icmp_ratelimit); built in w->icmp6.
 * Returns its length, 0 when none is to be sent. Counts icmp_sent. */
static size_t icmp6_build(struct worker *w, const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info,
                          uint8_t type, uint8_t code, uint32_t mtu) {
  if (!ovl_icmp6_may_respond(pkt, avail, info, type)) return 0;
  if (!ovl_ratelimit_take(&w->e->icmp_limit, mono_ns())) {
    w->acc[OVL_EC_DROP_ICMP_RATELIMIT]++;
    return 0;
  }
  w->acc[OVL_EC_ICMP_SENT]++;
  return ovl_icmp6_error_build(w->icmp6, type, code, w->e->tun_address6, pkt, avail, mtu);
}

/* icmp6_build, written into the TUN. */
static void icmp6_error(struct worker *w, const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info,
                        uint8_t type, uint8_t code, uint32_t mtu) {
  size_t n = icmp6_build(w, pkt, avail, info, type, code, mtu);
  if (n) tun_write(w, w->icmp6, n);
}

/* ---------------------------------------------------------------- outbound ------------- */

/* What outbound() decided for a packet: the counter of its drop, or OVL_EC_TX (send). */
typedef enum ovl_engine_counter verdict_t;

/* Queues a datagram that passed the outbound checks for d (its underlay and peer
 * address): pkt (len bytes), then tail (tail_len bytes; NULL, 0 for a packet in one
 * piece). Both are sent from where they are: they must stay unchanged until flush_tx. */
static void queue_tx(struct worker *w, uint8_t *pkt, size_t len, const uint8_t *tail, size_t tail_len,
                     const struct dest *d);

/* outbound() of an inner IPv6 packet (len bytes, all in the buffer): validation with the
 * extension-header walk, route, hop limit, then the TUN MTU (packet too big, MTU = TUN
 * MTU, toward the sender), in the order Linux forwards. Over the IPv6 underlay when the
 * route has a peer6 and this engine has IPv6 sockets, else over IPv4. */
static verdict_t outbound6(struct worker *w, uint8_t *pkt, size_t len, struct dest *d) {
  struct ovl_ipv6_info info;
  if (ovl_ipv6_validate(pkt, len, len, &info) != OVL_IPV6_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return OVL_EC_DROP_MALFORMED;
  }
  const struct ovl_route6 *r = ovl_rtable6_lookup(table6(w), ovl_ipv6_dst(pkt));
  if (r == NULL) {
    w->acc[OVL_EC_DROP_NO_ROUTE]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_DEST_UNREACH, OVL_ICMP6_NO_ROUTE, 0);
    return OVL_EC_DROP_NO_ROUTE;
  }
  if (pkt[7] <= 1) {
    w->acc[OVL_EC_DROP_TTL]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_TIME_EXCEEDED, OVL_ICMP6_HOP_LIMIT, 0);
    return OVL_EC_DROP_TTL;
  }
  if (len > w->e->tun_mtu) {
    w->acc[OVL_EC_DROP_TOO_BIG]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_PACKET_TOO_BIG, 0, w->e->tun_mtu);
    return OVL_EC_DROP_TOO_BIG;
  }
  (void)ovl_ipv6_decrement_hop_limit(pkt); /* > 1, checked above */
  d->over6 = r->has_peer6 && w->udp6_fd >= 0;
  d->v4 = r->peer;
  memcpy(d->v6, r->peer6, 16);
  queue_tx(w, pkt, len, NULL, 0, d);
  return OVL_EC_TX;
}

/* js-engine.ts outbound(): one packet read from the TUN, in its read buffer. Returns the
 * verdict, and *d when it is OVL_EC_TX. */
static verdict_t outbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len, struct dest *d) {
  w->acc[OVL_EC_TUN_RX]++;
  if (w->e->ipv6 && len > 0 && (pkt[0] >> 4) == 6) return outbound6(w, pkt, len, d);
  uint32_t *peer = &d->v4;
  d->over6 = false;
  if (ovl_ipv4_validate(pkt, len) != OVL_IPV4_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return OVL_EC_DROP_MALFORMED;
  }
  if (!ovl_rcache_lookup(&w->cache, t, ovl_ipv4_dst(pkt), peer)) {
    w->acc[OVL_EC_DROP_NO_ROUTE]++;
    icmp_error(w, pkt, len, OVL_ICMP_DEST_UNREACH, OVL_ICMP_NET_UNREACH);
    return OVL_EC_DROP_NO_ROUTE;
  }
  if (!ttl_step(w, pkt, len)) return OVL_EC_DROP_TTL;
  queue_tx(w, pkt, len, NULL, 0, d);
  return OVL_EC_TX;
}

/* A segment cut from the same super-packet as one outbound() already judged (`v`, `d`):
 * the same addresses, TTL and header fields (ovl_gso_cut wrote valid lengths and
 * checksums), so the same verdict; counted per segment like outbound(), but no second
 * ICMP error (one per super-packet, as one per packet the pod's stack sent). */
static void outbound_same(struct worker *w, const struct ovl_gso_seg *s, verdict_t v, const struct dest *d) {
  w->acc[OVL_EC_TUN_RX]++;
  if (v != OVL_EC_TX) {
    w->acc[v]++;
    return;
  }
  /* TTL / hop limit > 1, as in the first segment (the same version: cut from one packet) */
  if ((s->hdr[0] >> 4) == 6)
    (void)ovl_ipv6_decrement_hop_limit(s->hdr);
  else
    (void)ovl_ipv4_decrement_ttl(s->hdr);
  queue_tx(w, s->hdr, s->hdr_len, s->payload, s->payload_len, d);
}

static bool same_dest(const union ovl_sa *a, const struct dest *d) {
  if (d->over6) return a->sa.sa_family == AF_INET6 && memcmp(&a->v6.sin6_addr, d->v6, 16) == 0;
  return a->sa.sa_family == AF_INET && a->v4.sin_addr.s_addr == htonl(d->v4);
}

/* The socket message i is sent on (its family's). */
static int tx_fd(const struct worker *w, uint32_t i) {
  return w->tx_to[i].sa.sa_family == AF_INET6 ? w->udp6_fd : w->udp_fd;
}

/* Appends the datagram's pieces to the iovecs of message i (the last one queued). */
static void append_iov(struct worker *w, uint32_t i, uint8_t *pkt, size_t len, const uint8_t *tail, size_t tail_len) {
  w->tx_iov[w->niov++] = (struct iovec){.iov_base = pkt, .iov_len = len};
  if (tail_len) w->tx_iov[w->niov++] = (struct iovec){.iov_base = (void *)tail, .iov_len = tail_len};
  w->tx_msgs[i].msg_hdr.msg_iovlen += tail_len ? 2 : 1;
  w->tx_bytes[i] += (uint32_t)(len + tail_len);
}

static void queue_tx(struct worker *w, uint8_t *pkt, size_t len, const uint8_t *tail, size_t tail_len,
                     const struct dest *d) {
  /* tun_burst leaves room for one packet's datagrams (IOV_NEED, OVL_GSO_SEGS_MAX) */
  assert(w->niov + 2 <= IOV_CAP && w->ntx < TXMAX);
  size_t dlen = len + tail_len;
  if (w->udp_gso && w->ntx > 0) { /* joins the previous message when UDP_SEGMENT allows it */
    uint32_t i = w->ntx - 1;
    if (same_dest(&w->tx_to[i], d) && !w->tx_closed[i] && dlen <= w->tx_seg[i] && w->tx_nseg[i] < GSO_SEGS &&
        w->tx_bytes[i] + dlen <= GSO_BYTES) {
      append_iov(w, i, pkt, len, tail, tail_len);
      w->tx_nseg[i]++;
      if (dlen < w->tx_seg[i]) w->tx_closed[i] = true;
      return;
    }
  }
  uint32_t i = w->ntx++;
  if (d->over6) {
    w->tx_to[i].v6 = (struct sockaddr_in6){.sin6_family = AF_INET6, .sin6_port = htons(w->e->port)};
    memcpy(&w->tx_to[i].v6.sin6_addr, d->v6, 16);
    w->tx_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
  } else {
    w->tx_to[i].v4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(w->e->port), .sin_addr.s_addr = htonl(d->v4)};
    w->tx_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
  }
  w->tx_msgs[i].msg_hdr.msg_iov = &w->tx_iov[w->niov];
  w->tx_msgs[i].msg_hdr.msg_iovlen = 0;
  w->tx_bytes[i] = 0;
  append_iov(w, i, pkt, len, tail, tail_len);
  w->tx_seg[i] = (uint16_t)dlen;
  w->tx_nseg[i] = 1;
  w->tx_closed[i] = false;
}

/* Forgets the queued messages (after flush_tx, or in a test): the arenas may be reused. */
static void tx_reset(struct worker *w) {
  w->ntx = 0;
  w->niov = 0;
  w->stub_used = 0;
}

/* Message i (several datagrams) after the kernel refused UDP_SEGMENT: its datagrams one
 * by one. Each datagram is whole iovecs of the message (1 or 2: append_iov), all of
 * tx_seg bytes but a shorter last one. Counts tx / tx_error per datagram. */
static void send_split(struct worker *w, uint32_t i) {
  const struct msghdr *m = &w->tx_msgs[i].msg_hdr;
  size_t k = 0, seg = w->tx_seg[i];
  while (k < m->msg_iovlen) {
    size_t first = k, l = 0;
    while (k < m->msg_iovlen && l < seg) l += m->msg_iov[k++].iov_len;
    struct msghdr one = {.msg_name = m->msg_name, .msg_namelen = m->msg_namelen, .msg_iov = m->msg_iov + first,
                         .msg_iovlen = k - first};
    ssize_t r = sendmsg(tx_fd(w, i), &one, 0);
    if (r == (ssize_t)l) {
      w->acc[OVL_EC_TX]++;
      w->acc[OVL_EC_TX_BYTES] += l;
    } else {
      w->acc[OVL_EC_TX_ERROR]++;
    }
  }
}

/* Sends the queued messages with as few sendmmsg calls as the socket allows. */
static void flush_tx(struct worker *w) {
  uint32_t i = 0, n = w->ntx, waits = 0;
  for (uint32_t j = 0; j < n; j++) {
    struct msghdr *m = &w->tx_msgs[j].msg_hdr;
    if (w->tx_nseg[j] > 1) {
      m->msg_control = w->tx_ctl[j];
      m->msg_controllen = sizeof(w->tx_ctl[j]);
      struct cmsghdr *c = CMSG_FIRSTHDR(m);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t seg = w->tx_seg[j];
      memcpy(CMSG_DATA(c), &seg, sizeof(seg));
    } else {
      m->msg_control = NULL;
      m->msg_controllen = 0;
    }
  }
  /* Each iteration sends >= 1 message, skips a failed one, or waits (at most SEND_WAITS
   * times); EINTR cannot happen with every signal blocked, and is bounded anyway. */
  for (uint32_t iter = 0; i < n && iter < 2 * TXMAX + SEND_WAITS; iter++) {
    uint32_t end = i + 1; /* one call per run of messages of one family (one socket) */
    while (end < n && w->tx_to[end].sa.sa_family == w->tx_to[i].sa.sa_family) end++;
    int r = sendmmsg(tx_fd(w, i), &w->tx_msgs[i], end - i, 0);
    w->acc[OVL_EC_SENDMMSG_CALLS]++;
    if (r > 0) {
      for (uint32_t j = i; j < i + (uint32_t)r; j++) {
        w->acc[OVL_EC_TX_BYTES] += w->tx_bytes[j];
        w->acc[OVL_EC_TX] += w->tx_nseg[j];
        if (w->tx_nseg[j] > 1) w->acc[OVL_EC_UDP_GSO_SENDS]++;
      }
      i += (uint32_t)r;
      continue;
    }
    int err = r == 0 ? EAGAIN : errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      if (waits++ == SEND_WAITS || atomic_load_explicit(&w->e->stop, memory_order_relaxed)) break;
      struct pollfd pfd[2] = {{.fd = tx_fd(w, i), .events = POLLOUT}, {.fd = w->e->stop_efd, .events = POLLIN}};
      (void)poll(pfd, 2, SEND_WAIT_MS); /* any outcome: the next sendmmsg tells */
      w->acc[OVL_EC_POLLS]++;
      continue;
    }
    if (w->tx_nseg[i] > 1 && (err == EIO || err == EINVAL || err == EMSGSIZE)) {
      /* the kernel refuses UDP_SEGMENT (a device without checksum offload, a smaller path
       * MTU, a kernel bug): this message goes out datagram by datagram, and the queue
       * sends plainly until its back-off is over (gso_gate) */
      if (ovl_offload_gate_fail(&w->gso_gate, mono_ns())) w->acc[OVL_EC_UDP_GSO_FALLBACK]++;
      w->udp_gso = false;
      send_split(w, i);
      i++;
      continue;
    }
    w->acc[OVL_EC_TX_ERROR] += w->tx_nseg[i]; /* the message at i failed (unreachable, EPERM, ...): skip it */
    i++;
  }
  for (; i < n; i++) w->acc[OVL_EC_TX_ERROR] += w->tx_nseg[i];
  tx_reset(w); /* nothing points into tun_buf / stubs any more */
}

static void set_fatal(struct worker *w, int err, const char *syscall) {
  if (w->fatal_err == 0) {
    w->fatal_err = err;
    w->fatal_syscall = syscall;
  }
}

/* One packet read with a virtio_net_hdr, at pkt (len bytes): finished, or cut, then
 * queued. A super-packet is cut without copying (ovl_gso_cut): segment 0 is rewritten in
 * place (its headers over the super-packet's, its payload right behind them), every
 * other segment is a header stub in w->stubs plus a slice of pkt. pkt must therefore stay
 * untouched until flush_tx (tun_burst reads the next packet behind it). */
static void outbound_vnet(struct worker *w, const struct ovl_rtable *t, const struct ovl_vnet_hdr *h, uint8_t *pkt,
                          size_t len) {
  if (h->gso_type == OVL_VNET_GSO_NONE) {
    if (len > w->e->slot) {
      w->acc[OVL_EC_DROP_TUN_OVERSIZE]++;
      return;
    }
    if (ovl_vnet_csum_finish(pkt, len, h) != 0) {
      w->acc[OVL_EC_TUN_RX]++;
      w->acc[OVL_EC_DROP_MALFORMED]++;
      return;
    }
    struct dest d;
    (void)outbound(w, t, pkt, len, &d);
    return;
  }
  struct ovl_gso_seg *sg = w->segs;
  int n = ovl_gso_cut(pkt, len, h, w->stubs + w->stub_used, STUB_BYTES - w->stub_used, sg, OVL_GSO_SEGS_MAX);
  if (n < 0) {
    w->acc[OVL_EC_TUN_RX]++;
    w->acc[n == -E2BIG || n == -ENOBUFS ? OVL_EC_DROP_TUN_OVERSIZE : OVL_EC_DROP_MALFORMED]++;
    return;
  }
  size_t len0 = sg[0].hdr_len + sg[0].payload_len;
  if (len0 > w->e->tun_mtu) { /* the first segment is the largest: a gso_size no TCP stack
                                 on this TUN picks; never send more than MTU */
    w->acc[OVL_EC_TUN_RX]++;
    w->acc[OVL_EC_DROP_TUN_OVERSIZE]++;
    return;
  }
  w->stub_used += (size_t)n * sg[0].hdr_len;
  w->acc[OVL_EC_TUN_GSO_READS]++;
  /* segment 0 in one piece where it was read (the other stubs are already written from
   * the original headers), so that outbound() sees a whole packet */
  memcpy(pkt, sg[0].hdr, sg[0].hdr_len);
  /* validation, route lookup and the TTL rule once per super-packet: on its first segment */
  struct dest d = {0};
  verdict_t v = outbound(w, t, pkt, len0, &d);
  for (int i = 1; i < n; i++) outbound_same(w, &sg[i], v, &d);
}

/* TUN -> peers. Returns true when the burst hit its limit (more may be waiting). */
static bool tun_burst(struct worker *w, const struct ovl_rtable *t) {
  const uint32_t slot = w->e->slot;
  const size_t need = w->vnet ? VNET_NEED : slot;
  size_t used = 0; /* arena bytes holding this burst's packets */
  uint32_t n = 0, reads = 0;
  w->t6 = NULL;
  bool full = false;
  assert(w->ntx == 0 && w->niov == 0 && w->stub_used == 0); /* nothing still points into the arenas */
  while (reads < BATCH) {
    if (used + need > w->tun_arena || w->ntx + OVL_GSO_SEGS_MAX > TXMAX || w->niov + IOV_NEED > IOV_CAP ||
        w->stub_used + STUB_NEED > STUB_BYTES) {
      full = true;
      break;
    }
    uint8_t *buf = w->tun_buf + used;
    struct ovl_vnet_hdr h;
    struct iovec iov[2];
    if (w->vnet) {
      iov[0] = (struct iovec){.iov_base = &h, .iov_len = OVL_VNET_HDR_LEN};
      iov[1] = (struct iovec){.iov_base = buf, .iov_len = SUPER_MAX};
    } else {
      iov[0] = (struct iovec){.iov_base = buf, .iov_len = slot};
      iov[1] = (struct iovec){.iov_base = w->scratch, .iov_len = SCRATCH_BYTES};
    }
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
    n++;
    if (w->vnet) {
      if ((size_t)r <= OVL_VNET_HDR_LEN) {
        w->acc[OVL_EC_TUN_RX]++;
        w->acc[OVL_EC_DROP_MALFORMED]++;
        continue;
      }
      size_t len = (size_t)r - OVL_VNET_HDR_LEN;
      used += len;
      outbound_vnet(w, t, &h, buf, len);
      continue;
    }
    if ((size_t)r > slot) {
      w->acc[OVL_EC_DROP_TUN_OVERSIZE]++;
      continue;
    }
    used += (size_t)r;
    struct dest d;
    (void)outbound(w, t, buf, (size_t)r, &d);
  }
  if (n) w->acc[OVL_EC_TUN_BURSTS]++;
  if (w->ntx) flush_tx(w);
  tx_reset(w); /* stubs of segments dropped after the cut (no route, ...) too */
  return (reads == BATCH || full) && w->fatal_err == 0;
}

/* ---------------------------------------------------------------- inbound -------------- */

/* A packet too big sent back over UDP to the peer it came from (`from`, on the socket of
 * its family): source our TUN's IPv6 address, destination the inner source. */
static void ptb_to_peer(struct worker *w, const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info,
                        const union ovl_sa *from) {
  size_t n = icmp6_build(w, pkt, avail, info, OVL_ICMP6_PACKET_TOO_BIG, 0, w->e->tun_mtu);
  if (n == 0) return;
  bool over6 = from->sa.sa_family == AF_INET6;
  socklen_t sl = over6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  ssize_t r = sendto(over6 ? w->udp6_fd : w->udp_fd, w->icmp6, n, MSG_DONTWAIT, &from->sa, sl);
  if (r == (ssize_t)n) {
    w->acc[OVL_EC_TX]++;
    w->acc[OVL_EC_TX_BYTES] += n;
  } else {
    w->acc[OVL_EC_TX_ERROR]++;
  }
}

/* inbound() of an inner IPv6 packet from a known peer: the buffer holds min(len, slot)
 * bytes. Checks in the IPv4 order: malformed (with the extension-header walk, within the
 * bytes present), spoofed (the Route6 of the inner source must point at the sender over
 * the underlay it came by: its peer for IPv4, its peer6 for IPv6), wrong destination
 * (outside our IPv6 subnet), too big (packet too big back to the peer), hop limit. */
static void inbound6(struct worker *w, uint8_t *pkt, size_t len, const union ovl_sa *from) {
  const struct ovl_engine *e = w->e;
  size_t avail = len < e->slot ? len : e->slot;
  struct ovl_ipv6_info info;
  if (ovl_ipv6_validate(pkt, len, avail, &info) != OVL_IPV6_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return;
  }
  const struct ovl_route6 *r = ovl_rtable6_lookup(table6(w), ovl_ipv6_src(pkt));
  bool owner = r != NULL && (from->sa.sa_family == AF_INET6
                                 ? r->has_peer6 && memcmp(r->peer6, &from->v6.sin6_addr, 16) == 0
                                 : r->peer == ntohl(from->v4.sin_addr.s_addr));
  if (!owner) {
    w->acc[OVL_EC_DROP_SPOOFED]++;
    return;
  }
  if (!in_subnet6(e, ovl_ipv6_dst(pkt))) {
    w->acc[OVL_EC_DROP_WRONG_DST]++;
    return;
  }
  if (len > e->tun_mtu) {
    w->acc[OVL_EC_DROP_TOO_BIG]++;
    ptb_to_peer(w, pkt, avail, &info, from);
    return;
  }
  if (!ovl_ipv6_decrement_hop_limit(pkt)) { /* the whole packet is present: len <= tun_mtu <= slot */
    w->acc[OVL_EC_DROP_TTL]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_TIME_EXCEEDED, OVL_ICMP6_HOP_LIMIT, 0);
    return;
  }
  deliver(w, pkt, len);
}

/* js-engine.ts inbound(): one datagram of `len` bytes (its real length; the buffer holds
 * min(len, slot) of them) from `from` (fromlen bytes of it), over IPv4 or IPv6. */
static void inbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len,
                    const union ovl_sa *from, socklen_t fromlen) {
  const struct ovl_engine *e = w->e;
  w->acc[OVL_EC_RX]++;
  w->acc[OVL_EC_RX_BYTES] += len;
  bool over6 = fromlen >= (socklen_t)sizeof(struct sockaddr_in6) && from->sa.sa_family == AF_INET6;
  uint32_t sender = 0;
  if (over6) {
    if (!e->ipv6 || ntohs(from->v6.sin6_port) != e->port ||
        !ovl_rtable6_is_peer6(table6(w), (const uint8_t *)&from->v6.sin6_addr)) {
      w->acc[OVL_EC_DROP_UNKNOWN_PEER]++;
      return;
    }
  } else {
    sender = ntohl(from->v4.sin_addr.s_addr);
    if (fromlen < (socklen_t)sizeof(struct sockaddr_in) || from->sa.sa_family != AF_INET ||
        ntohs(from->v4.sin_port) != e->port || !ovl_rtable_is_peer(t, sender)) {
      w->acc[OVL_EC_DROP_UNKNOWN_PEER]++;
      return;
    }
  }
  if (e->ipv6 && len > 0 && (pkt[0] >> 4) == 6) {
    inbound6(w, pkt, len, from);
    return;
  }
  /* Reads at most 60 header bytes, all present: the buffer holds min(len, slot >= 576). */
  if (ovl_ipv4_validate(pkt, len) != OVL_IPV4_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return;
  }
  uint32_t owner;
  /* inner IPv4 rides the IPv4 underlay only: over IPv6 no route can point at the sender */
  if (over6 || !ovl_rcache_lookup(&w->cache, t, ovl_ipv4_src(pkt), &owner) || owner != sender) {
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
  deliver(w, pkt, len);
}

/* The segment size of a receive coalesced by UDP_GRO, or 0. */
static uint32_t gro_size(struct msghdr *m) {
  if (m->msg_controllen == 0) return 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof(v));
      return v > 0 ? (uint32_t)v : 0;
    }
  }
  return 0;
}

/* One receive of `len` bytes (the real length; buf holds min(len, rx_cap)) from `from`:
 * one datagram, or with a UDP_GRO segment size `seg` (0 = none) several of seg bytes each
 * (the last may be shorter), each through inbound(). The GRO flow may point into buf
 * afterwards: gro_flush before buf is reused. */
static void udp_receive(struct worker *w, const struct ovl_rtable *t, uint8_t *buf, size_t len, uint32_t seg,
                        const union ovl_sa *from, socklen_t fromlen) {
  if (seg == 0 || len <= seg) {
    inbound(w, t, buf, len, from, fromlen);
    return;
  }
  w->acc[OVL_EC_UDP_GRO_RECVS]++;
  for (size_t off = 0; off < len; off += seg) {
    size_t l = len - off < seg ? len - off : seg;
    if (off + l > w->rx_cap) { /* cannot happen with 64 KB buffers; never read beyond */
      w->acc[OVL_EC_RX]++;
      w->acc[OVL_EC_RX_BYTES] += l;
      w->acc[OVL_EC_DROP_MALFORMED]++;
      continue;
    }
    inbound(w, t, buf + off, l, from, fromlen);
  }
}

/* Peers -> TUN, from socket fd (the IPv4 or the IPv6 one). Returns true when the burst hit
 * its limit (more may be waiting). */
static bool udp_burst(struct worker *w, const struct ovl_rtable *t, int fd) {
  w->t6 = NULL;
  for (uint32_t i = 0; i < w->rx_n; i++) {
    w->rx_msgs[i].msg_hdr.msg_namelen = sizeof(w->rx_from[i]);
    w->rx_msgs[i].msg_hdr.msg_control = w->udp_gro ? w->rx_ctl[i] : NULL;
    w->rx_msgs[i].msg_hdr.msg_controllen = w->udp_gro ? CTL_BYTES : 0;
  }
  int r = recvmmsg(fd, w->rx_msgs, w->rx_n, MSG_DONTWAIT | MSG_TRUNC, NULL);
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
  for (int i = 0; i < r; i++) {
    uint32_t seg = w->udp_gro ? gro_size(&w->rx_msgs[i].msg_hdr) : 0;
    udp_receive(w, t, w->udp_buf + (size_t)i * w->rx_cap, w->rx_msgs[i].msg_len, seg, &w->rx_from[i],
                w->rx_msgs[i].msg_hdr.msg_namelen);
  }
  gro_flush(w); /* the flow points into udp_buf: written before the next receive */
  return r == (int)w->rx_n;
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
    if (tun_ready) more |= tun_burst(w, t);
    if (udp_ready && w->fatal_err == 0) more |= udp_burst(w, t, w->udp_fd);
    if (udp6_ready && w->fatal_err == 0) more |= udp_burst(w, t, w->udp6_fd);
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
