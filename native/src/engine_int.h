/*
 * The native engine's parts and the interfaces between them (not part of the C API in
 * overlayd.h; wireguard-go's tun/, conn/, device/ split is the model):
 *   tunside.c  the TUN side: reads (virtio_net_hdr, super-packets cut without copying),
 *              writes (plain, or coalesced by the GRO table: deliver, gro_flush)
 *   udpside.c  the UDP side: the send queue of one burst (UDP_SEGMENT messages of iovecs:
 *              queue_tx, udp_flush), receives (recvmmsg, UDP GRO split: udp_burst)
 *   policy.c   the forwarding policy of both directions, IPv4 and IPv6, and its ICMP
 *              errors (outbound, outbound_same, inbound): js-engine.ts's rules
 *   engine.c   the worker loop, the lifecycle, the counters, the clock
 * The batches between them: the TUN side hands each packet read to the policy, which
 * queues what passes into the UDP side's send queue (one burst: sent by udp_flush, called
 * by the loop after the TUN burst); the UDP side hands each datagram received to the
 * policy, which puts what passes into the TUN side's GRO table (written by gro_flush,
 * called by the loop after each UDP burst). Every function here runs on the worker's own
 * thread (struct worker is owned by it) unless it says otherwise.
 */
#ifndef OVERLAYD_ENGINE_INT_H
#define OVERLAYD_ENGINE_INT_H

#include "overlayd.h"
#include "internal.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <pthread.h>

/* Shared by the parts of the engine only: not exported from the addon. */
#define OVL_HIDDEN __attribute__((visibility("hidden")))

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
/* Receives of one recvmmsg with UDP_GRO (each buffer holds a 64 KB coalesced receive). */
#define GRO_MSGS 16u
#define GRO_BUF 65536u
#define CTL_BYTES 64u
_Static_assert(STUB_BYTES >= STUB_NEED && IOV_CAP >= IOV_NEED + BATCH, "room for one super-packet per burst at least");
_Static_assert(2u * GSO_SEGS <= 1024u, "a UDP_SEGMENT message has at most UIO_MAXIOV iovecs");

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
  bool udp_runs; /* UDP datagrams coalesce too (gso_type UDP_L4 writes); off for good once
                    the TUN refuses one */
  /* Lifetime: queued messages point into tun_buf and stubs (no copy); both are reused
   * only by the next tun_burst, after udp_flush sent (or gave up on) every message. */
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

/* What outbound() decided for a packet: the counter of its drop, or OVL_EC_TX (send). */
typedef enum ovl_engine_counter verdict_t;

/* ---- engine.c */
/* CLOCK_MONOTONIC in ns (vDSO, no system call): read only on rare paths (an ICMP error,
 * an offload refused, a turn while an offload is backing off), never per packet. A file
 * that compiles the engine's parts into itself (the fuzz targets) may define
 * OVL_ENGINE_MONO_NS as the name of its own `static uint64_t f(void)` clock instead. */
#ifdef OVL_ENGINE_MONO_NS
#define mono_ns OVL_ENGINE_MONO_NS
#else
OVL_HIDDEN uint64_t mono_ns(void);
#endif
/* Records the first fatal error of the thread (it stops at the end of its turn). */
OVL_HIDDEN void set_fatal(struct worker *w, int err, const char *syscall);

/* ---- tunside.c */
/* One packet written into the TUN as it is (counted: tun_tx, or the write error). */
OVL_HIDDEN void tun_write(struct worker *w, uint8_t *pkt, size_t len);
/* An inbound packet that passed the policy: into its flow's run in the GRO table, or
 * written. pkt must stay unchanged until gro_flush. */
OVL_HIDDEN void deliver(struct worker *w, uint8_t *pkt, size_t len);
/* Writes every run of the GRO table (after each batch of receives: they point into it). */
OVL_HIDDEN void gro_flush(struct worker *w);
/* TUN -> policy -> send queue: nonblocking reads until EAGAIN, OVL_ENGINE_BATCH reads or
 * a full queue/arena. The queue must be empty at the start (udp_flush); what it queued
 * points into the TUN arena and the header stubs: udp_flush before the next tun_burst.
 * Returns true when the burst hit a limit (more may be waiting). */
OVL_HIDDEN bool tun_burst(struct worker *w, const struct ovl_rtable *t);

/* ---- policy.c */
/* js-engine.ts outbound(): one packet read from the TUN (len bytes, all in its buffer),
 * queued for its peer or dropped. Returns the verdict, and *d when it is OVL_EC_TX. */
OVL_HIDDEN verdict_t outbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len, struct dest *d);
/* The peer that the route of pkt's destination (len bytes, IPv4 or IPv6) points at takes
 * partial TCP/UDP checksums (its route carries OVL_ROUTE_PARTIAL_CSUM). False without a
 * route, or for a packet too short to hold a destination. */
OVL_HIDDEN bool peer_takes_partial(struct worker *w, const struct ovl_rtable *t, const uint8_t *pkt, size_t len);
/* A segment cut from the super-packet whose first segment outbound() judged (v, d). */
OVL_HIDDEN void outbound_same(struct worker *w, const struct ovl_gso_seg *s, verdict_t v, const struct dest *d);
/* js-engine.ts inbound(): one datagram of len bytes (the buffer holds min(len, slot)) from
 * `from` (fromlen bytes of it): delivered into the TUN side or dropped. */
OVL_HIDDEN void inbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len, const union ovl_sa *from,
                        socklen_t fromlen);

/* ---- udpside.c */
/* Queues a datagram that passed the outbound checks for d (its underlay and peer
 * address): pkt (len bytes), then tail (tail_len bytes; NULL, 0 for a packet in one
 * piece). Both are sent from where they are: they must stay unchanged until udp_flush. */
OVL_HIDDEN void queue_tx(struct worker *w, uint8_t *pkt, size_t len, const uint8_t *tail, size_t tail_len,
                         const struct dest *d);
/* The send queue can take every datagram of one more TUN packet (OVL_GSO_SEGS_MAX). */
OVL_HIDDEN bool udp_tx_room(const struct worker *w);
/* Sends the queued messages (as few sendmmsg calls as the sockets allow), then empties
 * the queue: nothing points into the TUN side's buffers any more. */
OVL_HIDDEN void udp_flush(struct worker *w);
/* Forgets the queued messages without sending them (a test, a fuzz target). */
OVL_HIDDEN void tx_reset(struct worker *w);
/* One datagram (buf, n bytes) straight back to `from` on the socket of its family: a
 * packet too big or a fragmentation needed toward a peer. Counted tx / tx_error. */
OVL_HIDDEN void udp_reply(struct worker *w, const union ovl_sa *from, const uint8_t *buf, size_t n);
/* Peers -> policy, from socket fd (the IPv4 or the IPv6 one): one recvmmsg. What it
 * delivered points into udp_buf: gro_flush before the next udp_burst. Returns true when
 * the burst hit its limit (more may be waiting). */
OVL_HIDDEN bool udp_burst(struct worker *w, const struct ovl_rtable *t, int fd);

#endif
