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
 * real length, as recvmmsg with MSG_TRUNC leaves it. The TUN is a SOCK_SEQPACKET
 * socketpair whose other end this file reads.
 * Partial checksums (overlayd peers): byte 0 bit 3: the routes say the peer 10.99.0.200
 * takes partial checksums (OVL_ROUTE_PARTIAL_CSUM); bit 4: the packet's TCP/UDP checksum
 * field is set to its pseudo-header sum (TCP/UDP right after the IP header), as a peer
 * or the kernel leaves it; bit 5: the TUN queue has a virtio_net_hdr (TUN writes carry
 * one; an outbound packet is read with one, NEEDS_CSUM at its L4 offset with bit 4, else
 * all zero, and goes through outbound_vnet()).
 *
 * Checked on every input, besides what ASan/UBSan catch: the packet ends as exactly one
 * outcome (one drop reason, or written into the TUN / queued for sending), ICMP errors
 * adding one TUN write or one datagram each (a packet too big or a fragmentation needed
 * goes back to the peer over UDP: its sendto on a closed fd counts tx_error). Every TUN write:
 * with a virtio_net_hdr, NEEDS_CSUM at the L4 offset exactly when the checksum field holds
 * the pseudo-header sum (an independent reference of ovl_csum_partial), else an all-zero
 * header; without one, no checksum left at the pseudo-header sum unless it also verifies
 * (finished). An outbound packet read partial and queued: toward a peer that takes partial
 * checksums the field is still the pseudo-header sum, else the full checksum verifies.
 * Anything else aborts (a finding).
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
static struct ovl_rtable *tables[2]; /* [1]: 10.99.0.200 takes partial checksums */
static struct ovl_rtable *table;
static struct ovl_rtable6 *table6_;
static int tun_rd;
static const uint8_t PEER6[16] = {0x20, 0x01, 0x0d, 0xb8, [14] = 0x02, [15] = 0x00};
static const uint8_t STRANGER6[16] = {0x20, 0x01, 0x0d, 0xb8, [14] = 0x02, [15] = 0x54};
static uint8_t buf[SLOT];

static uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) { return (a << 24) | (b << 16) | (c << 8) | d; }

static void setup(void) {
  for (unsigned k = 0; k < 2; k++) {
    const struct ovl_route routes[] = {
        {.net = ip4(10, 244, 200, 0), .len = 24, .peer = ip4(10, 99, 0, 200), .flags = (uint8_t)k},
        {.net = ip4(10, 244, 1, 0), .len = 24, .peer = ip4(10, 99, 0, 1)},
        {.net = ip4(10, 245, 0, 0), .len = 16, .peer = ip4(10, 99, 0, 200)},
    };
    if (ovl_rtable_build(&tables[k], routes, sizeof(routes) / sizeof(routes[0])) != 0) abort();
  }
  table = tables[0];
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
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) abort();
  if (fcntl(sp[0], F_SETFL, O_NONBLOCK) != 0) abort();
  wk.tun_fd = sp[0];
  tun_rd = sp[1];
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

/* ---- independent references (byte-wise sums) ---- */
#include "fuzz_ref.h"
/* The pseudo-header sum of p (IPv4 header iphl bytes, or IPv6: iphl 40) for proto. */
static uint32_t rpseudo(const uint8_t *p, size_t len, size_t iphl, uint8_t proto) {
  uint8_t ph[40];
  size_t l4 = len - iphl;
  if (iphl == 40 && (p[0] >> 4) == 6) {
    memcpy(ph, p + 8, 32);
    ph[32] = (uint8_t)(l4 >> 24), ph[33] = (uint8_t)(l4 >> 16), ph[34] = (uint8_t)(l4 >> 8), ph[35] = (uint8_t)l4;
    ph[36] = ph[37] = ph[38] = 0;
    ph[39] = proto;
    return rsum(ph, 40, 0);
  }
  memcpy(ph, p + 12, 8);
  ph[8] = 0;
  ph[9] = proto;
  ph[10] = (uint8_t)(l4 >> 8), ph[11] = (uint8_t)l4;
  return rsum(ph, 12, 0);
}
/* TCP/UDP right after the IP header (IPv4 not a fragment, total length = len; IPv6
 * payload length = len - 40), the L4 header whole: its offset (0: not), *off the field's. */
static size_t rl4(const uint8_t *p, size_t len, size_t *off, uint8_t *proto) {
  size_t iphl;
  if (len < 20 || len > 65535 + 40) return 0;
  if ((p[0] >> 4) == 4) {
    iphl = (size_t)(p[0] & 15) * 4;
    if (iphl < 20 || iphl > len || rd16(p + 2) != len || (rd16(p + 6) & 0x3fff) != 0) return 0;
    *proto = p[9];
  } else if ((p[0] >> 4) == 6 && len >= 40) {
    iphl = 40;
    if (rd16(p + 4) != len - 40) return 0;
    *proto = p[6];
  } else {
    return 0;
  }
  *off = *proto == 6 ? 16 : *proto == 17 ? 6 : 0;
  if (*off == 0 || iphl + (*proto == 6 ? 20u : 8u) > len) return 0;
  return iphl;
}
/* Independent reference of ovl_csum_partial: the field holds the pseudo-header sum. */
static size_t rpartial(const uint8_t *p, size_t len, size_t *off) {
  uint8_t proto;
  size_t iphl = rl4(p, len, off, &proto);
  return iphl && rd16(p + iphl + *off) == rpseudo(p, len, iphl, proto) ? iphl : 0;
}
static bool rl4_ok(const uint8_t *p, size_t len) {
  size_t off;
  uint8_t proto;
  size_t iphl = rl4(p, len, &off, &proto);
  return iphl && rsum(p + iphl, len - iphl, rpseudo(p, len, iphl, proto)) == 0xffff;
}

/* Every TUN write of this input, checked (see the top). */
static void check_tun_writes(void) {
  static uint8_t m[70000];
  for (;;) {
    ssize_t n = recv(tun_rd, m, sizeof(m), MSG_DONTWAIT);
    if (n < 0) break;
    const uint8_t *p = m;
    size_t len = (size_t)n, off, iphl;
    if (wk.vnet) {
      if (len < OVL_VNET_HDR_LEN) abort();
      struct ovl_vnet_hdr h;
      memcpy(&h, m, sizeof(h));
      p += OVL_VNET_HDR_LEN;
      len -= OVL_VNET_HDR_LEN;
      iphl = rpartial(p, len, &off);
      if (h.gso_type || h.hdr_len || h.gso_size) abort();
      if (iphl ? h.flags != OVL_VNET_F_NEEDS_CSUM || h.csum_start != iphl || h.csum_offset != off
               : h.flags || h.csum_start || h.csum_offset) {
        fprintf(stderr, "fuzz_inbound: TUN write with flags %u csum %u/%u, partial at %zu/%zu\n", h.flags, h.csum_start,
                h.csum_offset, iphl, off);
        abort();
      }
    } else if (rpartial(p, len, &off) && !rl4_ok(p, len)) {
      fprintf(stderr, "fuzz_inbound: a partial checksum written without a virtio_net_hdr, not finished\n");
      abort();
    }
  }
}

/* Sets the TCP/UDP checksum field of p to its pseudo-header sum (byte 0 bit 4). */
static void make_partial(uint8_t *p, size_t len) {
  size_t off;
  uint8_t proto;
  size_t iphl = rl4(p, len, &off, &proto);
  if (iphl == 0) return;
  uint32_t ps = rpseudo(p, len, iphl, proto);
  p[iphl + off] = (uint8_t)(ps >> 8);
  p[iphl + off + 1] = (uint8_t)ps;
}

/* The datagrams queued by an outbound packet read partial (iphl/off: where): toward a
 * peer that takes them still partial, else valid. */
static void check_queued(bool to_partial) {
  static uint8_t g[70000];
  for (uint32_t i = 0; i < wk.ntx; i++) {
    const struct msghdr *mh = &wk.tx_msgs[i].msg_hdr;
    size_t l = 0, off;
    for (size_t k = 0; k < mh->msg_iovlen; k++) {
      if (l + mh->msg_iov[k].iov_len > sizeof(g)) abort();
      memcpy(g + l, mh->msg_iov[k].iov_base, mh->msg_iov[k].iov_len);
      l += mh->msg_iov[k].iov_len;
    }
    if (to_partial ? rpartial(g, l, &off) == 0 : !rl4_ok(g, l)) {
      fprintf(stderr, "fuzz_inbound: a partial read queued %s\n", to_partial ? "finished" : "unfinished");
      abort();
    }
  }
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
  table = tables[(data[0] >> 3) & 1u];
  wk.vnet = (data[0] & 0x20u) != 0;
  if ((data[0] & 0x10u) && len <= SLOT) make_partial(buf, len);
  if (mode == 3) {
    if (len > SLOT) return 0; /* a TUN read never exceeds the buffer: the engine drops those before */
    if (wk.vnet) {
      struct ovl_vnet_hdr h;
      memset(&h, 0, sizeof(h));
      size_t off, iphl = (data[0] & 0x10u) ? rpartial(buf, len, &off) : 0;
      if (iphl) {
        h.flags = OVL_VNET_F_NEEDS_CSUM;
        h.csum_start = (uint16_t)iphl;
        h.csum_offset = (uint16_t)off;
      }
      /* the routes of this file to 10.99.0.200: 10.244.200.0/24, 10.245.0.0/16,
       * fd00:10:244:200::/64, fd00:10:245::/48 */
      static const uint8_t n200[8] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x02, 0x00}, n245[6] = {0xfd, 0, 0, 0x10, 0x02, 0x45};
      bool to200 = len >= 40 && (buf[0] >> 4) == 6
                       ? memcmp(buf + 24, n200, 8) == 0 || memcmp(buf + 24, n245, 6) == 0
                       : len >= 20 && buf[16] == 10 && ((buf[17] == 244 && buf[18] == 200) || buf[17] == 245);
      outbound_vnet(&wk, table, &h, buf, len);
      if (iphl) check_queued(to200 && table == tables[1]);
    } else {
      struct dest d;
      (void)outbound(&wk, table, buf, len, &d);
    }
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
  check_tun_writes();
  /* exactly one end per packet; each ICMP error adds one TUN write or one datagram */
  if (outcomes() != 1 + wk.acc[OVL_EC_ICMP_SENT]) {
    fprintf(stderr, "fuzz_inbound: %llu outcomes, %llu icmp\n", (unsigned long long)outcomes(), (unsigned long long)wk.acc[OVL_EC_ICMP_SENT]);
    abort();
  }
  return 0;
}
