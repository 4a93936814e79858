/*
 * libFuzzer target: the native engine's per-packet paths, inbound (peer -> TUN) and
 * outbound (TUN -> peer), exactly as the forwarding threads run them: engine.c is compiled
 * into this file so its static inbound()/outbound() are the code under test, not a copy.
 *
 * Input: byte 0 selects the path and the sender (bits 0-1: 0 = the peer 10.99.0.200:8285,
 * 1 = that peer on another port, 2 = a non-peer, 3 = outbound from the TUN); the rest is the
 * datagram or packet. A buffer of SLOT bytes holds at most SLOT of it while `len` keeps the
 * real length, as recvmmsg with MSG_TRUNC leaves it. The TUN is /dev/null.
 *
 * Checked on every input, besides what ASan/UBSan catch: the packet ends as exactly one
 * outcome (one drop reason, or written into the TUN / queued for sending), ICMP errors
 * adding one TUN write each; anything else aborts (a finding).
 */
#include "../src/engine.c"

#include <fcntl.h>
#include <stdio.h>

#define SLOT 1536u
#define TUN_MTU 1472u
#define PORT 8285u

static struct ovl_engine eng;
static struct worker wk;
static struct ovl_rtable *table;
static uint8_t buf[SLOT];

static uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) { return (a << 24) | (b << 16) | (c << 8) | d; }

static void setup(void) {
  const struct ovl_route routes[] = {
      {.net = ip4(10, 244, 200, 0), .len = 24, .peer = ip4(10, 99, 0, 200)},
      {.net = ip4(10, 244, 1, 0), .len = 24, .peer = ip4(10, 99, 0, 1)},
      {.net = ip4(10, 245, 0, 0), .len = 16, .peer = ip4(10, 99, 0, 200)},
  };
  if (ovl_rtable_build(&table, routes, sizeof(routes) / sizeof(routes[0])) != 0) abort();
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
  return n + wk.ntx; /* queued for sendmmsg */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (table == NULL) setup();
  if (size < 1) return 0;
  const unsigned mode = data[0] & 3u;
  const size_t len = size - 1;
  memset(buf, 0, sizeof(buf));
  memcpy(buf, data + 1, len < SLOT ? len : SLOT);
  memset(wk.acc, 0, sizeof(wk.acc));
  wk.ntx = 0;
  if (mode == 3) {
    if (len > SLOT) return 0; /* a TUN read never exceeds the buffer: the engine drops those before */
    uint32_t peer;
    (void)outbound(&wk, table, buf, len, &peer);
    if (wk.acc[OVL_EC_TUN_RX] != 1) abort();
  } else {
    struct sockaddr_in from = {.sin_family = AF_INET};
    from.sin_addr.s_addr = htonl(mode == 2 ? ip4(10, 99, 0, 254) : ip4(10, 99, 0, 200));
    from.sin_port = htons(mode == 1 ? PORT + 1 : PORT);
    inbound(&wk, table, buf, len, &from, sizeof(from));
    if (wk.acc[OVL_EC_RX] != 1 || wk.acc[OVL_EC_RX_BYTES] != len) abort();
  }
  /* exactly one end per packet; each ICMP error adds one TUN write */
  if (outcomes() != 1 + wk.acc[OVL_EC_ICMP_SENT]) {
    fprintf(stderr, "fuzz_inbound: %llu outcomes, %llu icmp\n", (unsigned long long)outcomes(), (unsigned long long)wk.acc[OVL_EC_ICMP_SENT]);
    abort();
  }
  return 0;
}
