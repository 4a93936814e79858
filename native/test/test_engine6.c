/* engine.c's IPv6 paths. A SOCK_SEQPACKET socketpair stands for the TUN; the underlay runs
 * on loopback in a network namespace of its own (unshare: needs root, else SKIP), where lo
 * gets fd99::1..3 (loopback addresses need no DAD):
 *
 *   node (the engine): 127.0.0.1:P and [fd99::1]:P; TUN fd00:10:244:1::, subnet
 *     fd00:10:244:1::/64, MTU 1400
 *   peer A 127.0.0.2:P and [fd99::2]:P owns fd00:10:244:2::/64 (IPv6 underlay)
 *   peer B 127.0.0.4:P owns fd00:10:244:4::/64 (IPv4 underlay: no peer6)
 *   [fd99::3]:P is not a peer
 *
 * Checks: forwarding both ways over both underlays (hop limit - 1, every other byte
 * unchanged), v4 and v6 datagrams mixed in one burst, every IPv6 drop with its (shared)
 * counter, ICMPv6 errors decoded with the checksum recomputed here, packet too big both
 * ways (into the TUN outbound, back to the peer over UDP inbound), no ICMPv6 about ICMPv6
 * errors, and an engine without ipv6 dropping inner IPv6 as malformed. Waits bounded. */
#include "overlayd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "testpkt.h"

#define WAIT_MS 10000
#define MTU 1400u
#define IP(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

static const uint8_t NODE6[16] = {0xfd, 0x99, [15] = 1};
static const uint8_t PEER_A6[16] = {0xfd, 0x99, [15] = 2};
static const uint8_t STRANGER6[16] = {0xfd, 0x99, [15] = 3};
static const uint8_t TUN6[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 1};
static const uint8_t LOCAL_POD6[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 1, [15] = 5};
static const uint8_t POD_A6[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 2, [15] = 7};
static const uint8_t POD_B6[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 4, [15] = 9};
static const uint8_t NOWHERE6[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 9, [15] = 1};

struct in6_ifreq_compat {
  struct in6_addr addr;
  uint32_t prefixlen;
  int ifindex;
};

static int netns_setup(void) {
  if (unshare(CLONE_NEWNET) != 0) return 0;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), s6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  TAP_ASSERT(s >= 0 && s6 >= 0, "sockets");
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, "lo");
  TAP_ASSERT(ioctl(s, SIOCGIFFLAGS, &ifr) == 0, "SIOCGIFFLAGS lo");
  ifr.ifr_flags |= IFF_UP;
  TAP_ASSERT(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "lo up: %s", strerror(errno));
  /* no DAD on lo in this namespace: the addresses are usable at once (not tentative) */
  const char *knobs[] = {"/proc/sys/net/ipv6/conf/lo/accept_dad", "/proc/sys/net/ipv6/conf/lo/dad_transmits"};
  for (int i = 0; i < 2; i++) {
    FILE *k = fopen(knobs[i], "w");
    TAP_ASSERT(k != NULL && fputs("0\n", k) >= 0 && fclose(k) == 0, "writing %s", knobs[i]);
  }
  const uint8_t *addrs[] = {NODE6, PEER_A6, STRANGER6};
  for (int i = 0; i < 3; i++) {
    struct in6_ifreq_compat r = {.prefixlen = 128, .ifindex = (int)if_nametoindex("lo")};
    memcpy(&r.addr, addrs[i], 16);
    TAP_ASSERT(ioctl(s6, SIOCSIFADDR, &r) == 0, "add fd99::%d to lo: %s", i + 1, strerror(errno));
  }
  /* the kernel may take a moment before an address is bindable: probe, bounded */
  for (int i = 0; i < 3; i++) {
    int ok = 0;
    for (double t0 = now_sec(); !ok && now_sec() - t0 < 10.0;) {
      struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
      memcpy(&sa.sin6_addr, addrs[i], 16);
      int p = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      ok = p >= 0 && bind(p, (struct sockaddr *)&sa, sizeof(sa)) == 0;
      if (p >= 0) close(p);
      if (!ok) nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    TAP_ASSERT(ok, "fd99::%d bindable within 10 s", i + 1);
  }
  close(s);
  close(s6);
  return 1;
}

struct fx {
  int tun_eng, tun_test, udp, udp6;
  uint16_t port;
  int peer_a, peer_a6, peer_b;
  struct ovl_routes *routes;
  struct ovl_engine_counters *ctr;
  struct ovl_engine *e;
};

static uint64_t ctr(struct fx *f, enum ovl_engine_counter i) { return atomic_load_explicit(&f->ctr[0].v[i], memory_order_relaxed); }

static int ctr_is(struct fx *f, enum ovl_engine_counter i, uint64_t want) {
  for (double t0 = now_sec(); now_sec() - t0 < WAIT_MS / 1000.0 && ctr(f, i) < want;) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  return ctr(f, i) == want;
}

static int bound(int family, const void *addr, uint16_t port) {
  int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  TAP_ASSERT(s >= 0, "socket");
  int rc;
  if (family == AF_INET6) {
    int one = 1;
    (void)setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    memcpy(&sa.sin6_addr, addr, 16);
    rc = bind(s, (struct sockaddr *)&sa, sizeof(sa));
  } else {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(*(const uint32_t *)addr)};
    rc = bind(s, (struct sockaddr *)&sa, sizeof(sa));
  }
  TAP_ASSERT(rc == 0, "bind: %s", strerror(errno));
  return s;
}

static void send4(struct fx *f, int s, const uint8_t *p, size_t n) {
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(f->port), .sin_addr.s_addr = htonl(IP(127, 0, 0, 1))};
  TAP_ASSERT(sendto(s, p, n, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)n, "sendto: %s", strerror(errno));
}

static void send6(struct fx *f, int s, const uint8_t *p, size_t n) {
  struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_port = htons(f->port)};
  memcpy(&to.sin6_addr, NODE6, 16);
  TAP_ASSERT(sendto(s, p, n, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)n, "sendto6: %s", strerror(errno));
}

static ssize_t recv_within(int fd, uint8_t *buf, size_t cap, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) != 1) return -1;
  return recv(fd, buf, cap, MSG_DONTWAIT);
}

/* An IPv6 UDP packet of len bytes (random payload), hop limit hl. */
static void make6(uint8_t *p, size_t len, const uint8_t *src, const uint8_t *dst, uint8_t nh, uint8_t hl) {
  for (size_t i = 0; i < len; i++) p[i] = (uint8_t)rnd();
  p[0] = 0x60;
  wr16(p + 4, (uint32_t)(len - 40));
  p[6] = nh;
  p[7] = hl;
  memcpy(p + 8, src, 16);
  memcpy(p + 24, dst, 16);
}

/* An ICMPv6 error as the engine must build it: from TUN6 to the offender's source, the
 * checksum verified over a pseudo header built here, the quote = the offender's first
 * bytes, up to 1280 bytes in all. */
static int icmp6_ok(const uint8_t *o, ssize_t n, uint8_t type, uint8_t code, uint32_t mtu, const uint8_t *off, size_t off_len) {
  size_t quote = off_len < 1280 - 48 ? off_len : 1280 - 48;
  if (n != (ssize_t)(48 + quote) || o[0] != 0x60 || o[6] != 58 || rd16(o + 4) != n - 40 || memcmp(o + 8, TUN6, 16) != 0 ||
      memcmp(o + 24, off + 8, 16) != 0 || o[40] != type || o[41] != code || rd32(o + 44) != mtu ||
      memcmp(o + 48, off, quote) != 0)
    return 0;
  static uint8_t ps[40 + 1280];
  memcpy(ps, o + 8, 32);
  wr32(ps + 32, (uint32_t)(n - 40));
  ps[36] = ps[37] = ps[38] = 0;
  ps[39] = 58;
  memcpy(ps + 40, o + 40, (size_t)n - 40);
  return ref_sum(ps, (size_t)n) == 0xffff;
}

/* The routes: 10.244.2.0/24 and fd00:10:244:2::/64 to peer A (127.0.0.2, [fd99::2]; its
 * IPv4 route's OVL_ROUTE_* flags: flags_a, which its IPv6 route shares), 10.244.4.0/24 and
 * fd00:10:244:4::/64 to peer B (127.0.0.4, no IPv6 underlay). */
static void set_routes(struct fx *f, uint8_t flags_a) {
  uint32_t a = IP(127, 0, 0, 2), b = IP(127, 0, 0, 4);
  struct ovl_route r4[] = {{.net = IP(10, 244, 2, 0), .len = 24, .peer = a, .flags = flags_a},
                           {.net = IP(10, 244, 4, 0), .len = 24, .peer = b}};
  TAP_ASSERT(ovl_routes_set(f->routes, r4, 2) == 0, "v4 routes");
  struct ovl_route6 r6[2] = {{.len = 64, .peer = a, .has_peer6 = true}, {.len = 64, .peer = b}};
  memcpy(r6[0].net, POD_A6, 8);
  memcpy(r6[0].peer6, PEER_A6, 16);
  memcpy(r6[1].net, POD_B6, 8);
  TAP_ASSERT(ovl_routes_set6(f->routes, r6, 2) == 0, "v6 routes");
  /* every table before these retired: no thread still reads one, its next turn reads these */
  TAP_ASSERT(tp_routes_settled(f->routes, WAIT_MS), "the engine left the previous routes");
}

/* offloads: the TUN stand-in carries a virtio_net_hdr both ways, UDP GSO and GRO on both
 * sockets (TUN GRO too: IPv6 is never coalesced by it, so it must pass plainly). */
static void fx_start(struct fx *f, bool ipv6, bool offloads) {
  memset(f, 0, sizeof(*f));
  int sp[2];
  TAP_ASSERT(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0, "socketpair");
  f->tun_eng = sp[0];
  f->tun_test = sp[1];
  TAP_ASSERT(fcntl(sp[0], F_SETFL, fcntl(sp[0], F_GETFL) | O_NONBLOCK) == 0, "nonblocking");
  const char *sc = NULL;
  TAP_REQUIRE(ovl_udp_open(&f->udp, 1, IP(127, 0, 0, 1), 0, OVL_UDP_SOCKBUF_BYTES, &sc) == 0, "IPv4 socket");
  struct sockaddr_in sa;
  socklen_t sl = sizeof(sa);
  TAP_ASSERT(getsockname(f->udp, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
  f->port = ntohs(sa.sin_port);
  f->udp6 = -1;
  int err6 = ipv6 ? ovl_udp_open6(&f->udp6, 1, NODE6, f->port, OVL_UDP_SOCKBUF_BYTES, &sc) : 0;
  TAP_REQUIRE(err6 == 0, "IPv6 socket on [fd99::1]:%u: %s %s", f->port, strerror(-err6), sc ? sc : "");
  uint32_t a = IP(127, 0, 0, 2), b = IP(127, 0, 0, 4);
  f->peer_a = bound(AF_INET, &a, f->port);
  f->peer_b = bound(AF_INET, &b, f->port);
  f->peer_a6 = bound(AF_INET6, PEER_A6, f->port);
  TAP_ASSERT(ovl_routes_create(&f->routes, 1) == 0, "routes");
  set_routes(f, 0);
  f->ctr = aligned_alloc(64, sizeof(*f->ctr));
  memset(f->ctr, 0, sizeof(*f->ctr));
  struct ovl_engine_config cfg = {
      .queues = 1, .tun_fds = &f->tun_eng, .udp_fds = &f->udp, .port = f->port, .tun_address = IP(10, 244, 1, 0),
      .tun_mtu = MTU, .subnet = IP(10, 244, 1, 0), .subnet_len = 24, .routes = f->routes, .counters = f->ctr,
      .icmp_rate = 0, .ipv6 = ipv6, .subnet6_len = 64, .udp6_fds = ipv6 ? &f->udp6 : NULL,
      .tun_vnet_hdr = offloads, .tun_gro = offloads, .udp_gso = offloads, .udp_gro = offloads,
  };
  if (offloads)
    TAP_REQUIRE(ovl_udp_gso_probe(f->udp) && ovl_udp_gso_probe(f->udp6) && ovl_udp_gro_enable(f->udp) && ovl_udp_gro_enable(f->udp6),
                "UDP_SEGMENT and UDP_GRO taken on the IPv4 and the IPv6 socket");
  memcpy(cfg.tun_address6, TUN6, 16);
  memcpy(cfg.subnet6, TUN6, 16);
  TAP_REQUIRE(ovl_engine_start(&f->e, &cfg, &sc) == 0, "engine started (ipv6 %s)", ipv6 ? "on" : "off");
}

static void fx_stop(struct fx *f) {
  ovl_engine_stop(f->e);
  close(f->tun_eng);
  close(f->tun_test);
  close(f->udp);
  if (f->udp6 >= 0) close(f->udp6);
  close(f->peer_a);
  close(f->peer_a6);
  close(f->peer_b);
  ovl_routes_destroy(f->routes);
  free(f->ctr);
}

static void test_forwarding(struct fx *f) {
  uint8_t p[200], got[2048];
  make6(p, sizeof(p), LOCAL_POD6, POD_A6, 17, 64);
  TAP_ASSERT(write(f->tun_test, p, sizeof(p)) == sizeof(p), "inject");
  ssize_t n = recv_within(f->peer_a6, got, sizeof(got), WAIT_MS);
  p[7] = 63;
  tap_ok(n == sizeof(p) && memcmp(got, p, sizeof(p)) == 0, "outbound to A: over the IPv6 underlay, hop limit 63, rest intact");
  make6(p, sizeof(p), LOCAL_POD6, POD_B6, 6, 2);
  TAP_ASSERT(write(f->tun_test, p, sizeof(p)) == sizeof(p), "inject");
  n = recv_within(f->peer_b, got, sizeof(got), WAIT_MS);
  p[7] = 1;
  tap_ok(n == sizeof(p) && memcmp(got, p, sizeof(p)) == 0, "outbound to B (no peer6): over the IPv4 underlay, hop limit 1");

  /* A burst mixing families: v4, v6, v4, v6 to A; each arrives on its socket in order. */
  uint8_t q4[2][60], q6[2][80];
  for (int i = 0; i < 2; i++) {
    make_pkt(q4[i], 60, 5, 17, 64, IP(10, 244, 1, 5), IP(10, 244, 2, 7));
    make6(q6[i], 80, LOCAL_POD6, POD_A6, 17, 64);
    TAP_ASSERT(write(f->tun_test, q4[i], 60) == 60 && write(f->tun_test, q6[i], 80) == 80, "inject");
  }
  int ok = 1;
  for (int i = 0; i < 2; i++) {
    expect_forwarded(q4[i]);
    q6[i][7] = 63;
    ok &= recv_within(f->peer_a, got, sizeof(got), WAIT_MS) == 60 && memcmp(got, q4[i], 60) == 0;
    ok &= recv_within(f->peer_a6, got, sizeof(got), WAIT_MS) == 80 && memcmp(got, q6[i], 80) == 0;
  }
  tap_ok(ok, "a burst of IPv4 and IPv6 packets: each family on its underlay, in order");
  tap_ok(ctr_is(f, OVL_EC_TX, 6) && ctr_is(f, OVL_EC_TUN_RX, 6), "tx 6, tun_rx 6 (shared counters)");

  make6(p, sizeof(p), POD_A6, LOCAL_POD6, 17, 64);
  send6(f, f->peer_a6, p, sizeof(p));
  n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  p[7] = 63;
  tap_ok(n == sizeof(p) && memcmp(got, p, sizeof(p)) == 0, "inbound from A over IPv6: into the TUN, hop limit 63");
  make6(p, sizeof(p), POD_A6, LOCAL_POD6, 17, 64);
  send4(f, f->peer_a, p, sizeof(p));
  n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  p[7] = 63;
  tap_ok(n == sizeof(p) && memcmp(got, p, sizeof(p)) == 0, "inbound from A over IPv4 (its PublicIP): accepted too");
  make6(p, sizeof(p), POD_B6, LOCAL_POD6, 17, 64);
  send4(f, f->peer_b, p, sizeof(p));
  n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  p[7] = 63;
  tap_ok(n == sizeof(p) && memcmp(got, p, sizeof(p)) == 0, "inbound from B over IPv4: into the TUN");
  tap_ok(ctr_is(f, OVL_EC_TUN_TX, 3) && ctr_is(f, OVL_EC_RX, 3), "rx 3, tun_tx 3");
}

static void test_drops(struct fx *f) {
  static uint8_t p[3000], got[4096];
  uint64_t icmp0 = ctr(f, OVL_EC_ICMP_SENT), tun_tx0 = ctr(f, OVL_EC_TUN_TX);
  /* outbound: no route */
  make6(p, 100, LOCAL_POD6, NOWHERE6, 17, 64);
  TAP_ASSERT(write(f->tun_test, p, 100) == 100, "inject");
  ssize_t n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  tap_ok(icmp6_ok(got, n, 1, 0, 0, p, 100), "no route: ICMPv6 destination unreachable code 0 from the TUN address, checksum ok");
  tap_ok(ctr_is(f, OVL_EC_DROP_NO_ROUTE, 1) && ctr_is(f, OVL_EC_ICMP_SENT, icmp0 + 1), "drop_no_route 1, icmp_sent +1");
  /* outbound: hop limit 1 */
  make6(p, 100, LOCAL_POD6, POD_A6, 17, 1);
  TAP_ASSERT(write(f->tun_test, p, 100) == 100, "inject");
  n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  tap_ok(icmp6_ok(got, n, 3, 0, 0, p, 100), "hop limit 1: ICMPv6 time exceeded code 0");
  tap_ok(ctr_is(f, OVL_EC_DROP_TTL, 1), "drop_ttl 1");
  /* outbound: too big (longer than the MTU, within the read buffer: a TUN whose MTU was
   * raised) -> packet too big with the engine's TUN MTU */
  make6(p, 1405, LOCAL_POD6, POD_A6, 17, 64);
  TAP_ASSERT(write(f->tun_test, p, 1405) == 1405, "inject");
  n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  tap_ok(icmp6_ok(got, n, 2, 0, MTU, p, 1405), "1405 bytes out: ICMPv6 packet too big, MTU 1400, 1280 bytes in all");
  tap_ok(ctr_is(f, OVL_EC_DROP_TOO_BIG, 1) && ctr_is(f, OVL_EC_ICMP_SENT, icmp0 + 3), "drop_too_big 1, icmp_sent +1");
  /* no ICMPv6 about an ICMPv6 error; malformed: a truncated extension chain */
  make6(p, 100, LOCAL_POD6, NOWHERE6, 58, 64);
  p[40] = 1;
  TAP_ASSERT(write(f->tun_test, p, 100) == 100, "inject");
  make6(p, 100, LOCAL_POD6, POD_A6, 60, 64);
  p[41] = 200; /* a Destination options header of 1608 bytes in a 100-byte packet */
  TAP_ASSERT(write(f->tun_test, p, 100) == 100, "inject");
  tap_ok(ctr_is(f, OVL_EC_DROP_NO_ROUTE, 2) && ctr_is(f, OVL_EC_DROP_MALFORMED, 1) && ctr(f, OVL_EC_ICMP_SENT) == icmp0 + 3,
         "an ICMPv6 error without a route: drop_no_route, no answer; a truncated extension header: drop_malformed");
  tap_ok(recv_within(f->tun_test, got, sizeof(got), 100) < 0 && ctr(f, OVL_EC_TUN_TX) == tun_tx0 + 3, "nothing else into the TUN");

  /* inbound drops */
  int stranger6 = bound(AF_INET6, STRANGER6, f->port);
  make6(p, 100, POD_A6, LOCAL_POD6, 17, 64);
  send6(f, stranger6, p, 100);
  tap_ok(ctr_is(f, OVL_EC_DROP_UNKNOWN_PEER, 1), "from [fd99::3]:P (no route has it): drop_unknown_peer");
  close(stranger6);
  make6(p, 100, POD_B6, LOCAL_POD6, 17, 64);
  send6(f, f->peer_a6, p, 100);
  tap_ok(ctr_is(f, OVL_EC_DROP_SPOOFED, 1), "A sends a source of B's subnet: drop_spoofed");
  make6(p, 100, POD_A6, POD_B6, 17, 64);
  send6(f, f->peer_a6, p, 100);
  tap_ok(ctr_is(f, OVL_EC_DROP_WRONG_DST, 1), "destination outside our subnet: drop_wrong_dst");
  make6(p, 100, POD_A6, LOCAL_POD6, 44, 64);
  wr16(p + 4, 100); /* payload length beyond the datagram */
  send6(f, f->peer_a6, p, 100);
  tap_ok(ctr_is(f, OVL_EC_DROP_MALFORMED, 2), "a payload length beyond the datagram: drop_malformed");
  make_pkt(p, 60, 5, 17, 64, IP(10, 244, 2, 7), IP(10, 244, 1, 5));
  send6(f, f->peer_a6, p, 60);
  tap_ok(ctr_is(f, OVL_EC_DROP_SPOOFED, 2), "inner IPv4 over the IPv6 underlay: drop_spoofed (IPv4 rides IPv4)");
  make6(p, 100, POD_A6, LOCAL_POD6, 17, 1);
  send6(f, f->peer_a6, p, 100);
  n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  tap_ok(icmp6_ok(got, n, 3, 0, 0, p, 100) && ctr_is(f, OVL_EC_DROP_TTL, 2), "inbound hop limit 1: time exceeded into the TUN, drop_ttl");
  /* inbound too big: packet too big back to the peer over the underlay it came by */
  uint64_t tx0 = ctr(f, OVL_EC_TX);
  make6(p, 1500, POD_A6, LOCAL_POD6, 17, 64);
  send6(f, f->peer_a6, p, 1500);
  n = recv_within(f->peer_a6, got, sizeof(got), WAIT_MS);
  tap_ok(icmp6_ok(got, n, 2, 0, MTU, p, 1500), "1500 bytes in over IPv6: packet too big (MTU 1400) back to A over IPv6");
  send4(f, f->peer_a, p, 1500);
  n = recv_within(f->peer_a, got, sizeof(got), WAIT_MS);
  tap_ok(icmp6_ok(got, n, 2, 0, MTU, p, 1500), "and over IPv4 back over IPv4");
  tap_ok(ctr_is(f, OVL_EC_DROP_TOO_BIG, 3) && ctr_is(f, OVL_EC_TX, tx0 + 2), "drop_too_big +2, the two answers counted as tx");
}

/* A TSO6 super-packet read with a virtio_net_hdr: cut into MSS segments, each sent to A
 * over IPv6 (joined into UDP_SEGMENT messages: the receiver still gets one datagram per
 * segment), hop limit 63; and inbound IPv6 written with a (zero) virtio_net_hdr. */
static void test_offloads(struct fx *f) {
  static uint8_t p[10 + 40 + 20 + 4000], got[2048];
  enum { PAYLOAD = 4000, MSS = 1000 };
  struct ovl_vnet_hdr h = {.flags = 0, .gso_type = OVL_VNET_GSO_TCPV6, .hdr_len = 60, .gso_size = MSS};
  memcpy(p, &h, 10);
  uint8_t *ip = p + 10;
  make6(ip, 60 + PAYLOAD, LOCAL_POD6, POD_A6, 6, 64);
  ip[40 + 12] = 0x50;
  ip[40 + 13] = 0x18; /* ACK PSH */
  TAP_ASSERT(write(f->tun_test, p, sizeof(p)) == (ssize_t)sizeof(p), "inject super-packet");
  int ok = 1;
  uint32_t seq = rd32(ip + 44);
  for (int i = 0; i < PAYLOAD / MSS && ok; i++) {
    ssize_t n = recv_within(f->peer_a6, got, sizeof(got), WAIT_MS);
    ok &= n == 60 + MSS && got[7] == 63 && rd16(got + 4) == 20 + MSS && rd32(got + 44) == seq + (uint32_t)(i * MSS) &&
          memcmp(got + 60, ip + 60 + i * MSS, MSS) == 0 && memcmp(got + 8, ip + 8, 32) == 0;
    if (!ok) tap_diag("segment %d: %zd bytes", i, n);
  }
  tap_ok(ok, "a TSO6 super-packet of %d bytes: %d segments at A over IPv6, hop limit 63, in order", PAYLOAD, PAYLOAD / MSS);
  tap_ok(ctr_is(f, OVL_EC_TUN_GSO_READS, 1) && ctr_is(f, OVL_EC_TX, PAYLOAD / MSS), "tun_gso_reads 1, tx %d", PAYLOAD / MSS);
  uint8_t q[200];
  make6(q, sizeof(q), POD_A6, LOCAL_POD6, 17, 64);
  send6(f, f->peer_a6, q, sizeof(q));
  ssize_t n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  q[7] = 63;
  static const uint8_t zero[10];
  tap_ok(n == 10 + (ssize_t)sizeof(q) && memcmp(got, zero, 10) == 0 && memcmp(got + 10, q, sizeof(q)) == 0,
         "inbound IPv6 with offloads on: one plain write with an empty virtio_net_hdr");
}

/* A USO super-packet (IPv6/UDP, gso_type UDP_L4, as a UDP_SEGMENT socket makes it) read
 * with a virtio_net_hdr: cut into gso_size datagrams (the last shorter), each sent to A over
 * IPv6 with its UDP length and a UDP checksum that verifies, hop limit 63. */
static void test_uso(struct fx *f) {
  enum { PAYLOAD = 3500, GSO = 1000 };
  static uint8_t p[10 + 48 + PAYLOAD], got[2048], ps[40 + 8 + GSO];
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_UDP_L4, .hdr_len = 48, .gso_size = GSO,
                           .csum_start = 40, .csum_offset = 6};
  memcpy(p, &h, 10);
  uint8_t *ip = p + 10;
  make6(ip, 48 + PAYLOAD, LOCAL_POD6, POD_A6, 17, 64);
  wr16(ip + 44, 8 + PAYLOAD);
  uint64_t gso0 = ctr(f, OVL_EC_TUN_GSO_READS), tx0 = ctr(f, OVL_EC_TX);
  TAP_ASSERT(write(f->tun_test, p, sizeof(p)) == (ssize_t)sizeof(p), "inject USO super-packet");
  int ok = 1;
  const int nseg = (PAYLOAD + GSO - 1) / GSO;
  for (int i = 0; i < nseg && ok; i++) {
    size_t plen = i + 1 < nseg ? GSO : PAYLOAD - (size_t)i * GSO;
    ssize_t n = recv_within(f->peer_a6, got, sizeof(got), WAIT_MS);
    ok &= n == (ssize_t)(48 + plen) && got[7] == 63 && rd16(got + 4) == 8 + plen && rd16(got + 44) == 8 + plen &&
          memcmp(got + 40, ip + 40, 4) == 0 && memcmp(got + 48, ip + 48 + (size_t)i * GSO, plen) == 0 && memcmp(got + 8, ip + 8, 32) == 0;
    /* the UDP checksum over a pseudo header built here */
    memcpy(ps, got + 8, 32);
    wr32(ps + 32, (uint32_t)(8 + plen));
    ps[36] = ps[37] = ps[38] = 0;
    ps[39] = 17;
    if (ok) {
      memcpy(ps + 40, got + 40, 8 + plen);
      ok &= rd16(got + 46) != 0 && ref_sum(ps, 48 + plen) == 0xffff;
    }
    if (!ok) tap_diag("datagram %d: %zd bytes", i, n);
  }
  tap_ok(ok, "a USO super-packet of %d payload bytes: %d datagrams at A over IPv6, lengths and checksums right, in order", PAYLOAD, nseg);
  tap_ok(ctr_is(f, OVL_EC_TUN_USO_READS, 1) && ctr_is(f, OVL_EC_TUN_GSO_READS, gso0 + 1) && ctr_is(f, OVL_EC_TX, tx0 + nseg),
         "tun_uso_reads 1 (and tun_gso_reads + 1), tx + %d", nseg);
}

/* Partial checksums over IPv6: peer A's IPv4 route flagged OVL_ROUTE_PARTIAL_CSUM, its
 * IPv6 route (same peer) follows it: a TSO6 super-packet to A goes out with partial
 * checksums, one to B with full ones; a partial IPv6 packet from A reaches the TUN with
 * NEEDS_CSUM at the L4 header. */
static void test_partial6(struct fx *f) {
  enum { PAYLOAD = 3000, MSS = 1000 };
  static uint8_t p[10 + 60 + PAYLOAD], got[2048], want[400];
  set_routes(f, OVL_ROUTE_PARTIAL_CSUM);
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_TCPV6, .hdr_len = 60, .gso_size = MSS,
                           .csum_start = 40, .csum_offset = 16};
  uint8_t *ip = p + 10;
  for (int to_b = 0; to_b <= 1; to_b++) {
    memcpy(p, &h, 10);
    make6(ip, 60 + PAYLOAD, LOCAL_POD6, to_b ? POD_B6 : POD_A6, 6, 64);
    ip[40 + 12] = 0x50;
    ip[40 + 13] = 0x10;
    tp_set_partial(ip, 60 + PAYLOAD);
    TAP_ASSERT(write(f->tun_test, p, sizeof(p)) == (ssize_t)sizeof(p), "inject super-packet");
    int good = 0;
    for (int i = 0; i < PAYLOAD / MSS; i++) {
      ssize_t n = recv_within(to_b ? f->peer_b : f->peer_a6, got, sizeof(got), WAIT_MS);
      if (n != 60 + MSS) break;
      good += got[7] == 63 && memcmp(got + 60, ip + 60 + i * MSS, MSS) == 0 &&
              (to_b ? tp_l4_ok(got, (size_t)n) : rd16(got + 56) == tp_pseudo(got, (size_t)n));
    }
    tap_ok(good == PAYLOAD / MSS, "partial checksums, IPv6: a TSO6 super-packet to peer %s: %d of %d segments with %s checksums",
           to_b ? "B (unflagged, IPv4 underlay)" : "A (flagged, IPv6 underlay)", good, PAYLOAD / MSS, to_b ? "full" : "partial");
  }
  uint8_t q[300];
  make6(q, sizeof(q), POD_A6, LOCAL_POD6, 17, 64);
  wr16(q + 44, sizeof(q) - 40);
  tp_set_partial(q, sizeof(q));
  memcpy(want, q, sizeof(q));
  want[7] = 63;
  send6(f, f->peer_a6, q, sizeof(q));
  ssize_t n = recv_within(f->tun_test, got, sizeof(got), WAIT_MS);
  struct ovl_vnet_hdr gh;
  memcpy(&gh, got, sizeof(gh));
  tap_ok(n == 10 + (ssize_t)sizeof(q) && gh.flags == OVL_VNET_F_NEEDS_CSUM && gh.gso_type == 0 && gh.csum_start == 40 &&
             gh.csum_offset == 6 && memcmp(got + 10, want, sizeof(q)) == 0,
         "partial checksums, IPv6: a partial UDP packet from A reaches the TUN as it came (hop limit 63) with NEEDS_CSUM 40/6");
  set_routes(f, 0);
}

static void test_ipv6_off(void) {
  struct fx f;
  fx_start(&f, false, false);
  uint8_t p[100];
  make6(p, 100, LOCAL_POD6, POD_A6, 17, 64);
  TAP_ASSERT(write(f.tun_test, p, 100) == 100, "inject");
  send4(&f, f.peer_a, p, 100);
  tap_ok(ctr_is(&f, OVL_EC_DROP_MALFORMED, 2) && ctr(&f, OVL_EC_TX) == 0 && ctr(&f, OVL_EC_TUN_TX) == 0,
         "an engine without ipv6: inner IPv6 is drop_malformed both ways, as before");
  fx_stop(&f);
}

int main(void) {
  if (!netns_setup()) {
    printf("# SKIP IPv6 engine tests: unshare(CLONE_NEWNET) refused (needs root): %s\n", strerror(errno));
    tap_ok(1, "# SKIP not root");
    return tap_done();
  }
  struct fx f;
  fx_start(&f, true, false);
  test_forwarding(&f);
  test_drops(&f);
  fx_stop(&f);
  fx_start(&f, true, true);
  test_offloads(&f);
  test_uso(&f);
  test_partial6(&f);
  fx_stop(&f);
  test_ipv6_off();
  return tap_done();
}
