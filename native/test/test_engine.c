/* engine.c driven without root: a SOCK_SEQPACKET socketpair stands for each TUN queue (the
 * test writes what the kernel would route into the TUN and reads what the engine writes
 * into it) and UDP sockets on 127.0.0.x stand for the underlay and the peers:
 *
 *   node (the engine): 127.0.0.1:P, TUN address 10.244.1.0, subnet 10.244.1.0/24, MTU 1400
 *   peer A 127.0.0.2:P owns 10.244.2.0/24;  peer B 127.0.0.4:P owns 10.244.4.0/24
 *   127.0.0.3:P and 127.0.0.2:<other port> are not peers
 *
 * Checks, as in test/e2e/forwarding.test.ts and js-engine.ts: forwarded bytes both ways
 * (TTL - 1, checksum as a full recomputation), batches in order, every drop by reason and
 * its exact counter, ICMP errors decoded, no ICMP about ICMP errors, route changes while
 * running, UDP send errors, multi-queue with SO_REUSEPORT, no spinning when idle, fatal
 * errors reported once, stop within 1 s. Every wait is bounded. */
#include "overlayd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "testpkt.h"

#define WAIT_MS 10000
#define STOP_MAX_SEC 1.0
#define MTU 1400u
#define QMAX 2u

#define IP(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))
#define TUN_ADDR IP(10, 244, 1, 0)
#define LOCAL_POD IP(10, 244, 1, 5)
#define POD_A IP(10, 244, 2, 7)
#define POD_B IP(10, 244, 4, 9)
#define NODE IP(127, 0, 0, 1)
#define PEER_A IP(127, 0, 0, 2)
#define STRANGER IP(127, 0, 0, 3)
#define PEER_B IP(127, 0, 0, 4)
#define PEER_BCAST IP(255, 255, 255, 255)

struct fx {
  uint32_t queues;
  int tun_eng[QMAX], tun_test[QMAX];
  int udp[QMAX];
  uint16_t port;
  int peer_a, peer_b; /* UDP sockets of the peers, bound to their address:P */
  struct ovl_routes *routes;
  struct ovl_engine_counters *ctr;
  struct ovl_engine *e;
  atomic_uint fatal_calls;
  _Atomic int fatal_err;
  _Atomic(const char *) fatal_syscall;
};

static void on_fatal(void *opaque, uint32_t queue, int err, const char *syscall) { /* engine thread */
  struct fx *f = opaque;
  (void)queue;
  atomic_store(&f->fatal_err, err);
  atomic_store(&f->fatal_syscall, syscall);
  atomic_fetch_add(&f->fatal_calls, 1);
}

static uint64_t ctr(struct fx *f, enum ovl_engine_counter i) {
  uint64_t s = 0;
  for (uint32_t q = 0; q < f->queues; q++) s += atomic_load_explicit(&f->ctr[q].v[i], memory_order_relaxed);
  return s;
}

/* Waits (bounded) until counter i reaches want. Counters are published at the end of a
 * thread's turn, so after its packets are out: wait for them, then compare. */
static int wait_ctr(struct fx *f, enum ovl_engine_counter i, uint64_t want) {
  for (double t0 = now_sec(); now_sec() - t0 < WAIT_MS / 1000.0;) {
    if (ctr(f, i) >= want) return 1;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  return ctr(f, i) >= want;
}

/* Waits for counter i to reach want and checks it is exactly that. */
static int ctr_is(struct fx *f, enum ovl_engine_counter i, uint64_t want) {
  return wait_ctr(f, i, want) && ctr(f, i) == want;
}

static int udp_bound(uint32_t ip, uint16_t port) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  TAP_ASSERT(s >= 0, "socket");
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(ip)};
  TAP_ASSERT(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind %s:%u: %s", inet_ntoa(sa.sin_addr), port,
             strerror(errno));
  return s;
}

static void send_from(int s, uint16_t port, const uint8_t *pkt, size_t len) {
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(NODE)};
  TAP_ASSERT(sendto(s, pkt, len, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)len, "sendto: %s", strerror(errno));
}

/* Receives one datagram / packet within timeout_ms; returns its length or -1. */
static ssize_t recv_within(int fd, uint8_t *buf, size_t cap, int timeout_ms, struct sockaddr_in *from) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) != 1) return -1;
  socklen_t fl = sizeof(*from);
  return from ? recvfrom(fd, buf, cap, MSG_DONTWAIT, (struct sockaddr *)from, &fl) : recv(fd, buf, cap, MSG_DONTWAIT);
}

/* The routes: 10.244.2.0/24 to peer_for_a (its OVL_ROUTE_* flags: flags_a), 10.244.4.0/24
 * to peer B, 10.244.5.0/24 to a broadcast address. */
static void set_routes_flags(struct fx *f, uint32_t peer_for_a, uint8_t flags_a) {
  struct ovl_route r[] = {
      {.net = IP(10, 244, 2, 0), .len = 24, .peer = peer_for_a, .flags = flags_a},
      {.net = IP(10, 244, 4, 0), .len = 24, .peer = PEER_B},
      {.net = IP(10, 244, 5, 0), .len = 24, .peer = PEER_BCAST}, /* sendto fails: EACCES */
  };
  TAP_ASSERT(ovl_routes_set(f->routes, r, 3) == 0, "routes set");
  /* every table before these retired: no thread still reads one, its next turn reads these */
  TAP_ASSERT(tp_routes_settled(f->routes, WAIT_MS), "the engine left the previous routes");
}
static void set_routes(struct fx *f, uint32_t peer_for_a) { set_routes_flags(f, peer_for_a, 0); }

static void fx_start_opts(struct fx *f, uint32_t queues, bool offloads, uint32_t icmp_rate, uint32_t icmp_burst);
static void fx_start(struct fx *f, uint32_t queues) { fx_start_opts(f, queues, false, 0, 0); }

/* offloads: the TUN stand-ins carry a virtio_net_hdr both ways, TUN GRO, UDP GSO and GRO.
 * icmp_rate / icmp_burst: the engine's ICMP rate limit (0 = no limit). */
static void fx_start_opts(struct fx *f, uint32_t queues, bool offloads, uint32_t icmp_rate, uint32_t icmp_burst) {
  memset(f, 0, sizeof(*f));
  f->queues = queues;
  for (uint32_t q = 0; q < queues; q++) {
    int sp[2];
    TAP_ASSERT(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0, "socketpair");
    f->tun_eng[q] = sp[0];
    f->tun_test[q] = sp[1];
    int fl = fcntl(sp[0], F_GETFL);
    TAP_ASSERT(fl >= 0 && fcntl(sp[0], F_SETFL, fl | O_NONBLOCK) == 0, "nonblocking");
  }
  const char *sc = NULL;
  int err = ovl_udp_open(f->udp, queues, NODE, 0, OVL_UDP_SOCKBUF_BYTES, &sc);
  TAP_REQUIRE(err == 0, "ovl_udp_open(%u sockets on 127.0.0.1:0): %d %s", queues, err, sc ? sc : "");
  struct sockaddr_in sa;
  socklen_t sl = sizeof(sa);
  TAP_ASSERT(getsockname(f->udp[0], (struct sockaddr *)&sa, &sl) == 0, "getsockname");
  f->port = ntohs(sa.sin_port);
  f->peer_a = udp_bound(PEER_A, f->port);
  f->peer_b = udp_bound(PEER_B, f->port);
  TAP_ASSERT(ovl_routes_create(&f->routes, queues) == 0, "routes domain");
  set_routes(f, PEER_A);
  f->ctr = aligned_alloc(64, sizeof(*f->ctr) * queues);
  TAP_ASSERT(f->ctr != NULL, "counters");
  memset(f->ctr, 0, sizeof(*f->ctr) * queues);
  struct ovl_engine_config cfg = {
      .queues = queues,
      .tun_fds = f->tun_eng,
      .udp_fds = f->udp,
      .port = f->port,
      .tun_address = TUN_ADDR,
      .tun_mtu = MTU,
      .subnet = IP(10, 244, 1, 0),
      .subnet_len = 24,
      .routes = f->routes,
      .counters = f->ctr,
      .on_fatal = on_fatal,
      .opaque = f,
      .tun_vnet_hdr = offloads,
      .tun_gro = offloads,
      .udp_gso = offloads,
      .udp_gro = offloads,
      .icmp_rate = icmp_rate,
      .icmp_burst = icmp_burst,
  };
  for (uint32_t q = 0; q < queues && offloads; q++)
    TAP_REQUIRE(ovl_udp_gso_probe(f->udp[q]) && ovl_udp_gro_enable(f->udp[q]), "UDP_SEGMENT and UDP_GRO taken");
  err = ovl_engine_start(&f->e, &cfg, &sc);
  TAP_REQUIRE(err == 0, "engine started with %u queue(s) on port %u: %d %s", queues, f->port, err, sc ? sc : "");
}

static double fx_stop(struct fx *f) {
  double t0 = now_sec();
  ovl_engine_stop(f->e);
  double dt = now_sec() - t0;
  for (uint32_t q = 0; q < f->queues; q++) {
    close(f->tun_eng[q]);
    if (f->tun_test[q] >= 0) close(f->tun_test[q]);
    close(f->udp[q]);
  }
  close(f->peer_a);
  close(f->peer_b);
  ovl_routes_destroy(f->routes);
  free(f->ctr);
  return dt;
}

static void inject(struct fx *f, uint32_t q, const uint8_t *pkt, size_t len) {
  TAP_ASSERT(write(f->tun_test[q], pkt, len) == (ssize_t)len, "write to the TUN stand-in: %s", strerror(errno));
}

/* Checks an ICMP error read from the TUN: from the TUN address to the offender's source,
 * type/code, both checksums, the quote of the offending packet as it was received. */
static int icmp_ok(const uint8_t *o, ssize_t n, uint8_t type, uint8_t code, const uint8_t *off, size_t off_len) {
  size_t hlen = (size_t)(off[0] & 0xf) * 4, quote = hlen + 8 < off_len ? hlen + 8 : off_len;
  return n == (ssize_t)(28 + quote) && o[0] == 0x45 && o[1] == 0xc0 && o[8] == 64 && o[9] == 1 &&
         rd32(o + 12) == TUN_ADDR && rd32(o + 16) == rd32(off + 12) && ref_sum(o, 20) == 0xffff &&
         ref_sum(o + 20, (size_t)n - 20) == 0xffff && o[20] == type && o[21] == code && memcmp(o + 28, off, quote) == 0;
}

/* Checks a fragmentation needed (type 3 code 4) received by a peer over UDP (`from`): sent
 * from the engine's socket (127.0.0.1:P), icmp_ok's checks, DF clear, bytes 4-5 of the
 * ICMP header zero and bytes 6-7 the next-hop MTU = the TUN MTU (RFC 1191). */
static int frag_needed_ok(const struct fx *f, const uint8_t *o, ssize_t n, const struct sockaddr_in *from,
                          const uint8_t *off, size_t off_len) {
  return n >= 28 && ntohl(from->sin_addr.s_addr) == NODE && ntohs(from->sin_port) == f->port &&
         icmp_ok(o, n, 3, 4, off, off_len) && rd16(o + 6) == 0 && rd16(o + 24) == 0 && rd16(o + 26) == MTU;
}

/* ---------------------------------------------------------------- outbound ------------- */

static void test_outbound(struct fx *f) {
  uint8_t p[100], want[100], got[2048];
  make_pkt(p, sizeof(p), 5, 17, 64, LOCAL_POD, POD_A);
  memcpy(want, p, sizeof(p));
  expect_forwarded(want);
  inject(f, 0, p, sizeof(p));
  struct sockaddr_in from;
  ssize_t n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS, &from);
  tap_ok(n == (ssize_t)sizeof(p) && memcmp(got, want, sizeof(p)) == 0,
         "outbound: the packet arrives at peer A whole, TTL 63, checksum as a full recomputation");
  tap_ok(n > 0 && ntohl(from.sin_addr.s_addr) == NODE && ntohs(from.sin_port) == f->port,
         "sent from the engine's socket, port P to port P");
  tap_ok(ctr_is(f, OVL_EC_TX, 1) && ctr_is(f, OVL_EC_TUN_RX, 1) && ctr_is(f, OVL_EC_TX_BYTES, sizeof(p)),
         "tun_rx 1, tx 1, tx_bytes %zu", sizeof(p));

  /* Bursts: 4 x 64 packets injected at once, all arrive in order and intact. */
  enum { ROUNDS = 4, BURST = 64, LEN = 60 };
  int ok = 1;
  uint64_t calls0 = ctr(f, OVL_EC_SENDMMSG_CALLS);
  for (int r = 0; r < ROUNDS; r++) {
    static uint8_t sent[BURST][LEN];
    for (int i = 0; i < BURST; i++) {
      make_pkt(sent[i], LEN, 5, 17, 64, LOCAL_POD, POD_A + (uint32_t)i);
      wr32(sent[i] + 24, (uint32_t)(r * BURST + i)); /* a sequence number in the payload */
      inject(f, 0, sent[i], LEN);
      expect_forwarded(sent[i]);
    }
    for (int i = 0; i < BURST && ok; i++) {
      n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS, NULL);
      ok &= n == LEN && memcmp(got, sent[i], LEN) == 0;
      if (!ok) tap_diag("round %d packet %d: got %zd bytes, seq %u", r, i, n, n >= 28 ? rd32(got + 24) : 0);
    }
  }
  tap_ok(ok, "%d packets in bursts of %d: every one at the peer, in order, intact", ROUNDS * BURST, BURST);
  uint64_t calls = ctr(f, OVL_EC_SENDMMSG_CALLS) - calls0;
  tap_ok(wait_ctr(f, OVL_EC_TX, 1 + ROUNDS * BURST) && calls <= ROUNDS * BURST,
         "tx counts them; %llu sendmmsg calls for %d packets (%.1f per call)", (unsigned long long)calls,
         ROUNDS * BURST, calls ? (double)(ROUNDS * BURST) / (double)calls : 0.0);
}

static void test_outbound_drops(struct fx *f) {
  uint8_t p[64], got[2048];
  uint64_t tun_tx0 = ctr(f, OVL_EC_TUN_TX), icmp0 = ctr(f, OVL_EC_ICMP_SENT);

  make_pkt(p, sizeof(p), 5, 17, 64, LOCAL_POD, IP(10, 77, 0, 5));
  inject(f, 0, p, sizeof(p));
  ssize_t n = recv_within(f->tun_test[0], got, sizeof(got), WAIT_MS, NULL);
  tap_ok(icmp_ok(got, n, 3, 0, p, sizeof(p)), "no route: ICMP net unreachable from the TUN address, quoting 28 bytes");
  tap_ok(ctr_is(f, OVL_EC_DROP_NO_ROUTE, 1) && ctr_is(f, OVL_EC_ICMP_SENT, icmp0 + 1) && ctr_is(f, OVL_EC_TUN_TX, tun_tx0 + 1),
         "drop_no_route 1, icmp_sent +1, tun_tx +1");

  make_pkt(p, sizeof(p), 5, 6, 1, LOCAL_POD, POD_A);
  inject(f, 0, p, sizeof(p));
  n = recv_within(f->tun_test[0], got, sizeof(got), WAIT_MS, NULL);
  tap_ok(icmp_ok(got, n, 11, 0, p, sizeof(p)), "TTL 1: ICMP time exceeded, quoting the packet as received (TTL 1)");
  tap_ok(ctr_is(f, OVL_EC_DROP_TTL, 1) && ctr_is(f, OVL_EC_ICMP_SENT, icmp0 + 2), "drop_ttl 1, icmp_sent +1");

  /* An ICMP error with no route: counted, but never answered. */
  make_pkt(p, sizeof(p), 5, 1, 64, LOCAL_POD, IP(10, 77, 0, 5));
  p[20] = 3;
  inject(f, 0, p, sizeof(p));
  /* A malformed packet (bad checksum), then a good one: only the good one reaches the peer. */
  uint8_t bad[64], good[64];
  make_pkt(bad, sizeof(bad), 5, 17, 64, LOCAL_POD, POD_A);
  bad[10] ^= 0x55;
  make_pkt(good, sizeof(good), 5, 17, 64, LOCAL_POD, POD_A);
  inject(f, 0, bad, sizeof(bad));
  inject(f, 0, good, sizeof(good));
  n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS, NULL);
  expect_forwarded(good);
  tap_ok(n == sizeof(good) && memcmp(got, good, sizeof(good)) == 0, "malformed dropped, the next packet forwarded");
  tap_ok(ctr_is(f, OVL_EC_DROP_MALFORMED, 1) && ctr_is(f, OVL_EC_DROP_NO_ROUTE, 2) && ctr(f, OVL_EC_ICMP_SENT) == icmp0 + 2,
         "drop_malformed 1; the ICMP error without a route: drop_no_route, no icmp_sent");
  tap_ok(recv_within(f->tun_test[0], got, sizeof(got), 100, NULL) < 0, "and nothing written into the TUN for either");

  /* UDP send errors: route to 255.255.255.255 without SO_BROADCAST (EACCES), in a batch
   * between good packets: the good ones go, the bad one counts as tx_error. */
  uint64_t tx0 = ctr(f, OVL_EC_TX), err0 = ctr(f, OVL_EC_TX_ERROR);
  uint8_t b[3][64];
  make_pkt(b[0], 64, 5, 17, 64, LOCAL_POD, POD_A);
  make_pkt(b[1], 64, 5, 17, 64, LOCAL_POD, IP(10, 244, 5, 1));
  make_pkt(b[2], 64, 5, 17, 64, LOCAL_POD, POD_A);
  for (int i = 0; i < 3; i++) inject(f, 0, b[i], 64);
  int ok = wait_ctr(f, OVL_EC_TX_ERROR, err0 + 1) && wait_ctr(f, OVL_EC_TX, tx0 + 2);
  ok &= recv_within(f->peer_a, got, sizeof(got), WAIT_MS, NULL) == 64 && rd32(got + 20) == rd32(b[0] + 20);
  ok &= recv_within(f->peer_a, got, sizeof(got), WAIT_MS, NULL) == 64 && rd32(got + 20) == rd32(b[2] + 20);
  tap_ok(ok && ctr(f, OVL_EC_TX_ERROR) == err0 + 1, "a failing send in a batch: tx_error +1, the others sent in order");
}

/* ---------------------------------------------------------------- inbound -------------- */

static void test_inbound(struct fx *f) {
  uint8_t p[120], want[120], got[4096];
  make_pkt(p, sizeof(p), 5, 17, 64, POD_A, LOCAL_POD);
  memcpy(want, p, sizeof(p));
  expect_forwarded(want);
  uint64_t rx0 = ctr(f, OVL_EC_RX), rxb0 = ctr(f, OVL_EC_RX_BYTES), tun_tx0 = ctr(f, OVL_EC_TUN_TX);
  send_from(f->peer_a, f->port, p, sizeof(p));
  ssize_t n = recv_within(f->tun_test[0], got, sizeof(got), WAIT_MS, NULL);
  tap_ok(n == (ssize_t)sizeof(p) && memcmp(got, want, sizeof(p)) == 0, "inbound: from peer A into the TUN, TTL 63");
  tap_ok(ctr_is(f, OVL_EC_TUN_TX, tun_tx0 + 1) && ctr_is(f, OVL_EC_RX, rx0 + 1) && ctr_is(f, OVL_EC_RX_BYTES, rxb0 + sizeof(p)),
         "rx +1, rx_bytes +%zu, tun_tx +1", sizeof(p));
}

static void test_inbound_drops(struct fx *f) {
  enum ovl_engine_counter watch[] = {OVL_EC_RX, OVL_EC_DROP_UNKNOWN_PEER, OVL_EC_DROP_MALFORMED, OVL_EC_DROP_SPOOFED,
                                     OVL_EC_DROP_WRONG_DST, OVL_EC_DROP_TOO_BIG, OVL_EC_DROP_TTL, OVL_EC_ICMP_SENT,
                                     OVL_EC_TUN_TX, OVL_EC_RX_BYTES};
  enum { NW = sizeof(watch) / sizeof(watch[0]) };
  uint64_t before[NW];
  for (int i = 0; i < NW; i++) before[i] = ctr(f, watch[i]);

  static uint8_t good[64], p[3000], got[4096];
  make_pkt(good, sizeof(good), 5, 17, 64, POD_A, LOCAL_POD);
  uint64_t bytes = 0;
  int sent = 0;
#define SEND(sock, pkt, len) (send_from((sock), f->port, (pkt), (len)), bytes += (len), sent++)

  int stranger = udp_bound(STRANGER, f->port);
  int wrong_port = udp_bound(PEER_A, 0);
  SEND(stranger, good, sizeof(good));   /* not a peer */
  SEND(wrong_port, good, sizeof(good)); /* a peer's address, another port */
  close(stranger);
  close(wrong_port);

  SEND(f->peer_a, good, 15); /* truncated */
  memcpy(p, good, sizeof(good));
  p[0] = 0x65;
  SEND(f->peer_a, p, sizeof(good)); /* version 6 */
  memcpy(p, good, sizeof(good));
  memset(p + sizeof(good), 0, 3);
  SEND(f->peer_a, p, sizeof(good) + 3); /* longer than its total length */
  SEND(f->peer_a, (const uint8_t *)"garbage, not a packet at all", 28);

  make_pkt(p, 64, 5, 17, 64, POD_B, LOCAL_POD); /* peer B's pod, sent by A */
  SEND(f->peer_a, p, 64);
  make_pkt(p, 64, 5, 17, 64, IP(10, 77, 0, 1), LOCAL_POD); /* source nobody owns */
  SEND(f->peer_a, p, 64);
  make_pkt(p, 64, 5, 17, 64, POD_A, IP(10, 244, 9, 1)); /* not for this node */
  SEND(f->peer_a, p, 64);
  make_pkt(p, MTU + 1, 5, 17, 64, POD_A, LOCAL_POD); /* one byte over the TUN MTU */
  SEND(f->peer_a, p, MTU + 1);
  uint8_t big1[MTU + 1];
  memcpy(big1, p, sizeof(big1));
  make_pkt(p, 3000, 5, 17, 64, POD_A, LOCAL_POD); /* larger than the receive buffer too */
  SEND(f->peer_a, p, 3000);
  uint8_t ttl1[64];
  make_pkt(ttl1, 64, 5, 17, 1, POD_A, LOCAL_POD); /* TTL 1: time exceeded back into the TUN */
  SEND(f->peer_a, ttl1, 64);
  SEND(f->peer_a, good, sizeof(good)); /* legitimate */
#undef SEND

  /* Wait for every counter to reach its expected value (a turn's counters are published
   * one after the other), then read them all. */
  const uint64_t expect[NW] = {(uint64_t)sent, 2, 4, 2, 1, 2, 1, 3, 2, bytes};
  int arrived = 1;
  for (int i = 0; i < NW; i++) arrived &= wait_ctr(f, watch[i], before[i] + expect[i]);
  uint64_t d[NW];
  for (int i = 0; i < NW; i++) d[i] = ctr(f, watch[i]) - before[i];
  tap_ok(arrived && d[0] == (uint64_t)sent, "all %d datagrams received (rx +%llu)", sent, (unsigned long long)d[0]);
  tap_ok(d[9] == bytes, "rx_bytes counts real lengths, also of the truncated 3000-byte one (%llu)",
         (unsigned long long)d[9]);
  tap_ok(d[1] == 2, "drop_unknown_peer 2 (a stranger; a peer's address from another port): %llu",
         (unsigned long long)d[1]);
  tap_ok(d[2] == 4, "drop_malformed 4: %llu", (unsigned long long)d[2]);
  tap_ok(d[3] == 2, "drop_spoofed 2 (another peer's source; a source without route): %llu", (unsigned long long)d[3]);
  tap_ok(d[4] == 1, "drop_wrong_dst 1: %llu", (unsigned long long)d[4]);
  tap_ok(d[5] == 2, "drop_too_big 2 (MTU+1; 3000 bytes, truncated on receive): %llu", (unsigned long long)d[5]);
  tap_ok(d[6] == 1 && d[7] == 3, "drop_ttl 1, icmp_sent 3 (time exceeded; two fragmentation needed)");
  tap_ok(d[8] == 2, "tun_tx 2: the ICMP error and the legitimate packet");
  /* Both are in the TUN, in the order the datagrams were processed. */
  int seen_icmp = 0, seen_good = 0;
  expect_forwarded(good);
  for (int i = 0; i < 2; i++) {
    ssize_t n = recv_within(f->tun_test[0], got, sizeof(got), WAIT_MS, NULL);
    if (n == sizeof(good) && memcmp(got, good, sizeof(good)) == 0) seen_good++;
    else if (icmp_ok(got, n, 11, 0, ttl1, sizeof(ttl1))) seen_icmp++;
  }
  tap_ok(seen_icmp == 1 && seen_good == 1, "the TUN got the time exceeded (to peer A's pod) and the good packet");
  /* the two too-big ones (DF set by make_pkt): fragmentation needed back to A, in order */
  struct sockaddr_in from;
  ssize_t n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS, &from);
  int ok = frag_needed_ok(f, got, n, &from, big1, sizeof(big1));
  n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS, &from);
  ok &= frag_needed_ok(f, got, n, &from, p, 3000);
  tap_ok(ok, "peer A got fragmentation needed (MTU %u) for the MTU+1 and the truncated 3000-byte datagram", MTU);
}

/* Inbound IPv4 longer than the TUN MTU: with DF, fragmentation needed (RFC 1191, next-hop
 * MTU = the TUN MTU) back over UDP to the peer it came from, counted icmp_sent and tx; no
 * answer without DF, about an ICMP error, or for a non-first fragment (RFC 1812). Each
 * silent case is followed by a DF marker whose answer must be the next datagram A gets
 * (the engine handles one socket's datagrams in order), so "nothing" is proven, not timed. */
static void test_inbound_frag_needed(struct fx *f) {
  static uint8_t p[MTU + 100], marker[MTU + 1], got[4096];
  struct sockaddr_in from;
  uint64_t tb0 = ctr(f, OVL_EC_DROP_TOO_BIG), icmp0 = ctr(f, OVL_EC_ICMP_SENT), tx0 = ctr(f, OVL_EC_TX),
           tun_tx0 = ctr(f, OVL_EC_TUN_TX);
  make_pkt(p, MTU + 100, 5, 17, 64, POD_A, LOCAL_POD);
  send_from(f->peer_a, f->port, p, MTU + 100);
  ssize_t n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS, &from);
  tap_ok(frag_needed_ok(f, got, n, &from, p, MTU + 100) && rd32(got + 16) == POD_A,
         "DF, %u bytes from A: one fragmentation needed (MTU %u) from 10.244.1.0 to A's pod, header + 8 bytes quoted",
         MTU + 100, MTU);
  tap_ok(ctr_is(f, OVL_EC_DROP_TOO_BIG, tb0 + 1) && ctr_is(f, OVL_EC_ICMP_SENT, icmp0 + 1) && ctr_is(f, OVL_EC_TX, tx0 + 1),
         "drop_too_big +1, icmp_sent +1, tx +1 (the answer)");

  int cases = 0, quiet = 1;
  for (int c = 0; c < 3; c++) {
    make_pkt(p, MTU + 100, 5, c == 1 ? 1 : 17, 64, POD_A, LOCAL_POD);
    if (c == 0) wr16(p + 6, 0); /* no DF */
    if (c == 1) p[20] = 3;      /* an ICMP destination unreachable (an error itself) */
    if (c == 2) wr16(p + 6, 0x4000 | 100); /* DF, but a non-first fragment */
    wr16(p + 10, ref_header_checksum(p, 20));
    send_from(f->peer_a, f->port, p, MTU + 100);
    make_pkt(marker, sizeof(marker), 5, 17, 64, POD_A, LOCAL_POD);
    send_from(f->peer_a, f->port, marker, sizeof(marker));
    n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS, &from);
    quiet &= frag_needed_ok(f, got, n, &from, marker, sizeof(marker));
    cases++;
  }
  tap_ok(quiet, "no answer without DF, about an ICMP error, or for a non-first fragment (the next is the marker's)");
  tap_ok(ctr_is(f, OVL_EC_DROP_TOO_BIG, tb0 + 1 + 2 * (uint64_t)cases) && ctr_is(f, OVL_EC_ICMP_SENT, icmp0 + 1 + (uint64_t)cases),
         "each still counted drop_too_big; icmp_sent only for the markers");
  tap_ok(recv_within(f->peer_a, got, sizeof(got), 100, NULL) < 0 && ctr(f, OVL_EC_TUN_TX) == tun_tx0,
         "nothing more to A, nothing into the TUN");
}

/* Fragmentation needed through the shared ICMP rate limit (1 token, refilled at 1 per
 * second): of 3 DF too-big datagrams each is drop_too_big and either answered (icmp_sent,
 * one datagram to A) or drop_icmp_ratelimit; at most burst + rate * elapsed are answered,
 * elapsed measured by the test around it all (an over-estimate of the engine's: a bound,
 * not a speed). A gets exactly icmp_sent datagrams. */
static void test_frag_needed_ratelimit(void) {
  struct fx f;
  fx_start_opts(&f, 1, false, 1, 1);
  static uint8_t p[MTU + 1], got[4096];
  double t0 = now_sec();
  for (int i = 0; i < 3; i++) {
    make_pkt(p, sizeof(p), 5, 17, 64, POD_A, LOCAL_POD);
    send_from(f.peer_a, f.port, p, sizeof(p));
  }
  int settled = ctr_is(&f, OVL_EC_DROP_TOO_BIG, 3);
  uint64_t sent = ctr(&f, OVL_EC_ICMP_SENT), limited = ctr(&f, OVL_EC_DROP_ICMP_RATELIMIT);
  double elapsed = now_sec() - t0;
  tap_ok(settled && sent + limited == 3 && sent >= 1, "3 DF too-big: drop_too_big 3, icmp_sent %llu + drop_icmp_ratelimit %llu == 3",
         (unsigned long long)sent, (unsigned long long)limited);
  tap_ok((double)sent <= 1.0 + elapsed, "at most burst + rate * elapsed answered (%llu in %.2f s)", (unsigned long long)sent, elapsed);
  uint64_t n = 0;
  struct sockaddr_in from;
  for (uint64_t i = 0; i < sent; i++) n += recv_within(f.peer_a, got, sizeof(got), WAIT_MS, &from) > 0 && got[20] == 3 && got[21] == 4;
  tap_ok(n == sent && ctr(&f, OVL_EC_TX) == sent && recv_within(f.peer_a, got, sizeof(got), 100, NULL) < 0,
         "A got exactly the %llu answered (tx %llu); nothing for the suppressed", (unsigned long long)sent,
         (unsigned long long)ctr(&f, OVL_EC_TX));
  (void)fx_stop(&f);
}

/* ---------------------------------------------------------------- routes, idle --------- */

static void test_route_change(struct fx *f) {
  uint8_t p[64], got[2048];
  set_routes(f, PEER_B); /* 10.244.2.0/24 moves from A to B */
  make_pkt(p, sizeof(p), 5, 17, 64, LOCAL_POD, POD_A);
  inject(f, 0, p, sizeof(p));
  ssize_t n = recv_within(f->peer_b, got, sizeof(got), WAIT_MS, NULL);
  expect_forwarded(p);
  tap_ok(n == sizeof(p) && memcmp(got, p, sizeof(p)) == 0, "after a route change the next packet goes to the new peer");
  uint64_t unknown0 = ctr(f, OVL_EC_DROP_UNKNOWN_PEER), spoof0 = ctr(f, OVL_EC_DROP_SPOOFED);
  make_pkt(p, sizeof(p), 5, 17, 64, POD_A, LOCAL_POD);
  send_from(f->peer_a, f->port, p, sizeof(p)); /* A owns nothing now: not a peer */
  send_from(f->peer_b, f->port, p, sizeof(p)); /* B owns 10.244.2.0/24 now: forwarded */
  tap_ok(wait_ctr(f, OVL_EC_DROP_UNKNOWN_PEER, unknown0 + 1) && recv_within(f->tun_test[0], got, sizeof(got), WAIT_MS, NULL) == sizeof(p),
         "inbound follows too: A is no peer any more, B's datagram for its new subnet is forwarded");
  tap_ok(ctr(f, OVL_EC_DROP_SPOOFED) == spoof0, "and nothing counted as spoofed");
  set_routes(f, PEER_A);
}

static void test_idle(struct fx *f) {
  uint64_t p0 = ctr(f, OVL_EC_POLLS);
  struct timespec ts = {0, 300 * 1000000L};
  nanosleep(&ts, NULL);
  uint64_t p1 = ctr(f, OVL_EC_POLLS);
  tap_ok(p1 - p0 <= 2, "idle for 300 ms: %llu polls (no spinning)", (unsigned long long)(p1 - p0));
  tap_ok(atomic_load(&f->fatal_calls) == 0, "no fatal error so far");
}

/* ---------------------------------------------------------------- multi-queue ---------- */

static void test_multi_queue(void) {
  struct fx f;
  fx_start(&f, 2);
  uint8_t p[80], got[2048];
  int ok = 1;
  for (uint32_t q = 0; q < 2; q++) {
    make_pkt(p, sizeof(p), 5, 17, 64, LOCAL_POD, POD_A);
    inject(&f, q, p, sizeof(p));
    expect_forwarded(p);
    ok &= recv_within(f.peer_a, got, sizeof(got), WAIT_MS, NULL) == sizeof(p) && memcmp(got, p, sizeof(p)) == 0;
  }
  wait_ctr(&f, OVL_EC_TX, 2);
  tap_ok(ok && atomic_load(&f.ctr[0].v[OVL_EC_TX]) == 1 && atomic_load(&f.ctr[1].v[OVL_EC_TX]) == 1,
         "2 queues: each TUN queue forwarded by its own thread, counted in its own block");
  /* Inbound: the kernel picks one of the SO_REUSEPORT sockets; the packet comes out of that
   * queue's TUN fd. */
  make_pkt(p, sizeof(p), 5, 17, 64, POD_A, LOCAL_POD);
  send_from(f.peer_a, f.port, p, sizeof(p));
  struct pollfd pf[2] = {{.fd = f.tun_test[0], .events = POLLIN}, {.fd = f.tun_test[1], .events = POLLIN}};
  int got_one = poll(pf, 2, WAIT_MS) > 0;
  ssize_t n = -1;
  for (int q = 0; q < 2 && got_one; q++)
    if (pf[q].revents & POLLIN) n = recv(f.tun_test[q], got, sizeof(got), MSG_DONTWAIT);
  tap_ok(n == sizeof(p), "2 queues: inbound via either socket of the SO_REUSEPORT group");

  int held[2];
  const char *sc = NULL;
  int err = ovl_udp_open(held, 2, NODE, f.port, 0, &sc);
  tap_ok(err == -EADDRINUSE && sc && strcmp(sc, "bind") == 0, "a second group on the same port: EADDRINUSE from bind (%d %s)",
         err, sc ? sc : "");
  err = ovl_udp_open(held, 1, NODE, f.port, 0, &sc);
  tap_ok(err == -EADDRINUSE, "a single socket on the same port: EADDRINUSE");
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "2 queues stopped and joined in %.3f s", dt);
}

/* ---------------------------------------------------------------- fatal, config -------- */

static void test_fatal(void) {
  struct fx f;
  fx_start(&f, 1);
  close(f.tun_test[0]); /* the "device" goes away: EOF on the engine's side */
  f.tun_test[0] = -1;
  for (double t0 = now_sec(); now_sec() - t0 < WAIT_MS / 1000.0 && atomic_load(&f.fatal_calls) == 0;) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  const char *sc = atomic_load(&f.fatal_syscall);
  tap_ok(atomic_load(&f.fatal_calls) == 1 && atomic_load(&f.fatal_err) == ENOTCONN && sc && strcmp(sc, "read(tun)") == 0,
         "EOF on the TUN fd: on_fatal once (ENOTCONN, read(tun))");
  double dt = fx_stop(&f);
  tap_ok(atomic_load(&f.fatal_calls) == 1, "exactly once (%u)", atomic_load(&f.fatal_calls));
  tap_ok(dt < STOP_MAX_SEC, "stop after a fatal error joins in %.3f s", dt);
}

static void test_config(void) {
  struct ovl_engine *e = NULL;
  const char *sc = NULL;
  int fds[1] = {0};
  struct ovl_routes *r;
  TAP_ASSERT(ovl_routes_create(&r, 1) == 0, "routes");
  struct ovl_engine_counters *c = aligned_alloc(64, sizeof(*c));
  TAP_ASSERT(c != NULL, "counters");
  struct ovl_engine_config base = {.queues = 1, .tun_fds = fds, .udp_fds = fds, .tun_mtu = 1400, .subnet = IP(10, 244, 1, 0),
                                   .subnet_len = 24, .routes = r, .counters = c};
  struct ovl_engine_config cfg = base;
  cfg.queues = 0;
  tap_ok(ovl_engine_start(&e, &cfg, &sc) == -EINVAL && strcmp(sc, "config") == 0, "0 queues: EINVAL (config)");
  cfg = base;
  cfg.queues = OVL_ENGINE_QUEUES_MAX + 1;
  tap_ok(ovl_engine_start(&e, &cfg, &sc) == -EINVAL, "%u queues: EINVAL", OVL_ENGINE_QUEUES_MAX + 1);
  cfg = base;
  cfg.subnet = IP(10, 244, 1, 1);
  tap_ok(ovl_engine_start(&e, &cfg, &sc) == -EINVAL, "subnet with host bits: EINVAL");
  cfg = base;
  cfg.tun_mtu = 67;
  tap_ok(ovl_engine_start(&e, &cfg, &sc) == -EINVAL, "MTU 67: EINVAL");
  free(c);
  ovl_routes_destroy(r);
  tap_ok(strcmp(ovl_engine_counter_names[OVL_EC_TUN_RX], "tun_rx") == 0 &&
             strcmp(ovl_engine_counter_names[OVL_EC_TX_ERROR], "tx_error") == 0 &&
             strcmp(ovl_engine_counter_names[OVL_EC_DROP_ICMP_RATELIMIT], "drop_icmp_ratelimit") == 0 &&
             strcmp(ovl_engine_counter_names[OVL_EC_UDP_GSO_REENABLE], "udp_gso_reenable") == 0 &&
             strcmp(ovl_engine_counter_names[OVL_EC_TUN_GRO_REENABLE], "tun_gro_reenable") == 0 &&
             strcmp(ovl_engine_counter_names[OVL_EC_TUN_USO_READS], "tun_uso_reads") == 0 &&
             strcmp(ovl_engine_counter_names[OVL_EC_COUNT - 1], "csum_partial_received") == 0,
         "counter names");
  bool named = true;
  for (uint32_t i = 0; i < OVL_EC_COUNT; i++) named &= ovl_engine_counter_names[i] != NULL;
  tap_ok(named, "every counter has a name");
}

/* ---------------------------------------------------------------- offloads ------------- */

/* A TCP segment of plen payload bytes (payload from `data`), from src to dst, seq, ACK. */
static size_t tcp_seg(uint8_t *p, uint32_t src, uint32_t dst, uint32_t seq, const uint8_t *data, size_t plen,
                      uint16_t id) {
  size_t len = 40 + plen;
  memset(p, 0, 40);
  p[0] = 0x45;
  wr16(p + 2, (uint32_t)len);
  wr16(p + 4, id);
  wr16(p + 6, 0x4000);
  p[8] = 64;
  p[9] = 6;
  wr32(p + 12, src);
  wr32(p + 16, dst);
  wr16(p + 10, ref_header_checksum(p, 20));
  wr16(p + 20, 40000);
  wr16(p + 22, 5001);
  wr32(p + 24, seq);
  wr32(p + 28, 1);
  p[32] = 0x50;
  p[33] = 0x10;
  wr16(p + 34, 500);
  memcpy(p + 40, data, plen);
  uint8_t ph[12];
  memcpy(ph, p + 12, 8);
  ph[8] = 0;
  ph[9] = 6;
  wr16(ph + 10, (uint32_t)(len - 20));
  uint64_t sum = (uint64_t)ref_sum(ph, 12) + ref_sum(p + 20, len - 20);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  wr16(p + 36, ~sum & 0xffff);
  return len;
}

/* Sends len bytes of datagrams of seg bytes each (the last shorter) from sock to the node
 * as one UDP_SEGMENT message (the engine receives them at once with UDP_GRO). */
static void send_gso(struct fx *f, int sock, uint8_t *pkt, size_t len, uint16_t seg) {
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(f->port), .sin_addr.s_addr = htonl(NODE)};
  struct iovec iov = {.iov_base = pkt, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctl;
  struct msghdr m = {.msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = &iov, .msg_iovlen = 1,
                     .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = 103; /* UDP_SEGMENT */
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  memcpy(CMSG_DATA(c), &seg, sizeof(seg));
  TAP_ASSERT(sendmsg(sock, &m, 0) == (ssize_t)len, "sendmsg(UDP_SEGMENT): %s", strerror(errno));
}

static void test_offloads(void) {
  struct fx f;
  fx_start_opts(&f, 1, true, 0, 0);
  static uint8_t data[20000], pkt[70000], got[70000];
  for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)rnd();

  /* outbound: a 10-segment super-packet read from the TUN goes to peer A as 10 datagrams */
  const size_t mss = 1000, plen = 9 * mss + 500;
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_TCPV4, .hdr_len = 40,
                           .gso_size = (uint16_t)mss, .csum_start = 20, .csum_offset = 16};
  memcpy(pkt, &h, OVL_VNET_HDR_LEN);
  size_t len = tcp_seg(pkt + OVL_VNET_HDR_LEN, LOCAL_POD, POD_A, 7000, data, plen, 100);
  inject(&f, 0, pkt, OVL_VNET_HDR_LEN + len);
  int ok = 1, n = 0;
  size_t done = 0;
  for (; n < 10; n++) {
    struct sockaddr_in from;
    ssize_t r = recv_within(f.peer_a, got, sizeof(got), 2000, &from);
    if (r < 0) break;
    size_t gp = n < 9 ? mss : 500;
    ok &= (size_t)r == 40 + gp && rd16(got + 2) == r && got[8] == 63 && ref_sum(got, 20) == 0xffff &&
          rd32(got + 24) == 7000 + done && memcmp(got + 40, data + done, gp) == 0 && ntohs(from.sin_port) == f.port;
    uint8_t ph[12];
    memcpy(ph, got + 12, 8);
    ph[8] = 0;
    ph[9] = 6;
    wr16(ph + 10, (uint32_t)(r - 20));
    uint64_t sum = (uint64_t)ref_sum(ph, 12) + ref_sum(got + 20, (size_t)r - 20);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    ok &= sum == 0xffff;
    done += gp;
  }
  tap_ok(n == 10 && ok, "offloads: a TUN super-packet of %zu bytes reaches the peer as 10 plain datagrams, TTL - 1, "
                        "checksums valid (%d received)", len, n);
  tap_ok(ctr_is(&f, OVL_EC_TUN_GSO_READS, 1) && ctr_is(&f, OVL_EC_TX, 10) && ctr(&f, OVL_EC_UDP_GSO_SENDS) >= 1 &&
             ctr(&f, OVL_EC_TUN_RX) == 10,
         "counted: 1 super-packet read, tun_rx 10, tx 10, %llu UDP_SEGMENT send(s)",
         (unsigned long long)ctr(&f, OVL_EC_UDP_GSO_SENDS));

  /* inbound: peer A sends 10 segments as one UDP_SEGMENT message; with UDP_GRO the engine
   * receives them at once and writes one super-packet into the TUN */
  size_t off = 0, slen = 0;
  for (int i = 0; i < 10; i++) {
    slen = tcp_seg(pkt + off, POD_A, LOCAL_POD, 90000 + (uint32_t)(i * mss), data + i * mss, i < 9 ? mss : 500,
                   (uint16_t)(200 + i));
    off += slen;
  }
  send_gso(&f, f.peer_a, pkt, off, (uint16_t)(40 + mss));
  ssize_t r = recv_within(f.tun_test[0], got, sizeof(got), 2000, NULL);
  struct ovl_vnet_hdr gh;
  memcpy(&gh, got, sizeof(gh));
  const uint8_t *sp = got + OVL_VNET_HDR_LEN;
  tap_ok(r == (ssize_t)(OVL_VNET_HDR_LEN + 40 + plen) && gh.gso_type == OVL_VNET_GSO_TCPV4 && gh.gso_size == mss &&
             gh.hdr_len == 40 && gh.csum_start == 20 && gh.csum_offset == 16 && gh.flags == OVL_VNET_F_NEEDS_CSUM,
         "offloads: the 10 segments come out of the TUN stand-in as one super-packet (%zd bytes, gso_size %u)", r,
         gh.gso_size);
  tap_ok(r > 40 && rd16(sp + 2) == r - OVL_VNET_HDR_LEN && sp[8] == 63 && ref_sum(sp, 20) == 0xffff &&
             rd32(sp + 24) == 90000 && memcmp(sp + 40, data, plen) == 0,
         "super-packet: total length, TTL - 1, header checksum, first seq, payload in order");
  tap_ok(ctr_is(&f, OVL_EC_RX, 10) && ctr_is(&f, OVL_EC_TUN_TX, 10) && ctr_is(&f, OVL_EC_TUN_GRO_WRITES, 1) &&
             ctr(&f, OVL_EC_UDP_GRO_RECVS) == 1,
         "counted: rx 10, tun_tx 10, 1 GRO receive, 1 coalesced write");
  /* a plain packet in between still goes through as it came, with an empty header */
  uint8_t u[100];
  make_pkt(u, 60, 5, 17, 64, POD_A, LOCAL_POD);
  send_from(f.peer_a, f.port, u, 60);
  r = recv_within(f.tun_test[0], got, sizeof(got), 2000, NULL);
  memcpy(&gh, got, sizeof(gh));
  expect_forwarded(u);
  tap_ok(r == OVL_VNET_HDR_LEN + 60 && gh.gso_type == 0 && gh.flags == 0 && memcmp(got + OVL_VNET_HDR_LEN, u, 60) == 0,
         "offloads: a UDP packet is written plainly behind an all-zero virtio_net_hdr");
  tap_ok(ctr(&f, OVL_EC_DROP_MALFORMED) == 0 && ctr(&f, OVL_EC_UDP_GSO_FALLBACK) == 0 &&
             ctr(&f, OVL_EC_TUN_GRO_FALLBACK) == 0,
         "offloads: nothing malformed, no fallback");
  fx_stop(&f);
}

/* Policy once per super-packet: a 64 KB super-packet (48 segments of MSS 1360: 1400-byte packets, the TUN MTU) with TTL 1 gives ONE
 * ICMP time exceeded, one without a route ONE net unreachable; every segment is counted. */
static void test_super_policy(void) {
  struct fx f;
  fx_start_opts(&f, 1, true, 0, 0);
  static uint8_t data[65536], pkt[70000], got[2048];
  const size_t mss = 1360, plen = 48 * mss;
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_TCPV4, .hdr_len = 40,
                           .gso_size = (uint16_t)mss, .csum_start = 20, .csum_offset = 16};
  uint8_t *ip = pkt + OVL_VNET_HDR_LEN;
  memcpy(pkt, &h, OVL_VNET_HDR_LEN);
  size_t len = tcp_seg(ip, LOCAL_POD, POD_A, 1, data, plen, 1);
  ip[8] = 1;
  wr16(ip + 10, ref_header_checksum(ip, 20));
  inject(&f, 0, pkt, OVL_VNET_HDR_LEN + len);
  len = tcp_seg(ip, LOCAL_POD, IP(10, 77, 0, 5), 1, data, plen, 2);
  inject(&f, 0, pkt, OVL_VNET_HDR_LEN + len);
  TAP_ASSERT(len == 65320, "super-packet of 65320 bytes");
  ssize_t n1 = recv_within(f.tun_test[0], got, sizeof(got), WAIT_MS, NULL);
  int first = n1 > (ssize_t)OVL_VNET_HDR_LEN && got[OVL_VNET_HDR_LEN + 20] == 11;
  ssize_t n2 = recv_within(f.tun_test[0], got, sizeof(got), WAIT_MS, NULL);
  int second = n2 > (ssize_t)OVL_VNET_HDR_LEN && got[OVL_VNET_HDR_LEN + 20] == 3;
  tap_ok(first && second, "a TTL-1 super-packet: time exceeded; a super-packet without a route: net unreachable");
  tap_ok(ctr_is(&f, OVL_EC_DROP_TTL, 48) && ctr_is(&f, OVL_EC_DROP_NO_ROUTE, 48) && ctr(&f, OVL_EC_TUN_RX) == 96 &&
             ctr(&f, OVL_EC_ICMP_SENT) == 2 && ctr(&f, OVL_EC_TUN_TX) == 2 && ctr(&f, OVL_EC_TUN_GSO_READS) == 2,
         "2 x 48 segments: drop_ttl 48, drop_no_route 48, tun_rx 96, exactly 2 ICMP errors (icmp_sent %llu, tun_tx %llu)",
         (unsigned long long)ctr(&f, OVL_EC_ICMP_SENT), (unsigned long long)ctr(&f, OVL_EC_TUN_TX));
  /* a gso_size that would cut segments larger than the TUN MTU: dropped whole, never sent */
  len = tcp_seg(ip, LOCAL_POD, POD_A, 1, data, 3 * 1400, 3);
  h.gso_size = 1400; /* 40 + 1400 > MTU 1400 */
  memcpy(pkt, &h, OVL_VNET_HDR_LEN);
  inject(&f, 0, pkt, OVL_VNET_HDR_LEN + len);
  tap_ok(ctr_is(&f, OVL_EC_DROP_TUN_OVERSIZE, 1) && ctr(&f, OVL_EC_TUN_RX) == 97 && ctr(&f, OVL_EC_TX) == 0,
         "a super-packet whose segments would exceed the TUN MTU: drop_tun_oversize, nothing sent");
  fx_stop(&f);
}

/* ---------------------------------------------------------------- partial checksums ---- */

/* Receives the datagrams cut from a super-packet (IPv4, headers hdr bytes, payload data of
 * plen bytes in pieces of mss) at sock: TTL - 1, header checksum, the payload in order,
 * TCP: sequence numbers from seq; the TCP/UDP checksum field the datagram's pseudo-header
 * sum (partial) or a valid full checksum. Returns how many were right. */
static int recv_cut(int sock, size_t hdr, size_t plen, size_t mss, uint32_t seq, const uint8_t *data, bool partial) {
  static uint8_t got[2048];
  size_t n = (plen + mss - 1) / mss, done = 0;
  int good = 0;
  for (size_t i = 0; i < n; i++) {
    ssize_t r = recv_within(sock, got, sizeof(got), 2000, NULL);
    if (r < 0) break;
    size_t gp = i + 1 < n ? mss : plen - done;
    bool tcp = got[9] == 6;
    bool ok = (size_t)r == hdr + gp && rd16(got + 2) == r && got[8] == 63 && ref_sum(got, 20) == 0xffff &&
              memcmp(got + hdr, data + done, gp) == 0 && (!tcp || rd32(got + 24) == seq + done);
    ok &= partial ? rd16(got + 20 + tp_csum_off(got[9])) == tp_pseudo(got, (size_t)r) : tp_l4_ok(got, (size_t)r);
    good += ok;
    done += gp;
  }
  return good;
}

/* With the offloads (a TUN stand-in with virtio_net_hdr): toward a peer whose route has
 * OVL_ROUTE_PARTIAL_CSUM, TCP and UDP super-packets are cut with partial checksums and a
 * NEEDS_CSUM packet goes as it is; toward another peer every checksum is full. Inbound
 * partial packets are written with NEEDS_CSUM at their L4 offset; partial TCP segments
 * coalesce. */
static void test_partial_vnet(void) {
  struct fx f;
  fx_start_opts(&f, 1, true, 0, 0);
  set_routes_flags(&f, PEER_A, OVL_ROUTE_PARTIAL_CSUM);
  static uint8_t data[20000], pkt[70000], got[70000], want[2048];
  for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)rnd();
  const size_t mss = 1000, plen = 9 * mss + 500;
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_TCPV4, .hdr_len = 40,
                           .gso_size = (uint16_t)mss, .csum_start = 20, .csum_offset = 16};
  uint8_t *ip = pkt + OVL_VNET_HDR_LEN;
  for (int to_b = 0; to_b <= 1; to_b++) {
    memcpy(pkt, &h, OVL_VNET_HDR_LEN);
    size_t len = tcp_seg(ip, LOCAL_POD, to_b ? POD_B : POD_A, 7000, data, plen, 100);
    tp_set_partial(ip, len); /* as the kernel hands a TSO super-packet over */
    inject(&f, 0, pkt, OVL_VNET_HDR_LEN + len);
    int good = recv_cut(to_b ? f.peer_b : f.peer_a, 40, plen, mss, 7000, data, !to_b);
    tap_ok(good == 10, "partial checksums: a TCP super-packet to peer %s (route %s) goes out as 10 segments with %s "
                       "checksums (%d right)", to_b ? "B" : "A", to_b ? "unflagged" : "flagged", to_b ? "full" : "partial", good);
  }
  /* a UDP super-packet (USO) */
  const size_t gso = 1200, uplen = 5000;
  struct ovl_vnet_hdr uh = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_UDP_L4, .hdr_len = 28,
                            .gso_size = (uint16_t)gso, .csum_start = 20, .csum_offset = 6};
  for (int to_b = 0; to_b <= 1; to_b++) {
    memcpy(pkt, &uh, OVL_VNET_HDR_LEN);
    make_pkt(ip, 28 + uplen, 5, 17, 64, LOCAL_POD, to_b ? POD_B : POD_A);
    wr16(ip + 24, (uint32_t)(8 + uplen));
    memcpy(ip + 28, data, uplen);
    tp_set_partial(ip, 28 + uplen);
    inject(&f, 0, pkt, OVL_VNET_HDR_LEN + 28 + uplen);
    int good = recv_cut(to_b ? f.peer_b : f.peer_a, 28, uplen, gso, 0, data, !to_b);
    tap_ok(good == 5, "partial checksums: a UDP super-packet (USO) to peer %s goes out as 5 datagrams with %s checksums "
                      "(%d right)", to_b ? "B" : "A", to_b ? "full" : "partial", good);
  }
  /* one packet with NEEDS_CSUM, no GSO: as it is to A, finished to B */
  struct ovl_vnet_hdr nh = {.flags = OVL_VNET_F_NEEDS_CSUM, .csum_start = 20, .csum_offset = 6};
  for (int to_b = 0; to_b <= 1; to_b++) {
    memcpy(pkt, &nh, OVL_VNET_HDR_LEN);
    make_pkt(ip, 300, 5, 17, 64, LOCAL_POD, to_b ? POD_B : POD_A);
    wr16(ip + 24, 280);
    tp_set_partial(ip, 300);
    memcpy(want, ip, 300);
    expect_forwarded(want);
    if (to_b) tp_set_full(want, 300);
    inject(&f, 0, pkt, OVL_VNET_HDR_LEN + 300);
    ssize_t r = recv_within(to_b ? f.peer_b : f.peer_a, got, sizeof(got), 2000, NULL);
    tap_ok(r == 300 && memcmp(got, want, 300) == 0 && (to_b ? tp_l4_ok(got, 300) : rd16(got + 26) == tp_pseudo(got, 300)),
           "partial checksums: a NEEDS_CSUM UDP packet to peer %s arrives %s", to_b ? "B" : "A",
           to_b ? "finished (valid)" : "as it was read (the pseudo-header sum)");
  }
  tap_ok(ctr_is(&f, OVL_EC_TX, 2 * 10 + 2 * 5 + 2) && ctr(&f, OVL_EC_DROP_MALFORMED) == 0,
         "partial checksums: tx %llu (32 datagrams), nothing malformed", (unsigned long long)ctr(&f, OVL_EC_TX));

  /* inbound: a partial UDP packet from peer A: written with NEEDS_CSUM at the UDP header */
  make_pkt(ip, 200, 5, 17, 64, POD_A, LOCAL_POD);
  wr16(ip + 24, 180);
  tp_set_partial(ip, 200);
  memcpy(want, ip, 200);
  expect_forwarded(want);
  send_from(f.peer_a, f.port, ip, 200);
  ssize_t r = recv_within(f.tun_test[0], got, sizeof(got), 2000, NULL);
  struct ovl_vnet_hdr gh;
  memcpy(&gh, got, sizeof(gh));
  tap_ok(r == OVL_VNET_HDR_LEN + 200 && gh.flags == OVL_VNET_F_NEEDS_CSUM && gh.gso_type == 0 && gh.hdr_len == 0 &&
             gh.gso_size == 0 && gh.csum_start == 20 && gh.csum_offset == 6 && memcmp(got + OVL_VNET_HDR_LEN, want, 200) == 0,
         "partial checksums: a partial UDP packet from a peer reaches the TUN as it came (TTL - 1) with NEEDS_CSUM 20/6");
  /* a partial TCP segment alone (a run of one): NEEDS_CSUM at the TCP header */
  size_t len = tcp_seg(ip, POD_A, LOCAL_POD, 5, data, 700, 9);
  tp_set_partial(ip, len);
  memcpy(want, ip, len);
  expect_forwarded(want);
  send_from(f.peer_a, f.port, ip, len);
  r = recv_within(f.tun_test[0], got, sizeof(got), 2000, NULL);
  memcpy(&gh, got, sizeof(gh));
  tap_ok(r == (ssize_t)(OVL_VNET_HDR_LEN + len) && gh.flags == OVL_VNET_F_NEEDS_CSUM && gh.gso_type == 0 &&
             gh.csum_start == 20 && gh.csum_offset == 16 && memcmp(got + OVL_VNET_HDR_LEN, want, len) == 0,
         "partial checksums: a lone partial TCP segment reaches the TUN with NEEDS_CSUM 20/16");
  /* 10 partial TCP segments in one UDP_SEGMENT message: one super-packet */
  size_t off = 0;
  for (int i = 0; i < 10; i++) {
    size_t sl = tcp_seg(pkt + off, POD_A, LOCAL_POD, 90000 + (uint32_t)(i * mss), data + i * mss, i < 9 ? mss : 500,
                        (uint16_t)(200 + i));
    tp_set_partial(pkt + off, sl);
    TAP_ASSERT(!tp_l4_ok(pkt + off, sl), "a partial segment's full checksum does not verify");
    off += sl;
  }
  uint64_t gro0 = ctr(&f, OVL_EC_TUN_GRO_WRITES);
  send_gso(&f, f.peer_a, pkt, off, (uint16_t)(40 + mss));
  r = recv_within(f.tun_test[0], got, sizeof(got), 2000, NULL);
  memcpy(&gh, got, sizeof(gh));
  const uint8_t *sp = got + OVL_VNET_HDR_LEN;
  tap_ok(r == (ssize_t)(OVL_VNET_HDR_LEN + 40 + plen) && gh.gso_type == OVL_VNET_GSO_TCPV4 && gh.gso_size == mss &&
             gh.flags == OVL_VNET_F_NEEDS_CSUM && gh.csum_start == 20 && gh.csum_offset == 16 &&
             rd32(sp + 24) == 90000 && memcmp(sp + 40, data, plen) == 0 && rd16(sp + 36) == tp_pseudo(sp, (size_t)r - OVL_VNET_HDR_LEN),
         "partial checksums: 10 partial TCP segments coalesce into one super-packet (%zd bytes), payload in order", r);
  tap_ok(ctr_is(&f, OVL_EC_TUN_GRO_WRITES, gro0 + 1) && ctr_is(&f, OVL_EC_TUN_TX, 12) && ctr(&f, OVL_EC_DROP_MALFORMED) == 0,
         "partial checksums: 1 coalesced write, tun_tx 12, nothing malformed");
  fx_stop(&f);
}

/* Without a virtio_net_hdr on the TUN, partial packets from a peer are finished before
 * they are written (the full checksum verifies, every other byte as forwarded). */
static void test_partial_plain(void) {
  struct fx f;
  fx_start(&f, 1);
  static uint8_t data[2000], ip[2048], got[2048], want[2048];
  for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)rnd();
  for (int tcp = 0; tcp <= 1; tcp++) {
    size_t len = 400;
    if (tcp) {
      len = tcp_seg(ip, POD_A, LOCAL_POD, 77, data, 360, 3);
    } else {
      make_pkt(ip, len, 5, 17, 64, POD_A, LOCAL_POD);
      wr16(ip + 24, (uint32_t)(len - 20));
    }
    tp_set_partial(ip, len);
    memcpy(want, ip, len);
    expect_forwarded(want);
    tp_set_full(want, len);
    send_from(f.peer_a, f.port, ip, len);
    ssize_t r = recv_within(f.tun_test[0], got, sizeof(got), 2000, NULL);
    tap_ok(r == (ssize_t)len && memcmp(got, want, len) == 0 && tp_l4_ok(got, len),
           "no virtio_net_hdr: a partial %s packet from a peer is written finished (valid checksum)", tcp ? "TCP" : "UDP");
  }
  fx_stop(&f);
}

int main(void) {
  test_config();
  test_offloads();
  test_partial_vnet();
  test_partial_plain();
  test_super_policy();
  struct fx f;
  fx_start(&f, 1);
  test_outbound(&f);
  test_outbound_drops(&f);
  test_inbound(&f);
  test_inbound_drops(&f);
  test_inbound_frag_needed(&f);
  test_route_change(&f);
  test_idle(&f);
  double dt = fx_stop(&f);
  tap_ok(dt < STOP_MAX_SEC, "stopped and joined in %.3f s", dt);
  test_frag_needed_ratelimit();
  test_multi_queue();
  test_fatal();
  return tap_done();
}
