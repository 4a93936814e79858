/*
 * libFuzzer target: the offload paths of the native engine, as they run by default (TUN
 * with a virtio_net_hdr, TUN GRO, UDP GSO and UDP GRO on). The engine's parts (engine.c,
 * tunside.c, udpside.c, policy.c) are compiled into this file, so their static functions
 * are the code under test. An input is a SEQUENCE of records
 * (each: type, flags, a 16-bit argument, a 16-bit length, then that many bytes):
 *
 *   type 0  a receive from a peer, of one datagram or, with argument = segment size > 0,
 *           several (UDP GRO: udp_receive() splits it); up to RECV_SLOTS receives form a
 *           burst (as one recvmmsg of the engine), after which the TUN-side GRO table is
 *           flushed (as udp_burst() does)
 *   type 1  end of the burst now; then the engine's clock advances by argument ms (the
 *           ICMP rate limit runs as in production, OVL_ICMP_RATELIMIT_RATE/_BURST, on this
 *           fake clock, which starts at the same time in both runs) and the offloads whose
 *           back-off is over come back (as at the start of a thread's turn); flags bit 6:
 *           the TUN refuses the next super-packet write with EINVAL (gro_flush's fallback);
 *           flags bit 0: the routes are replaced by those whose peers take partial
 *           checksums as bits 1 (the peer 10.99.0.200) and 2 (10.99.0.1) say
 *           (OVL_ROUTE_PARTIAL_CSUM; a run starts with 10.99.0.200 taking them, 10.99.0.1 not)
 *   type 2  a TUN read: 10 bytes of struct virtio_net_hdr (any gso_type, gso_size, hdr_len,
 *           csum_start/offset, flags), then the packet (outbound_vnet(): cut, finished);
 *           flags bit 2 with gso_type 5 (UDP_L4, USO): the UDP length and the virtio
 *           header's csum_start/csum_offset/hdr_len are made consistent with the packet;
 *           flags bit 3: a TCP/UDP packet's checksum field is set to its pseudo-header sum
 *           and the header to NEEDS_CSUM at its L4 offset (a partial checksum, as the
 *           kernel hands it over)
 *   type 3  a TUN read without offload fields (an all-zero virtio_net_hdr)
 *
 * Flags of types 0/2/3 repair what random bytes rarely get right, so that the fuzzer
 * reaches the checks behind them: bit 0 IPv4 total length = the packet's length, bit 1 the
 * IPv4 header checksum, bit 2 the TCP/UDP checksum (and a UDP length) (type 0; each datagram of a receive;
 * left partial, the pseudo-header sum, when bit 15 of the argument is set: the segment
 * size is the low 15 bits);
 * bits 4-5 of type 0 pick the sender (0 the peer, 1 the peer from another port, 2 a
 * stranger) or, 3, the peer over the IPv6 underlay ([2001:db8::200]:8285). Bits 6-7 of
 * type 0 pick one of FLOW_SLOTS flow slots: a single datagram (no segment size) is
 * remembered in its slot, and with bit 3 it is made the NEXT TCP segment of the datagram
 * remembered there (its IP + TCP headers, sequence number advanced by its payload, IPv4 id
 * + 1; or, when that one is UDP, the next datagram of its flow: its IP + UDP headers, IPv4
 * id + 1, so that UDP runs form) with the record's bytes as payload, so that one mutation of a header (options, data
 * offset, flags) carries over to a whole flow and up to FLOW_SLOTS flows interleave in one
 * burst (as TCP streams between two nodes arrive in one UDP GRO receive). The TUN is a
 * SOCK_SEQPACKET socketpair whose other end this file reads.
 * The engine is dual-stack (IPv6 routes as in fuzz_inbound.c): inner IPv6 from the peer over
 * either underlay passes the engine's IPv6 inbound policy and reaches the GRO table like
 * IPv4; on an IPv6 packet the repairs are: bit 0 the payload length, bit 2 the TCP/UDP
 * checksum (TCP/UDP right after the fixed header); TUN reads take TSO6 super-packets
 * (gso_type 4) like TSO4 ones.
 *
 * The sequence runs twice: with TUN GRO on, and with it off (every packet written alone).
 * Checked, beyond what ASan/UBSan catch (any failure aborts: a finding):
 *  - UDP runs: every UDP_L4 super-packet written is well formed (take_udp_run) and its cut
 *    gives the datagrams of the run without GRO, IPv4 ids included when DF is clear.
 *  - GRO: every super-packet written is well formed (virtio_net_hdr TCPV4/NEEDS_CSUM with
 *    csum_start 20, or TCPV6 with csum_start 40; csum_offset 16, hdr_len = the headers,
 *    gso_size > 0; IPv4 total length and header checksum, or IPv6 payload length; the TCP
 *    checksum field = the pseudo-header sum), and cutting it
 *    (an independent reference here) gives exactly the packets written one by one in the
 *    run without GRO: per TCP flow the same packets in the same order (all bytes but the
 *    IPv4 id and the checksums, which are checked for validity instead), so the same byte
 *    stream; and the same for everything else written (ICMP errors, other protocols).
 *  - A packet written without GSO carries NEEDS_CSUM exactly when its checksum field holds
 *    its pseudo-header sum (an independent reference of ovl_csum_partial), at its L4
 *    offset; it is compared finished (by the reference) between the runs.
 *  - Every segment cut from a TUN super-packet and queued for a peer is a valid IPv4/TCP
 *    packet, no larger than the TUN MTU, with correct IPv4 and TCP checksums, or, when
 *    the routes say its peer takes partial checksums, the TCP/UDP checksum field = the
 *    segment's pseudo-header sum. A packet read with a partial checksum (NEEDS_CSUM at its
 *    L4 offset) and queued goes out as it is toward such a peer, finished (valid) else. From a UDP
 *    super-packet (USO): valid IPv4 or IPv6 UDP datagrams, no larger than the MTU nor than
 *    headers + gso_size, UDP length right, UDP checksum correct and not 0, the ports of the
 *    super-packet, and together exactly its payload, in order.
 *  - Every input ends in exactly one counted outcome: per burst, datagrams received = drops
 *    + packets written into the TUN (not counting ICMP errors); per TUN read, packets taken
 *    = drops + datagrams queued; at most one ICMP error per TUN read (one per super-packet);
 *    both runs end with the same engine counters; ICMP errors sent never exceed the
 *    bucket (burst + rate x elapsed fake time).
 */
#include <stdint.h>

/* The engine's clock (mono_ns): fake, advanced by type 1 records. */
static uint64_t fake_now_ns;
static uint64_t fake_mono_ns(void) { return fake_now_ns; }
#define OVL_ENGINE_MONO_NS fake_mono_ns
#define FAKE_START_NS 1000000000000ull

/* The engine's writev (TUN writes with a virtio_net_hdr): refuses one super-packet write
 * with EINVAL when asked (a type 1 record's flags bit 6). */
#include <stdbool.h>
#include <sys/uio.h>
static bool refuse_gso_write;
static unsigned gso_refusals;
static ssize_t fuzz_writev(int fd, const struct iovec *iov, int n);
#define writev fuzz_writev
#include "../src/engine.c"
#include "../src/tunside.c"
#include "../src/udpside.c"
#include "../src/policy.c"
#undef writev
static ssize_t fuzz_writev(int fd, const struct iovec *iov, int n) {
  const struct ovl_vnet_hdr *h = iov[0].iov_base;
  if (refuse_gso_write && n > 0 && iov[0].iov_len == OVL_VNET_HDR_LEN && h->gso_type != OVL_VNET_GSO_NONE) {
    refuse_gso_write = false;
    gso_refusals++;
    errno = EINVAL;
    return -1;
  }
  return writev(fd, iov, n);
}

#include <fcntl.h>
#include <stdio.h>

#define TUN_MTU 1472u
#define PORT 8285u
#define ARENA VNET_ARENA
#define RECV_SLOTS 16u /* GRO_MSGS: the engine's receives per recvmmsg */
#define FLOW_SLOTS 4u
#define CAP_BYTES (8u << 20)
#define CAP_PKTS 65536u

static struct ovl_engine eng;
static struct worker wk;
static struct ovl_gro_table grobuf;
static struct ovl_rtable *tables[4]; /* index: bit 0 10.99.0.200, bit 1 10.99.0.1 take partial checksums */
static struct ovl_rtable *table;      /* the one in use */
static unsigned table_idx;
#define TABLE_START 1u
static int tun_rd, tun_wr;
static uint8_t *udpbuf, *arena, *scratch;
static uint8_t *stubs, *gather; /* the engine's header stubs; one queued message gathered */
/* The last single datagram of type 0 per flow slot (for bit 3: its next segment). */
static uint8_t *prev[FLOW_SLOTS];
static size_t prev_len[FLOW_SLOTS];

/* What one run wrote into the TUN, normalized: super-packets cut into their segments. */
struct capture {
  uint8_t *buf;
  size_t used;
  uint32_t n;
  uint32_t off[CAP_PKTS], len[CAP_PKTS];
};
static struct capture cap_gro, cap_plain;
static uint64_t counters_gro[OVL_EC_COUNT];

static uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) { return (a << 24) | (b << 16) | (c << 8) | d; }
static struct ovl_rtable6 *table6_;
static const uint8_t PEER6[16] = {0x20, 0x01, 0x0d, 0xb8, [14] = 0x02, [15] = 0x00};

#define FAIL(...)                                  \
  do {                                             \
    fprintf(stderr, "fuzz_offload: " __VA_ARGS__); \
    fprintf(stderr, "\n");                         \
    abort();                                       \
  } while (0)

/* ---- independent references (byte-wise, not packet.c's word-at-a-time sum) ---- */
#include "fuzz_ref.h"
static uint32_t rpseudo(const uint8_t *ip, uint32_t proto, size_t l4len) {
  uint8_t ph[12];
  memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = (uint8_t)proto;
  wr16(ph + 10, (uint32_t)l4len);
  return rsum(ph, 12, 0);
}
/* IPv6 pseudo header (src, dst, 32-bit length, next header). */
static uint32_t rpseudo6(const uint8_t *ip, uint32_t proto, size_t l4len) {
  uint8_t ph[40];
  memcpy(ph, ip + 8, 32);
  wr16(ph + 32, (uint32_t)(l4len >> 16));
  wr16(ph + 34, (uint32_t)l4len);
  wr16(ph + 36, 0);
  wr16(ph + 38, proto);
  return rsum(ph, 40, 0);
}
/* IPv6 with TCP or UDP right after the fixed header (what the checks below look at). */
static bool is6(const uint8_t *p, size_t len) { return len >= 40 && (p[0] >> 4) == 6; }
static bool rip_ok(const uint8_t *p, size_t len) {
  size_t ihl = (size_t)(p[0] & 15) * 4;
  return len >= 20 && (p[0] >> 4) == 4 && ihl >= 20 && ihl <= len && rd16(p + 2) == len && rsum(p, ihl, 0) == 0xffff;
}
static bool rl4_ok(const uint8_t *p, size_t len) {
  if (is6(p, len)) return rsum(p + 40, len - 40, rpseudo6(p, p[6], len - 40)) == 0xffff;
  size_t ihl = (size_t)(p[0] & 15) * 4;
  return rsum(p + ihl, len - ihl, rpseudo(p, p[9], len - ihl)) == 0xffff;
}
/* An IPv6 packet the engine may send: version 6 and payload length = len - 40. */
static bool rip6_ok(const uint8_t *p, size_t len) { return len >= 40 && (p[0] >> 4) == 6 && rd16(p + 4) + 40u == len; }
/* Independent reference of ovl_csum_partial: TCP or UDP right after the IP header (IPv4
 * not a fragment, total length = len; IPv6 payload length = len - 40), the whole L4 header
 * there, and the checksum field = the pseudo-header sum. Returns the L4 offset (0: no) and
 * the field's offset in it. */
static size_t rl4hdr(const uint8_t *p, size_t len, size_t *coff, uint8_t *l4proto);
static size_t rpartial(const uint8_t *p, size_t len, size_t *coff) {
  uint8_t proto;
  size_t iphl = rl4hdr(p, len, coff, &proto);
  if (iphl == 0) return 0;
  uint32_t ps = is6(p, len) ? rpseudo6(p, proto, len - 40) : rpseudo(p, proto, len - iphl); /* IHL 10 is 40 bytes too */
  return rd16(p + iphl + *coff) == ps ? iphl : 0;
}
/* The structure rpartial asks for (not the field): the L4 offset or 0, the field's offset
 * and the protocol. */
static size_t rl4hdr(const uint8_t *p, size_t len, size_t *coff, uint8_t *l4proto) {
  size_t iphl;
  uint8_t proto;
  if (len < 20 || len > 65535 + 40) return 0;
  if ((p[0] >> 4) == 4) {
    iphl = (size_t)(p[0] & 15) * 4;
    if (iphl < 20 || iphl > len || rd16(p + 2) != len || (rd16(p + 6) & 0x3fff) != 0) return 0;
    proto = p[9];
  } else if ((p[0] >> 4) == 6 && len >= 40) {
    iphl = 40;
    if (rd16(p + 4) != len - 40) return 0;
    proto = p[6];
  } else {
    return 0;
  }
  size_t off = proto == 6 ? 16 : proto == 17 ? 6 : 0, l4h = proto == 6 ? 20 : 8;
  if (off == 0 || iphl + l4h > len) return 0;
  *coff = off;
  *l4proto = proto;
  return iphl;
}
/* Finishes the partial checksum of p (rpartial gave iphl/off): 0 is stored as 0xffff. */
static void rfinish(uint8_t *p, size_t len, size_t iphl, size_t off) {
  uint32_t c = ~rsum(p + iphl, len - iphl, 0) & 0xffff;
  wr16(p + iphl + off, c == 0 ? 0xffff : c);
}
/* The peer that the routes of this harness send dst (of p) to: 1 10.99.0.200, 2 10.99.0.1,
 * 0 none (fd00:10:244:200::/64 and 10.244.200.0/24; fd00:10:244:1::/64 and 10.244.1.0/24). */
static unsigned rpeer_bit(const uint8_t *p, size_t len) {
  static const uint8_t n200[8] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x02, 0x00}, n1[8] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x00, 0x01};
  if (is6(p, len)) return memcmp(p + 24, n200, 8) == 0 ? 1 : memcmp(p + 24, n1, 8) == 0 ? 2 : 0;
  if (len < 20) return 0;
  uint32_t net = rd32(p + 16) >> 8;
  return net == (ip4(10, 244, 200, 0) >> 8) ? 1 : net == (ip4(10, 244, 1, 0) >> 8) ? 2 : 0;
}
/* Repairs of the input (flags bits 0-2) on one packet of len bytes; partial: the L4
 * checksum (bit 2) is left at the pseudo-header sum. */
static void repair(uint8_t *p, size_t len, unsigned flags, bool l4, bool partial) {
  if (is6(p, len)) {
    if (flags & 1) wr16(p + 4, (uint32_t)(len - 40));
    size_t off = p[6] == 6 ? 16 : p[6] == 17 ? 6 : 0;
    if (!l4 || !(flags & 4) || off == 0 || 40 + off + 2 > len) return;
    if (p[6] == 17) wr16(p + 44, (uint32_t)(len - 40)); /* the UDP length too */
    wr16(p + 40 + off, 0);
    uint32_t ps6 = rpseudo6(p, p[6], len - 40);
    wr16(p + 40 + off, partial ? ps6 : ~rsum(p + 40, len - 40, ps6) & 0xffff);
    return;
  }
  if (len < 20) return;
  size_t ihl = (size_t)(p[0] & 15) * 4;
  if (flags & 1) wr16(p + 2, (uint32_t)len);
  if ((flags & 2) && ihl >= 20 && ihl <= len) {
    wr16(p + 10, 0);
    wr16(p + 10, ~rsum(p, ihl, 0) & 0xffff);
  }
  if (l4 && (flags & 4) && ihl >= 20 && ihl <= len) {
    size_t off = p[9] == 6 ? 16 : p[9] == 17 ? 6 : 0;
    if (off == 0 || ihl + off + 2 > len) return;
    if (p[9] == 17) wr16(p + ihl + 4, (uint32_t)(len - ihl)); /* the UDP length too */
    wr16(p + ihl + off, 0);
    uint32_t ps = rpseudo(p, p[9], len - ihl);
    wr16(p + ihl + off, partial ? ps : ~rsum(p + ihl, len - ihl, ps) & 0xffff);
  }
}

/* Repair of a type 2 record with flags bit 2 whose gso_type is UDP_L4 (USO): the UDP
 * length = the packet's, and the virtio header consistent with it (csum_start = the UDP
 * header, csum_offset 6, hdr_len = the headers); IP lengths are bit 0's. */
static void repair_uso(uint8_t *p, size_t len, struct ovl_vnet_hdr *h) {
  if (h->gso_type != OVL_VNET_GSO_UDP_L4 || len < 20) return;
  size_t iphl = (p[0] >> 4) == 6 ? 40 : (size_t)(p[0] & 15) * 4;
  if (iphl < 20 || iphl + 8 > len) return;
  wr16(p + iphl + 4, (uint32_t)(len - iphl));
  h->csum_start = (uint16_t)iphl;
  h->csum_offset = 6;
  h->hdr_len = (uint16_t)(iphl + 8);
}

static void cap_add(struct capture *c, const uint8_t *p, size_t len) {
  if (c->n == CAP_PKTS || c->used + len > CAP_BYTES) FAIL("capture full (harness limit)");
  memcpy(c->buf + c->used, p, len);
  c->off[c->n] = (uint32_t)c->used;
  c->len[c->n] = (uint32_t)len;
  c->n++;
  c->used += len;
}

/* A UDP run written as one UDP_L4 super-packet: its header checked (NEEDS_CSUM at the UDP
 * checksum, hdr_len = IP + 8, gso_size > 0, IPv4 IHL 5 with a valid header or IPv6 with
 * UDP right after the fixed header, UDP length = the rest, the checksum field = the
 * pseudo-header sum, 2..64 datagrams), then cut here as the kernel does (each datagram:
 * its lengths, IPv4 id = the first's + i, header and UDP checksums computed in full) into c. */
static void take_udp_run(struct capture *c, const struct ovl_vnet_hdr *h, const uint8_t *p, size_t len) {
  bool v6 = is6(p, len);
  size_t iphl = v6 ? 40 : 20, hdr = iphl + 8;
  if (h->flags != OVL_VNET_F_NEEDS_CSUM || h->csum_start != iphl || h->csum_offset != 6 || h->hdr_len != hdr ||
      h->gso_size == 0)
    FAIL("UDP super-packet header: flags %u csum %u/%u hdr_len %u gso_size %u", h->flags, h->csum_start, h->csum_offset,
         h->hdr_len, h->gso_size);
  if (v6 ? len <= hdr || p[6] != 17 || rd16(p + 4) != len - 40 : len <= hdr || (p[0] >> 4) != 4 || (p[0] & 15) != 5 || p[9] != 17 || !rip_ok(p, len))
    FAIL("UDP super-packet IP header (IPv%d)", v6 ? 6 : 4);
  if (rd16(p + iphl + 4) != len - iphl) FAIL("UDP super-packet: UDP length %u of %zu", rd16(p + iphl + 4), len - iphl);
  if (rd16(p + iphl + 6) != (v6 ? rpseudo6(p, 17, len - 40) : rpseudo(p, 17, len - 20)))
    FAIL("UDP super-packet checksum field is not the pseudo-header sum");
  size_t payload = len - hdr, nseg = (payload + h->gso_size - 1) / h->gso_size;
  if (nseg < 2 || nseg > OVL_GRO_SEGS_MAX) FAIL("UDP super-packet of %zu datagrams", nseg);
  for (size_t i = 0; i < nseg; i++) {
    size_t pl = i + 1 < nseg ? h->gso_size : payload - i * h->gso_size, sl = hdr + pl;
    memcpy(scratch, p, hdr);
    memcpy(scratch + hdr, p + hdr + i * h->gso_size, pl);
    if (v6) {
      wr16(scratch + 4, (uint32_t)(sl - 40));
    } else {
      wr16(scratch + 2, (uint32_t)sl);
      wr16(scratch + 4, (rd16(p + 4) + (uint32_t)i) & 0xffffu);
      wr16(scratch + 10, 0);
      wr16(scratch + 10, ~rsum(scratch, 20, 0) & 0xffff);
    }
    uint8_t *uh = scratch + iphl;
    wr16(uh + 4, (uint32_t)(sl - iphl));
    wr16(uh + 6, 0);
    uint32_t ps = v6 ? rpseudo6(scratch, 17, sl - 40) : rpseudo(scratch, 17, sl - 20);
    uint32_t ck = ~rsum(uh, sl - iphl, ps) & 0xffff;
    wr16(uh + 6, ck ? ck : 0xffff);
    cap_add(c, scratch, sl);
  }
}

/* One TUN write (virtio_net_hdr + packet), checked and normalized into c. */
static void take_write(struct capture *c, const uint8_t *m, size_t n, bool gro) {
  if (n < OVL_VNET_HDR_LEN) FAIL("TUN write of %zu bytes: no virtio_net_hdr", n);
  struct ovl_vnet_hdr h;
  memcpy(&h, m, sizeof(h));
  const uint8_t *p = m + OVL_VNET_HDR_LEN;
  size_t len = n - OVL_VNET_HDR_LEN;
  if (h.gso_type == OVL_VNET_GSO_NONE) {
    size_t coff, iphl = rpartial(p, len, &coff);
    if (h.hdr_len || h.gso_size) FAIL("plain write with hdr_len %u, gso_size %u", h.hdr_len, h.gso_size);
    if (iphl == 0) {
      if (h.flags || h.csum_start || h.csum_offset) FAIL("plain write with header fields set");
      cap_add(c, p, len);
      return;
    }
    /* a checksum left partial by the peer: NEEDS_CSUM at its L4 offset; compared finished */
    if (h.flags != OVL_VNET_F_NEEDS_CSUM || h.csum_start != iphl || h.csum_offset != coff)
      FAIL("a partial checksum written with flags %u csum %u/%u (L4 at %zu, field %zu)", h.flags, h.csum_start,
           h.csum_offset, iphl, coff);
    memcpy(scratch, p, len);
    rfinish(scratch, len, iphl, coff);
    cap_add(c, scratch, len);
    return;
  }
  if (!gro) FAIL("a super-packet written with GRO off");
  if (h.gso_type == OVL_VNET_GSO_UDP_L4) {
    take_udp_run(c, &h, p, len);
    return;
  }
  bool v6 = h.gso_type == OVL_VNET_GSO_TCPV6;
  size_t iphl = v6 ? 40 : 20;
  if ((h.gso_type != OVL_VNET_GSO_TCPV4 && !v6) || h.flags != OVL_VNET_F_NEEDS_CSUM || h.csum_start != iphl ||
      h.csum_offset != 16)
    FAIL("super-packet header: type %u flags %u csum %u/%u", h.gso_type, h.flags, h.csum_start, h.csum_offset);
  if (v6 ? len < 60 || (p[0] >> 4) != 6 || p[6] != 6 || rd16(p + 4) != len - 40
         : len < 40 || (p[0] & 15) != 5 || p[9] != 6 || !rip_ok(p, len))
    FAIL("super-packet IP header (IPv%d)", v6 ? 6 : 4);
  size_t hdr = iphl + (size_t)(p[iphl + 12] >> 4) * 4;
  if (h.hdr_len != hdr || hdr > len || h.gso_size == 0) FAIL("super-packet hdr_len %u (headers %zu), gso_size %u", h.hdr_len, hdr, h.gso_size);
  if (rd16(p + iphl + 16) != (v6 ? rpseudo6(p, 6, len - 40) : rpseudo(p, 6, len - 20)))
    FAIL("super-packet TCP checksum field is not the pseudo-header sum");
  size_t payload = len - hdr, nseg = (payload + h.gso_size - 1) / h.gso_size;
  if (nseg < 2 || nseg > OVL_GRO_SEGS_MAX) FAIL("super-packet of %zu segments", nseg);
  uint32_t seq = rd32(p + iphl + 4);
  for (size_t i = 0; i < nseg; i++) {
    size_t pl = i + 1 < nseg ? h.gso_size : payload - i * h.gso_size, sl = hdr + pl;
    memcpy(scratch, p, hdr);
    memcpy(scratch + hdr, p + hdr + i * h.gso_size, pl);
    if (v6) {
      wr16(scratch + 4, (uint32_t)(sl - 40));
    } else {
      wr16(scratch + 2, (uint32_t)sl);
      wr16(scratch + 10, 0);
      wr16(scratch + 10, ~rsum(scratch, 20, 0) & 0xffff);
    }
    uint8_t *th = scratch + iphl;
    uint32_t s = seq + (uint32_t)(i * h.gso_size);
    wr16(th + 4, s >> 16);
    wr16(th + 6, s);
    if (i + 1 < nseg) th[13] &= (uint8_t)~0x09; /* PSH, FIN on the last only */
    wr16(th + 16, 0);
    uint32_t ps = v6 ? rpseudo6(scratch, 6, sl - 40) : rpseudo(scratch, 6, sl - 20);
    wr16(th + 16, ~rsum(th, sl - iphl, ps) & 0xffff);
    cap_add(c, scratch, sl);
  }
}

static void drain(struct capture *c, bool gro) {
  for (;;) {
    ssize_t n = recv(tun_rd, scratch + 70000, 70000, MSG_DONTWAIT);
    if (n < 0) break;
    take_write(c, scratch + 70000, (size_t)n, gro);
  }
}

/* ---- setup and one run ---- */
static void setup(void) {
  for (unsigned k = 0; k < 4; k++) {
    const struct ovl_route routes[] = {
        {.net = ip4(10, 244, 200, 0), .len = 24, .peer = ip4(10, 99, 0, 200), .flags = (uint8_t)(k & 1u)},
        {.net = ip4(10, 244, 1, 0), .len = 24, .peer = ip4(10, 99, 0, 1), .flags = (uint8_t)((k >> 1) & 1u)},
    };
    if (ovl_rtable_build(&tables[k], routes, 2) != 0) abort();
  }
  table = tables[TABLE_START];
  struct ovl_route6 r6[2] = {
      {.net = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x02, 0x00}, .len = 64, .peer = ip4(10, 99, 0, 200), .has_peer6 = true},
      {.net = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x00, 0x01}, .len = 64, .peer = ip4(10, 99, 0, 1)},
  };
  memcpy(r6[0].peer6, PEER6, 16);
  if (ovl_rtable6_build(&table6_, r6, 2) != 0) abort();
  eng.ipv6 = true;
  static const uint8_t sub6[16] = {0xfd, 0, 0, 0x10, 0x02, 0x44, 0x00, 0x02};
  memcpy(eng.subnet6, sub6, 16);
  memcpy(eng.tun_address6, sub6, 16);
  memset(eng.subnet6_mask, 0xff, 8);
  eng.queues = 1;
  eng.slot = (TUN_MTU + 63u) & ~63u;
  eng.port = PORT;
  eng.tun_address = ip4(10, 244, 2, 0);
  eng.tun_mtu = TUN_MTU;
  eng.subnet = ip4(10, 244, 2, 0);
  eng.subnet_mask = 0xffffff00u;
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) abort();
  int big = 64 << 20;
  if (setsockopt(sp[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) != 0)
    (void)setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  tun_wr = sp[0];
  tun_rd = sp[1];
  if (fcntl(tun_wr, F_SETFL, O_NONBLOCK) != 0) abort();
  udpbuf = malloc((size_t)RECV_SLOTS * GRO_BUF);
  for (unsigned k = 0; k < FLOW_SLOTS; k++)
    if ((prev[k] = malloc(GRO_BUF)) == NULL) abort();
  arena = malloc(ARENA);
  stubs = malloc(STUB_BYTES);
  gather = malloc(GSO_BYTES);
  scratch = malloc(140000);
  cap_gro.buf = malloc(CAP_BYTES);
  cap_plain.buf = malloc(CAP_BYTES);
  if (!udpbuf || !arena || !stubs || !gather || !scratch || !cap_gro.buf || !cap_plain.buf) abort();
}

static void worker_reset(bool gro) {
  table_idx = TABLE_START;
  table = tables[TABLE_START];
  /* the production limit, full, at the same fake time in both runs: they must agree */
  fake_now_ns = FAKE_START_NS;
  refuse_gso_write = false;
  gso_refusals = 0;
  if (ovl_ratelimit_init(&eng.icmp_limit, OVL_ICMP_RATELIMIT_RATE, OVL_ICMP_RATELIMIT_BURST) != 0) abort();
  memset(&wk, 0, sizeof(wk));
  wk.e = &eng;
  wk.tun_fd = tun_wr;
  wk.udp_fd = -1;
  wk.udp6_fd = -1; /* a packet too big back to a peer: sendto fails, tx_error */
  wk.t6 = table6_;
  ovl_rcache_init(&wk.cache);
  wk.vnet = true;
  wk.tun_gro = gro;
  wk.udp_runs = gro; /* as worker_init: UDP runs with TUN GRO */
  wk.udp_gso = true;
  wk.udp_gro = true;
  ovl_offload_gate_init(&wk.gro_gate, gro);
  ovl_offload_gate_init(&wk.gso_gate, true);
  wk.gro = gro ? &grobuf : NULL;
  if (gro) {
    grobuf.used = 0;
    ovl_gro_table_init(&grobuf);
  }
  wk.tun_buf = arena;
  wk.tun_arena = ARENA;
  wk.stubs = stubs;
  wk.udp_buf = udpbuf;
  wk.rx_n = RECV_SLOTS;
  wk.rx_cap = GRO_BUF;
}

#define A(i) wk.acc[i]

/* Outcomes of datagrams so far: drops of the inbound checks + packets written into the
 * TUN (ICMP errors aside), minus what TUN reads added to the shared counters (shift). */
static uint64_t shift;
static uint64_t outcomes_raw(void) {
  /* ICMP errors go into the TUN, except a packet too big back to a peer (tx / tx_error:
   * nothing else counts them here, queued datagrams are never flushed) */
  return A(OVL_EC_DROP_UNKNOWN_PEER) + A(OVL_EC_DROP_MALFORMED) + A(OVL_EC_DROP_SPOOFED) + A(OVL_EC_DROP_WRONG_DST) +
         A(OVL_EC_DROP_TOO_BIG) + A(OVL_EC_DROP_TTL) + A(OVL_EC_TUN_TX) + A(OVL_EC_TX) + A(OVL_EC_TX_ERROR) - A(OVL_EC_ICMP_SENT);
}

/* End of a burst: flush; every datagram received so far has exactly one outcome, and each
 * ICMP error attempt came from a TTL drop. */
static void burst_end(struct capture *c, bool gro) {
  gro_flush(&wk);
  drain(c, gro);
  if (A(OVL_EC_DROP_RING_FULL) || A(OVL_EC_TUN_WRITE_ERRORS)) FAIL("a TUN write failed (harness: socket buffer)");
  if (A(OVL_EC_RX) != outcomes_raw() - shift)
    FAIL("%llu datagrams, %llu outcomes", (unsigned long long)A(OVL_EC_RX), (unsigned long long)(outcomes_raw() - shift));
  if (A(OVL_EC_ICMP_SENT) + A(OVL_EC_DROP_ICMP_RATELIMIT) > A(OVL_EC_DROP_TTL) + A(OVL_EC_DROP_NO_ROUTE) + A(OVL_EC_DROP_TOO_BIG))
    FAIL("more ICMP errors than TTL, no-route and too-big drops");
  /* rate 1000/s: one token per ms of fake time */
  uint64_t elapsed_ms = (fake_now_ns - FAKE_START_NS) / 1000000u;
  if (A(OVL_EC_ICMP_SENT) > OVL_ICMP_RATELIMIT_BURST + elapsed_ms * OVL_ICMP_RATELIMIT_RATE / 1000u)
    FAIL("%llu ICMP errors sent in %llu ms: more than the bucket holds", (unsigned long long)A(OVL_EC_ICMP_SENT),
         (unsigned long long)elapsed_ms);
}

static void run(const uint8_t *data, size_t size, bool gro, struct capture *c) {
  worker_reset(gro);
  c->n = 0;
  c->used = 0;
  uint32_t slot = 0;
  shift = 0;
  memset(prev_len, 0, sizeof(prev_len));
  for (unsigned rec = 0; rec < 512 && size >= 6; rec++) {
    unsigned type = data[0] & 3u, flags = data[1];
    uint32_t arg = data[2] | (uint32_t)data[3] << 8;
    size_t len = data[4] | (size_t)data[5] << 8;
    data += 6;
    size -= 6;
    if (len > size) len = size;
    const uint8_t *body = data;
    data += len;
    size -= len;
    if (type == 1) {
      burst_end(c, gro);
      slot = 0;
      fake_now_ns += (uint64_t)arg * 1000000u;
      if (wk.gro_gate.state == OVL_OFFLOAD_BACKOFF || wk.gso_gate.state == OVL_OFFLOAD_BACKOFF) retry_offloads(&wk);
      if (wk.tun_gro != (wk.gro_gate.state == OVL_OFFLOAD_ON)) FAIL("tun_gro does not mirror its gate");
      if (A(OVL_EC_TUN_GRO_FALLBACK) > gso_refusals || A(OVL_EC_TUN_GRO_REENABLE) > A(OVL_EC_TUN_GRO_FALLBACK))
        FAIL("%llu GRO fallbacks, %llu re-enables after %u refused writes", (unsigned long long)A(OVL_EC_TUN_GRO_FALLBACK),
             (unsigned long long)A(OVL_EC_TUN_GRO_REENABLE), gso_refusals);
      refuse_gso_write = gro && (flags & 0x40u);
      if (flags & 1u) {
        table_idx = (flags >> 1) & 3u;
        table = tables[table_idx];
      }
      continue;
    }
    if (type == 0) {
      uint8_t *buf = udpbuf + (size_t)slot * GRO_BUF;
      uint32_t seg = arg & 0x7fffu;
      const bool leave_partial = (arg & 0x8000u) != 0;
      unsigned fs = (flags >> 6) & (FLOW_SLOTS - 1);
      const uint8_t *pv = prev[fs];
      size_t pvl = prev_len[fs];
      bool pv6 = is6(pv, pvl);
      size_t ihl = pv6 ? 40 : pvl >= 20 ? (size_t)(pv[0] & 15) * 4 : 0;
      const bool pudp = ihl >= 20 && pvl >= 20 && (pv6 ? pv[6] : pv[9]) == 17;
      size_t hdr = pudp ? (ihl + 8 <= pvl ? ihl + 8 : 0) : ihl >= 20 && ihl + 20 <= pvl ? ihl + (size_t)(pv[ihl + 12] >> 4) * 4 : 0;
      if ((flags & 8) && seg == 0 && pudp && hdr > 0 && hdr + len <= GRO_BUF) {
        /* the NEXT datagram of the remembered UDP flow: its headers, IPv4 id + 1 */
        memcpy(buf, pv, hdr);
        memcpy(buf + hdr, body, len);
        if (!pv6) wr16(buf + 4, rd16(pv + 4) + 1);
        len += hdr;
      } else if ((flags & 8) && seg == 0 && hdr >= 40 && hdr <= pvl && hdr + len <= GRO_BUF) {
        memcpy(buf, pv, hdr);
        memcpy(buf + hdr, body, len);
        uint32_t seq = rd32(pv + ihl + 4) + (uint32_t)(pvl - hdr);
        wr16(buf + ihl + 4, seq >> 16);
        wr16(buf + ihl + 6, seq);
        if (!pv6) wr16(buf + 4, rd16(pv + 4) + 1);
        len += hdr;
      } else {
        memcpy(buf, body, len);
      }
      for (size_t off = 0; off < len; off += seg ? seg : len) {
        size_t l = seg && len - off > seg ? seg : len - off;
        repair(buf + off, l, flags, true, leave_partial);
      }
      unsigned who = (flags >> 4) & 3u;
      union ovl_sa from;
      memset(&from, 0, sizeof(from));
      socklen_t fl = sizeof(from.v4);
      if (who == 3) {
        from.v6.sin6_family = AF_INET6;
        memcpy(&from.v6.sin6_addr, PEER6, 16);
        from.v6.sin6_port = htons(PORT);
        fl = sizeof(from.v6);
      } else {
        from.v4.sin_family = AF_INET;
        from.v4.sin_addr.s_addr = htonl(who == 2 ? ip4(10, 99, 0, 254) : ip4(10, 99, 0, 200));
        from.v4.sin_port = htons(who == 1 ? PORT + 1 : PORT);
      }
      if (seg == 0 || len <= seg) { /* before the engine edits it (TTL) */
        memcpy(prev[fs], buf, len);
        prev_len[fs] = len;
      }
      udp_receive(&wk, table, buf, len, seg, &from, fl);
      drain(c, gro); /* ICMP errors are written at once */
      if (++slot == RECV_SLOTS) {
        burst_end(c, gro);
        slot = 0;
      }
      continue;
    }
    /* a TUN read: types 2 (with the header given) and 3 (all-zero header) */
    struct ovl_vnet_hdr h;
    memset(&h, 0, sizeof(h));
    if (type == 2) {
      if (len < OVL_VNET_HDR_LEN) continue;
      memcpy(&h, body, OVL_VNET_HDR_LEN);
      body += OVL_VNET_HDR_LEN;
      len -= OVL_VNET_HDR_LEN;
    }
    if (len == 0) continue; /* the engine drops a read of only a header before this */
    memcpy(arena, body, len);
    repair(arena, len, flags & 3u, false, false);
    if (type == 2 && (flags & 4)) repair_uso(arena, len, &h);
    if (type == 2 && (flags & 8)) { /* a partial checksum as the kernel leaves it */
      size_t iphl = is6(arena, len) ? 40 : len >= 20 ? (size_t)(arena[0] & 15) * 4 : 0;
      uint8_t proto = is6(arena, len) ? arena[6] : iphl ? arena[9] : 0;
      size_t off = proto == 6 ? 16 : proto == 17 ? 6 : 0;
      if (off && iphl >= 20 && iphl + off + 2 <= len) {
        wr16(arena + iphl + off, is6(arena, len) ? rpseudo6(arena, proto, len - 40) : rpseudo(arena, proto, len - iphl));
        h.flags = OVL_VNET_F_NEEDS_CSUM;
        h.csum_start = (uint16_t)iphl;
        h.csum_offset = (uint16_t)off;
      }
    }
    /* the peer of this read takes partial checksums (the routes in use); the read as it
     * is a partial checksum that outbound_vnet may keep */
    const bool to_partial = (table_idx & rpeer_bit(arena, len)) != 0;
    size_t in_coff = 0, in_l4 = h.gso_type == OVL_VNET_GSO_NONE && (h.flags & OVL_VNET_F_NEEDS_CSUM) ? rpartial(arena, len, &in_coff) : 0;
    if (in_l4 && (h.csum_start != in_l4 || h.csum_offset != in_coff)) in_l4 = 0;
    const bool uso = h.gso_type == OVL_VNET_GSO_UDP_L4;
    const size_t uso_hdr = len >= 20 ? ((arena[0] >> 4) == 6 ? 40u : (size_t)(arena[0] & 15) * 4) + 8u : 0;
    size_t uso_done = 0; /* payload bytes of the UDP super-packet seen in its datagrams so far */
    bool v6 = len >= 40 && (arena[0] >> 4) == 6;
    uint8_t ttl = v6 ? arena[7] : len >= 20 ? arena[8] : 0;
    uint64_t rx_0 = A(OVL_EC_TUN_RX), icmp_0 = A(OVL_EC_ICMP_SENT) + A(OVL_EC_DROP_ICMP_RATELIMIT);
    uint64_t d0 = A(OVL_EC_DROP_MALFORMED) + A(OVL_EC_DROP_NO_ROUTE) + A(OVL_EC_DROP_TTL) + A(OVL_EC_DROP_TUN_OVERSIZE);
    uint64_t raw0 = outcomes_raw();
    outbound_vnet(&wk, table, &h, arena, len);
    shift += outcomes_raw() - raw0;
    drain(c, gro);
    uint64_t taken = A(OVL_EC_TUN_RX) - rx_0;
    uint64_t drops = A(OVL_EC_DROP_MALFORMED) + A(OVL_EC_DROP_NO_ROUTE) + A(OVL_EC_DROP_TTL) + A(OVL_EC_DROP_TUN_OVERSIZE) - d0;
    uint64_t queued = 0;
    for (uint32_t i = 0; i < wk.ntx; i++) {
      /* the message as the kernel reads it: its iovecs (stubs + slices of the read) in order */
      const struct msghdr *m = &wk.tx_msgs[i].msg_hdr;
      size_t left = 0, seg = wk.tx_seg[i];
      for (size_t k = 0; k < m->msg_iovlen; k++) {
        if (left + m->msg_iov[k].iov_len > GSO_BYTES) FAIL("message of more than %u bytes", GSO_BYTES);
        memcpy(gather + left, m->msg_iov[k].iov_base, m->msg_iov[k].iov_len);
        left += m->msg_iov[k].iov_len;
      }
      if (left != wk.tx_bytes[i]) FAIL("message %u: %zu bytes in its iovecs, %u counted", i, left, wk.tx_bytes[i]);
      const uint8_t *p = gather;
      for (uint32_t k = 0; k < wk.tx_nseg[i]; k++) {
        size_t l = left < seg ? left : seg;
        if (l > TUN_MTU) FAIL("queued datagram of %zu bytes > TUN MTU", l);
        if (v6) {
          if (!rip6_ok(p, l)) FAIL("queued datagram: invalid IPv6 header/length");
          if (p[7] + 1u != ttl) FAIL("queued datagram: hop limit %u, read with %u", p[7], ttl);
          if (h.gso_type != OVL_VNET_GSO_NONE && p[6] != (uso ? 17 : 6))
            FAIL("segment of a TSO6/USO super-packet: not TCP/UDP");
        } else {
          if (!rip_ok(p, l)) FAIL("queued datagram: invalid IPv4 header");
          if (p[8] + 1u != ttl) FAIL("queued datagram: TTL %u, read with %u", p[8], ttl);
          if (h.gso_type != OVL_VNET_GSO_NONE && p[9] != (uso ? 17 : 6)) FAIL("segment of a super-packet: not TCP/UDP");
        }
        if (h.gso_type != OVL_VNET_GSO_NONE || in_l4) {
          /* toward a peer that takes them: the checksum left partial (the field = the
           * segment's pseudo-header sum) where the peer recognises one (not an IPv4
           * fragment, ...: rl4hdr); else a valid full checksum */
          size_t coff;
          uint8_t l4p;
          const bool want_partial = to_partial && rl4hdr(p, l, &coff, &l4p) != 0;
          if (want_partial ? rpartial(p, l, &coff) == 0 : !rl4_ok(p, l))
            FAIL("%s: checksum %#x not %s", h.gso_type != OVL_VNET_GSO_NONE ? "segment of a super-packet" : "a partial read",
                 rd16(p + (v6 ? 40 : (size_t)(p[0] & 15) * 4) + (uso || (v6 ? p[6] : p[9]) == 17 ? 6 : 16)),
                 want_partial ? "partial (the pseudo-header sum)" : "valid");
        }
        if (uso) { /* a datagram cut from a UDP super-packet: its part of the payload, in order */
          size_t iphl = uso_hdr - 8;
          if (l < uso_hdr || l > uso_hdr + h.gso_size) FAIL("USO datagram of %zu bytes, headers %zu, gso_size %u", l, uso_hdr, h.gso_size);
          if (rd16(p + iphl + 4) != l - iphl || rd16(p + iphl + 6) == 0) FAIL("USO datagram: UDP length %u (%zu), checksum %u", rd16(p + iphl + 4), l - iphl, rd16(p + iphl + 6));
          if (memcmp(p + iphl, arena + iphl, 4) != 0) FAIL("USO datagram: ports differ from the super-packet's");
          if (uso_hdr + uso_done + (l - uso_hdr) > len || memcmp(p + uso_hdr, arena + uso_hdr + uso_done, l - uso_hdr) != 0)
            FAIL("USO datagram: payload not the super-packet's bytes at %zu", uso_done);
          uso_done += l - uso_hdr;
        }
        p += l;
        left -= l;
        queued++;
      }
      if (left != 0) FAIL("message bytes beyond its datagrams");
    }
    tx_reset(&wk);
    wk.stub_used = 0; /* as tun_burst does before its next read */
    if (uso && queued > 0 && uso_hdr + uso_done != len) FAIL("USO: datagrams carry %zu of %zu payload bytes", uso_done, len - uso_hdr);
    if (taken == 0 ? drops != 1 : taken != drops + queued)
      FAIL("TUN read: %llu packets taken, %llu drops, %llu queued", (unsigned long long)taken, (unsigned long long)drops, (unsigned long long)queued);
    if (A(OVL_EC_ICMP_SENT) + A(OVL_EC_DROP_ICMP_RATELIMIT) - icmp_0 > 1) FAIL("more than one ICMP error for one TUN read");
  }
  burst_end(c, gro);
}

/* ---- comparing the two runs ---- */
static const struct capture *cmp_cap;
#define KEY_LEN 37u /* family and protocol, addresses (up to 32 bytes), ports */
/* TCP flows and UDP flows (ports readable: not a later fragment) keep their order; the
 * rest (key 0) keep their order among themselves. */
static void flow_key(const uint8_t *p, size_t len, uint8_t key[KEY_LEN]) {
  memset(key, 0, KEY_LEN);
  if (is6(p, len)) {
    if ((p[6] == 6 && len >= 60) || (p[6] == 17 && len >= 48)) {
      key[0] = p[6] == 6 ? 6 : 16;
      memcpy(key + 1, p + 8, 32);
      memcpy(key + 33, p + 40, 4);
    }
    return;
  }
  size_t ihl = len >= 20 && (p[0] >> 4) == 4 ? (size_t)(p[0] & 15) * 4 : 0;
  bool first = len >= 20 && (rd16(p + 6) & 0x1fff) == 0;
  if (ihl >= 20 && ((p[9] == 6 && ihl + 20 <= len) || (p[9] == 17 && first && ihl + 8 <= len))) {
    key[0] = p[9] == 6 ? 4 : 14;
    memcpy(key + 1, p + 12, 8);
    memcpy(key + 9, p + ihl, 4);
  }
}
static int by_flow(const void *a, const void *b) {
  uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
  uint8_t ka[KEY_LEN], kb[KEY_LEN];
  flow_key(cmp_cap->buf + cmp_cap->off[i], cmp_cap->len[i], ka);
  flow_key(cmp_cap->buf + cmp_cap->off[j], cmp_cap->len[j], kb);
  int r = memcmp(ka, kb, KEY_LEN);
  return r ? r : (i > j) - (i < j);
}
static uint32_t order_a[CAP_PKTS], order_b[CAP_PKTS];
static void sort_flows(const struct capture *c, uint32_t *order) {
  for (uint32_t i = 0; i < c->n; i++) order[i] = i;
  cmp_cap = c;
  qsort(order, c->n, sizeof(*order), by_flow);
}
/* Equal but for the IPv4 id (kept by UDP runs without DF: compared there) and the
 * checksums; the GRO run's TCP segments and UDP datagrams must verify where the plain
 * run's do. */
static bool same_packet(const uint8_t *a, size_t la, const uint8_t *b, size_t lb) {
  if (la != lb) return false;
  if (la < 20) return memcmp(a, b, la) == 0;
  bool v6 = is6(a, la);
  size_t ihl = v6 ? 40 : (size_t)(a[0] & 15) * 4;
  bool tcp = (v6 ? a[6] == 6 : a[9] == 6) && ihl >= 20 && ihl + 20 <= la;
  bool udp = (v6 ? a[6] == 17 : a[9] == 17) && ihl >= 20 && ihl + 8 <= la && (v6 || (rd16(a + 6) & 0x3fff) == 0);
  bool udp_ids = udp && !v6 && !(rd16(a + 6) & 0x4000); /* no DF: ids matter */
  size_t coff = tcp ? 16 : 6;
  for (size_t i = 0; i < la; i++) {
    if (!v6 && (i == 10 || i == 11)) continue;
    if (!v6 && !udp_ids && (i == 4 || i == 5)) continue;
    if ((tcp || udp) && (i == ihl + coff || i == ihl + coff + 1)) continue;
    if (a[i] != b[i]) return false;
  }
  if (v6 && (tcp || udp) && rl4_ok(b, lb) && !rl4_ok(a, la)) return false;
  if (!v6 && (tcp || udp) && rip_ok(b, lb) && rl4_ok(b, lb) && !(rip_ok(a, la) && rl4_ok(a, la))) return false;
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (table == NULL) setup();
  run(data, size, true, &cap_gro);
  memcpy(counters_gro, wk.acc, sizeof(counters_gro));
#ifdef FUZZ_OFFLOAD_VERBOSE /* -DFUZZ_OFFLOAD_VERBOSE: what the seeds reach (GRO writes per input) */
  fprintf(stderr, "input of %zu bytes: %llu coalesced writes of %llu packets written\n", size,
          (unsigned long long)wk.acc[OVL_EC_TUN_GRO_WRITES], (unsigned long long)wk.acc[OVL_EC_TUN_TX]);
#endif
  run(data, size, false, &cap_plain);
  for (uint32_t i = 0; i < OVL_EC_COMMON; i++)
    if (counters_gro[i] != wk.acc[i])
      FAIL("counter %s: %llu with GRO, %llu without", ovl_engine_counter_names[i], (unsigned long long)counters_gro[i],
           (unsigned long long)wk.acc[i]);
  if (cap_gro.n != cap_plain.n) FAIL("%u packets written with GRO (cut), %u without", cap_gro.n, cap_plain.n);
  sort_flows(&cap_gro, order_a);
  sort_flows(&cap_plain, order_b);
  for (uint32_t k = 0; k < cap_gro.n; k++) {
    uint32_t i = order_a[k], j = order_b[k];
    if (!same_packet(cap_gro.buf + cap_gro.off[i], cap_gro.len[i], cap_plain.buf + cap_plain.off[j], cap_plain.len[j]))
    {
      const uint8_t *x = cap_gro.buf + cap_gro.off[i], *y = cap_plain.buf + cap_plain.off[j];
      size_t d = 0;
      while (d < cap_gro.len[i] && d < cap_plain.len[j] && (x[d] == y[d] || d == 4 || d == 5 || d == 10 || d == 11 ||
                                                            d == 36 || d == 37))
        d++;
      fprintf(stderr, "gro: ip %d l4 %d; plain: ip %d l4 %d\n", rip_ok(x, cap_gro.len[i]), rl4_ok(x, cap_gro.len[i]),
              rip_ok(y, cap_plain.len[j]), rl4_ok(y, cap_plain.len[j]));
      FAIL("packet %u (sorted by flow) differs between the GRO run (#%u, %u bytes) and the plain run (#%u, %u bytes): "
           "first difference at byte %zu (%#x vs %#x)", k, i, cap_gro.len[i], j, cap_plain.len[j], d,
           d < cap_gro.len[i] ? x[d] : 0, d < cap_plain.len[j] ? y[d] : 0);
    }
  }
  return 0;
}
