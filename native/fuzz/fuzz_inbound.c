/*
 * libFuzzer target: the native engine's per-packet paths, inbound (peer -> TUN) and
 * outbound (TUN -> peer), exactly as the forwarding threads run them: the engine's parts
 * (engine.c, tunside.c, udpside.c, policy.c) are compiled into this file so their
 * inbound()/outbound() are the code under test, not a copy.
 *
 * Input: byte 0 selects the path and the sender (bits 0-1: 0 = the peer 10.99.0.200:8285,
 * 1 = that peer on another port, 2 = a non-peer, 3 = outbound from the TUN; with bit 2 set,
 * 0-2 are the same over the IPv6 underlay: the peer [2001:db8::200]:8285, another port, a
 * non-peer [2001:db8::254]); the rest is the datagram or packet. The engine is dual-stack:
 * inner IPv6 with IPv6 routes (fd00:10:244:200::/64 and fd00:10:245::/48 to the peer with
 * its IPv6 underlay address, fd00:10:244:1::/64 to another peer over IPv4), our IPv6
 * subnet fd00:10:244:2::/64. A buffer of SLOT bytes holds at most SLOT of it while `len` keeps the
 * real length, as recvmmsg with MSG_TRUNC leaves it. The TUN is /dev/null.
 *
 * Checked on every input, besides what ASan/UBSan catch: the packet ends as exactly one
 * outcome (one drop reason, or written into the TUN / queued for sending), ICMP errors
 * adding one TUN write or one datagram each (a packet too big or a fragmentation needed
 * goes back to the peer over UDP: its sendto on a closed fd counts tx_error); anything else
 * aborts (a finding).
 */
#include "../src/engine.c"
#include "../src/tunside.c"
#include "../src/udpside.c"
#include "../src/policy.c"

#include <fcntl.h>
#include <stdio.h>

#define SLOT 1536u
#define TUN_MTU 1472u
#define PORT 8285u

static struct ovl_engine eng;
static struct worker wk;
static struct ovl_rtable *table;
static struct ovl_rtable6 *table6_;
static const uint8_t PEER6[16] = {0x20, 0x01, 0x0d, 0xb8, [14] = 0x02, [15] = 0x00};
static const uint8_t STRANGER6[16] = {0x20, 0x01, 0x0d, 0xb8, [14] = 0x02, [15] = 0x54};
static uint8_t buf[SLOT];

static uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) { return (a << 24) | (b << 16) | (c << 8) | d; }

static void setup(void) {
  const struct ovl_route routes[] = {
      {.net = ip4(10, 244, 200, 0), .len = 24, .peer = ip4(10, 99, 0, 200)},
      {.net = ip4(10, 244, 1, 0), .len = 24, .peer = ip4(10, 99, 0, 1)},
      {.net = ip4(10, 245, 0, 0), .len = 16, .peer = ip4(10, 99, 0, 200)},
  };
  if (ovl_rtable_build(&table, routes, sizeof(routes) / sizeof(routes[0])) != 0) abort();
  struct ovl_route6 r6[3] = {
      {.net = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x02, 0x00}, .len = 64, .peer = ip4(10, 99, 0, 200), .has_peer6 = true},
      {.net = {0xfd, 0, 0, 0x10, 0x02, 0x45}, .len = 48, .peer = ip4(10, 99, 0, 200), .has_peer6 = true},
      {.net = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x00, 0x01}, .len = 64, .peer = ip4(10, 99, 0, 1)},
  };
  memcpy(r6[0].peer6, PEER6, 16);
  memcpy(r6[1].peer6, PEER6, 16);
  if (ovl_rtable6_build(&table6_, r6, 3) != 0) abort();
  eng.ipv6 = true;
  static const uint8_t sub6[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x00, 0x02};
  memcpy(eng.subnet6, sub6, 16);
  memcpy(eng.tun_address6, sub6, 16);
  memset(eng.subnet6_mask, 0xff, 8);
  wk.t6 = table6_; /* table6() returns it: no route domain here */
  wk.udp_fd = -1;  /* a packet too big / fragmentation needed back to the peer: sendto fails, tx_error */
  wk.udp6_fd = -1;
  eng.queues = 1;
  eng.slot = SLOT;
  eng.port = PORT;
  eng.tun_address = ip4(10, 244, 2, 0);
  eng.tun_mtu = TUN_MTU;
  eng.subnet = ip4(10, 244, 2, 0);
  eng.subnet_mask = 0xffffff00u;
  wk.e = &eng;
  wk.tun_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (wk.tun_fd < 0) abort();
  ovl_rcache_init(&wk.cache);
}

static uint64_t outcomes(void) {
  static const enum ovl_engine_counter ends[] = {
      OVL_EC_DROP_UNKNOWN_PEER, OVL_EC_DROP_MALFORMED, OVL_EC_DROP_SPOOFED, OVL_EC_DROP_WRONG_DST,
      OVL_EC_DROP_TOO_BIG, OVL_EC_DROP_TTL, OVL_EC_DROP_NO_ROUTE, OVL_EC_TUN_TX, OVL_EC_DROP_RING_FULL,
      OVL_EC_TUN_WRITE_ERRORS,
  };
  uint64_t n = 0;
  for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) n += wk.acc[ends[i]];
  return n + wk.ntx + wk.acc[OVL_EC_TX] + wk.acc[OVL_EC_TX_ERROR]; /* queued for sendmmsg; a packet too big sent back */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (table == NULL) setup();
  if (size < 1) return 0;
  const unsigned mode = data[0] & 3u;
  const bool over6 = (data[0] & 4u) != 0;
  const size_t len = size - 1;
  memset(buf, 0, sizeof(buf));
  memcpy(buf, data + 1, len < SLOT ? len : SLOT);
  memset(wk.acc, 0, sizeof(wk.acc));
  tx_reset(&wk);
  if (mode == 3) {
    if (len > SLOT) return 0; /* a TUN read never exceeds the buffer: the engine drops those before */
    struct dest d;
    (void)outbound(&wk, table, buf, len, &d);
    if (wk.acc[OVL_EC_TUN_RX] != 1) abort();
  } else {
    union ovl_sa from;
    memset(&from, 0, sizeof(from));
    socklen_t fl;
    if (over6) {
      from.v6.sin6_family = AF_INET6;
      memcpy(&from.v6.sin6_addr, mode == 2 ? STRANGER6 : PEER6, 16);
      from.v6.sin6_port = htons(mode == 1 ? PORT + 1 : PORT);
      fl = sizeof(from.v6);
    } else {
      from.v4.sin_family = AF_INET;
      from.v4.sin_addr.s_addr = htonl(mode == 2 ? ip4(10, 99, 0, 254) : ip4(10, 99, 0, 200));
      from.v4.sin_port = htons(mode == 1 ? PORT + 1 : PORT);
      fl = sizeof(from.v4);
    }
    inbound(&wk, table, buf, len, &from, fl);
    if (wk.acc[OVL_EC_RX] != 1 || wk.acc[OVL_EC_RX_BYTES] != len) abort();
  }
  /* exactly one end per packet; each ICMP error adds one TUN write or one datagram */
  if (outcomes() != 1 + wk.acc[OVL_EC_ICMP_SENT]) {
    fprintf(stderr, "fuzz_inbound: %llu outcomes, %llu icmp\n", (unsigned long long)outcomes(), (unsigned long long)wk.acc[OVL_EC_ICMP_SENT]);
    abort();
  }
  return 0;
}
