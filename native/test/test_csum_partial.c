/* Partial TCP/UDP checksums between overlayd peers (offload.c, uso.c, route.c), against
 * references written here (pseudo headers built byte by byte, testpkt.h's byte-wise sum):
 *  - ovl_csum_partial: the header it fills for IPv4/IPv6 TCP/UDP, and every refusal
 *    (fragments, length mismatches, extension headers, other protocols, short packets,
 *    UDP checksum 0, a valid full checksum); ovl_vnet_csum_is_partial;
 *  - the safety argument: a packet with a VALID full checksum that happens to equal its
 *    pseudo-header sum keeps exactly that checksum when finished as partial;
 *  - ovl_gso_cut / ovl_uso_cut with OVL_CUT_PARTIAL_CSUM: the segments of the full cut
 *    but for the checksum field (the segment's pseudo-header sum), and finished they are
 *    the full cut's segments byte for byte (IPv4 and IPv6, short last segments);
 *  - GRO: partial segments coalesce, a segment neither partial nor valid is refused;
 *  - ovl_rtable_peer_flags: the OR over a peer's routes, a replaced route's flags gone. */
#include "overlayd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

#define TCP 6u
#define UDP 17u

static uint8_t p[70000], q[70000], out[140000], stubs[OVL_GSO_SEGS_MAX * 120];
static uint32_t lens[OVL_GSO_SEGS_MAX];
static struct ovl_gso_seg segs[OVL_GSO_SEGS_MAX];

/* A packet of len bytes at s: IPv4 (IHL ihl, DF) or IPv6, TCP (data offset 5, ACK) or UDP
 * (length right), random addresses, ports and payload; checksum field not set. */
static size_t make(uint8_t *s, int v6, unsigned ihl, uint8_t proto, size_t len) {
  if (v6) {
    for (size_t i = 0; i < len; i++) s[i] = (uint8_t)rnd();
    s[0] = 0x60;
    wr16(s + 4, (uint32_t)(len - 40));
    s[6] = proto;
    s[7] = 64;
  } else {
    make_pkt(s, len, ihl, proto, 64, rnd(), rnd());
  }
  size_t iphl = tp_iphl(s);
  if (proto == TCP && len >= iphl + 20) {
    s[iphl + 12] = 0x50;
    s[iphl + 13] = 0x10;
  }
  if (proto == UDP && len >= iphl + 8) wr16(s + iphl + 4, (uint32_t)(len - iphl));
  return len;
}

static const char *fam(int v6) { return v6 ? "IPv6" : "IPv4"; }
static const char *pname(uint8_t proto) { return proto == TCP ? "TCP" : "UDP"; }

/* ---------------------------------------------------------------- recognition ---------- */

static void test_true(int v6, unsigned ihl, uint8_t proto) {
  size_t len = make(p, v6, ihl, proto, 300 + rnd() % 200);
  tp_set_partial(p, len);
  struct ovl_vnet_hdr h;
  memset(&h, 0xa5, sizeof(h));
  size_t iphl = tp_iphl(p);
  bool r = ovl_csum_partial(p, len, &h);
  tap_ok(r && h.flags == OVL_VNET_F_NEEDS_CSUM && h.gso_type == OVL_VNET_GSO_NONE && h.hdr_len == 0 && h.gso_size == 0 &&
             h.csum_start == iphl && h.csum_offset == tp_csum_off(proto),
         "%s (header %zu) %s, field = pseudo sum: partial, NEEDS_CSUM at %u/%u, no GSO", fam(v6), iphl, pname(proto),
         h.csum_start, h.csum_offset);
  tap_ok(ovl_vnet_csum_is_partial(p, len, &h), "%s %s: ovl_vnet_csum_is_partial with that header", fam(v6), pname(proto));
  struct ovl_vnet_hdr b = h;
  b.flags = 0;
  int no_flag = !ovl_vnet_csum_is_partial(p, len, &b);
  b = h;
  b.csum_offset = (uint16_t)(proto == TCP ? 6 : 16);
  int other_off = !ovl_vnet_csum_is_partial(p, len, &b);
  b = h;
  b.csum_start = (uint16_t)(iphl + 4);
  tap_ok(no_flag && other_off && !ovl_vnet_csum_is_partial(p, len, &b),
         "%s %s: ovl_vnet_csum_is_partial false without NEEDS_CSUM, at another offset or start", fam(v6), pname(proto));
  /* finished, it verifies */
  memcpy(q, p, len);
  tap_ok(ovl_vnet_csum_finish(q, len, &h) == 0 && tp_l4_ok(q, len) && memcmp(q, p, iphl) == 0,
         "%s %s: finished with that header, the full checksum verifies", fam(v6), pname(proto));
}

static void refuse(int cond, const char *what) { tap_ok(cond, "not partial: %s", what); }

static bool partial(const uint8_t *s, size_t len) {
  struct ovl_vnet_hdr h;
  return ovl_csum_partial(s, len, &h);
}

static void test_false(void) {
  size_t len = make(p, 0, 5, TCP, 400);
  tp_set_partial(p, len);
  TAP_ASSERT(partial(p, len), "the base packet is partial");
  wr16(p + 6, 0x2000); /* MF */
  refuse(!partial(p, len), "IPv4 MF set");
  wr16(p + 6, 0x0010); /* offset 128 */
  refuse(!partial(p, len), "IPv4 fragment offset");
  wr16(p + 6, 0x4000);
  TAP_ASSERT(partial(p, len), "DF alone is fine");
  wr16(p + 2, (uint32_t)(len - 1));
  refuse(!partial(p, len), "IPv4 total length != len (len - 1)");
  wr16(p + 2, (uint32_t)len);
  refuse(!partial(p, len - 1), "IPv4 buffer shorter than the total length");
  p[9] = 1; /* ICMP; its bytes at 6 and 16 hold the pseudo sum for proto 1 */
  wr16(p + 20 + 6, tp_pseudo(p, len));
  wr16(p + 20 + 16, tp_pseudo(p, len));
  refuse(!partial(p, len), "IPv4 ICMP");
  p[9] = TCP;
  tp_set_partial(p, len);
  tp_set_full(p, len);
  TAP_ASSERT(rd16(p + 36) != tp_pseudo(p, len), "the full checksum differs from the pseudo sum");
  refuse(!partial(p, len) && tp_l4_ok(p, len), "IPv4 TCP with a valid full checksum");
  /* too short for the L4 header */
  len = make(p, 0, 5, TCP, 39); /* field at 36..37 inside, the 20-byte TCP header not */
  tp_set_partial(p, len);
  refuse(!partial(p, len), "IPv4 TCP of 39 bytes (19 of the TCP header)");
  len = make(p, 0, 5, UDP, 27);
  refuse(!partial(p, len), "IPv4 UDP of 27 bytes (7 of the UDP header)");
  len = make(p, 0, 5, UDP, 28); /* an empty datagram: 8 bytes of UDP header is enough */
  tp_set_partial(p, len);
  tap_ok(partial(p, len), "partial: IPv4 UDP of 28 bytes (an empty datagram)");
  wr16(p + 26, 0);
  refuse(!partial(p, len), "IPv4 UDP checksum 0 (no checksum)");
  len = make(p, 0, 5, UDP, 200);
  tp_set_full(p, len);
  refuse(!partial(p, len) && tp_l4_ok(p, len), "IPv4 UDP with a valid full checksum");
  len = make(p, 0, 5, UDP, 200);
  tp_set_partial(p, len);
  p[0] = 0x44;
  refuse(!partial(p, len), "IPv4 IHL 4");
  p[0] = 0x55;
  refuse(!partial(p, len), "IP version 5");
  p[0] = 0x45;
  refuse(!partial(p, 19), "19 bytes");
  /* IPv6 */
  len = make(p, 1, 0, TCP, 500);
  tp_set_partial(p, len);
  TAP_ASSERT(partial(p, len), "the base IPv6 packet is partial");
  wr16(p + 4, (uint32_t)(len - 41));
  refuse(!partial(p, len), "IPv6 payload length != len - 40");
  wr16(p + 4, 0); /* a jumbogram's */
  refuse(!partial(p, len), "IPv6 payload length 0");
  wr16(p + 4, (uint32_t)(len - 40));
  for (unsigned k = 0; k < 4; k++) {
    static const uint8_t ext[] = {0, 43, 44, 60}; /* hop-by-hop, routing, fragment, destination options */
    p[6] = ext[k];
    wr16(p + 40 + 16, tp_pseudo(p, len)); /* its pseudo sum where TCP's field would be */
    refuse(!partial(p, len), k == 0 ? "IPv6 hop-by-hop header" : k == 1 ? "IPv6 routing header"
                             : k == 2 ? "IPv6 fragment header" : "IPv6 destination options header");
  }
  p[6] = 58;
  wr16(p + 40 + 2, tp_pseudo(p, len));
  refuse(!partial(p, len), "IPv6 ICMPv6");
  len = make(p, 1, 0, TCP, 59);
  tp_set_partial(p, len);
  refuse(!partial(p, len), "IPv6 TCP of 59 bytes");
  len = make(p, 1, 0, UDP, 47);
  wr16(p + 44, 7);
  refuse(!partial(p, len), "IPv6 UDP of 47 bytes");
  refuse(!partial(p, 39), "IPv6 of 39 bytes");
  len = make(p, 1, 0, UDP, 300);
  tp_set_full(p, len);
  refuse(!partial(p, len) && tp_l4_ok(p, len), "IPv6 UDP with a valid full checksum");
  tp_set_partial(p, len);
  p[len - 1] ^= 1; /* a payload byte: the pseudo sum does not cover it, still partial */
  tap_ok(partial(p, len), "partial: IPv6 UDP with a changed payload byte (the payload is not summed)");
  p[8] ^= 1; /* a source address byte: the pseudo sum is another */
  refuse(!partial(p, len), "IPv6 UDP whose source address changed after the sum");
}

/* The safety argument, on many random packets: a VALID full checksum that happens to
 * equal the pseudo-header sum (made so by choosing one payload word) is recognised as
 * partial, and finishing it gives back exactly the checksum that was there. */
static void test_safety(void) {
  const int rounds = 3000;
  int made = 0, recognised = 0, kept = 0;
  for (int k = 0; k < rounds; k++) {
    int v6 = (int)(rnd() & 1);
    uint8_t proto = (rnd() & 1) ? TCP : UDP;
    unsigned ihl = v6 ? 0 : 5 + rnd() % 11; /* IHL 10 included: 40 bytes, as IPv6's header */
    size_t iphl = v6 ? 40 : ihl * 4u, l4h = proto == TCP ? 20 : 8;
    size_t len = make(p, v6, ihl, proto, iphl + l4h + 2 + rnd() % 1500);
    size_t w = iphl + l4h + 2 * (rnd() % ((len - iphl - l4h) / 2)); /* an even L4 offset, inside */
    tp_set_partial(p, len);
    wr16(p + w, 0);
    uint64_t x = (uint64_t)tp_pseudo(p, len) + ref_sum(p + iphl, len - iphl);
    while (x >> 16) x = (x & 0xffff) + (x >> 16);
    wr16(p + w, ~x & 0xffff);
    if (!tp_l4_ok(p, len) || rd16(p + iphl + tp_csum_off(proto)) != tp_pseudo(p, len)) continue;
    made++;
    struct ovl_vnet_hdr h;
    if (!ovl_csum_partial(p, len, &h)) continue;
    recognised++;
    memcpy(q, p, len);
    if (ovl_vnet_csum_finish(q, len, &h) == 0 && memcmp(q, p, len) == 0) kept++;
  }
  tap_ok(made == rounds && recognised == rounds && kept == rounds,
         "safety: %d random packets with a valid full checksum equal to the pseudo sum: %d made, %d recognised as "
         "partial, %d finish to the same bytes",
         rounds, made, recognised, kept);
}

/* ---------------------------------------------------------------- cuts ----------------- */

/* Segment i of a partial cut, made contiguous in q: the full cut's segment (at full, flen
 * bytes) but for the checksum field, which is the segment's pseudo sum; finished, the
 * full segment (a TCP checksum computed 0 is finished as 0xffff: both verify). */
static int partial_seg_ok(const struct ovl_gso_seg *s, const uint8_t *full, size_t flen, uint8_t proto) {
  size_t len = s->hdr_len + s->payload_len;
  if (len != flen) return 0;
  memcpy(q, s->hdr, s->hdr_len);
  memcpy(q + s->hdr_len, s->payload, s->payload_len);
  size_t iphl = tp_iphl(q), off = iphl + tp_csum_off(proto);
  for (size_t i = 0; i < len; i++)
    if (q[i] != full[i] && i != off && i != off + 1) return 0;
  if (rd16(q + off) != tp_pseudo(q, len)) return 0;
  struct ovl_vnet_hdr h;
  if (!ovl_csum_partial(q, len, &h) || h.csum_start != iphl || h.csum_offset != tp_csum_off(proto)) return 0;
  if (ovl_vnet_csum_finish(q, len, &h) != 0 || !tp_l4_ok(q, len)) return 0;
  if (memcmp(q, full, len) == 0) return 1;
  return proto == TCP && rd16(full + off) == 0 && rd16(q + off) == 0xffff && memcmp(q, full, off) == 0 &&
         memcmp(q + off + 2, full + off + 2, len - off - 2) == 0;
}

static void test_gso_partial(int v6, unsigned tcp_hl, size_t payload, unsigned mss) {
  size_t iphl = v6 ? 40 : 20, hdr = iphl + tcp_hl, len = make(p, v6, 5, TCP, hdr + payload);
  p[iphl + 12] = (uint8_t)((tcp_hl / 4) << 4);
  p[iphl + 13] = 0x18 | 0x01; /* ACK PSH FIN */
  tp_set_partial(p, len);        /* as the kernel hands a TSO super-packet over */
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = (uint8_t)(v6 ? OVL_VNET_GSO_TCPV6 : OVL_VNET_GSO_TCPV4),
                           .hdr_len = (uint16_t)hdr, .gso_size = (uint16_t)mss, .csum_start = (uint16_t)iphl, .csum_offset = 16};
  memcpy(q, p, len);
  int n = ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  int m = ovl_gso_cut(p, len, &h, stubs, sizeof(stubs), segs, OVL_GSO_SEGS_MAX, OVL_CUT_PARTIAL_CSUM);
  int ok = n > 0 && m == n && memcmp(q, p, len) == 0; /* the super-packet not written */
  size_t o = 0;
  for (int i = 0; ok && i < n; i++) {
    ok &= segs[i].payload >= p + hdr && segs[i].payload + segs[i].payload_len <= p + len;
    ok &= partial_seg_ok(&segs[i], out + o, lens[i], TCP);
    o += lens[i];
  }
  size_t want = (payload + mss - 1) / mss;
  tap_ok(ok && n == (int)want && lens[n - 1] == hdr + (payload - (want - 1) * mss),
         "%s TSO %zu bytes, MSS %u, TCP header %u: %d partial segments, each the full cut's once finished", fam(v6),
         payload, mss, tcp_hl, n);
}

static void test_uso_partial(int v6, unsigned ihl, size_t payload, unsigned gso) {
  size_t iphl = v6 ? 40 : ihl * 4u, hdr = iphl + 8, len = make(p, v6, ihl, UDP, hdr + payload);
  tp_set_partial(p, len);
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_UDP_L4, .hdr_len = (uint16_t)hdr,
                           .gso_size = (uint16_t)gso, .csum_start = (uint16_t)iphl, .csum_offset = 6};
  memcpy(q, p, len);
  int n = ovl_uso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  int m = ovl_uso_cut(p, len, &h, stubs, sizeof(stubs), segs, OVL_GSO_SEGS_MAX, OVL_CUT_PARTIAL_CSUM);
  int ok = n > 0 && m == n && memcmp(q, p, len) == 0;
  size_t o = 0;
  for (int i = 0; ok && i < n; i++) {
    ok &= partial_seg_ok(&segs[i], out + o, lens[i], UDP);
    o += lens[i];
  }
  /* the full cut (flags 0) is the copying cut's, checksums and all */
  int m0 = ovl_uso_cut(p, len, &h, stubs, sizeof(stubs), segs, OVL_GSO_SEGS_MAX, 0);
  o = 0;
  for (int i = 0; ok && i < m0; i++) {
    ok &= segs[i].hdr_len + segs[i].payload_len == lens[i] && memcmp(segs[i].hdr, out + o, segs[i].hdr_len) == 0 &&
          memcmp(segs[i].payload, out + o + segs[i].hdr_len, segs[i].payload_len) == 0;
    o += lens[i];
  }
  size_t want = payload == 0 ? 1 : (payload + gso - 1) / gso;
  tap_ok(ok && m0 == n && n == (int)want, "%s USO %zu bytes, gso_size %u: %d partial datagrams, each the full cut's once finished",
         fam(v6), payload, gso, n);
}

/* A TCP super-packet cut with and without the flag: only the checksum fields differ. */
static void test_gso_flag_only_checksums(void) {
  size_t len = make(p, 0, 5, TCP, 40 + 5000);
  tp_set_partial(p, len);
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_TCPV4, .hdr_len = 40, .gso_size = 1448,
                           .csum_start = 20, .csum_offset = 16};
  static struct ovl_gso_seg full[OVL_GSO_SEGS_MAX];
  static uint8_t stubs2[sizeof(stubs)];
  int n = ovl_gso_cut(p, len, &h, stubs2, sizeof(stubs2), full, OVL_GSO_SEGS_MAX, 0);
  int m = ovl_gso_cut(p, len, &h, stubs, sizeof(stubs), segs, OVL_GSO_SEGS_MAX, OVL_CUT_PARTIAL_CSUM);
  int ok = n == 4 && m == 4;
  for (int i = 0; ok && i < n; i++) {
    ok &= full[i].payload == segs[i].payload && full[i].payload_len == segs[i].payload_len && full[i].hdr_len == 40;
    ok &= memcmp(full[i].hdr, segs[i].hdr, 36) == 0 && memcmp(full[i].hdr + 38, segs[i].hdr + 38, 2) == 0;
    ok &= rd16(full[i].hdr + 36) != rd16(segs[i].hdr + 36);
  }
  tap_ok(ok, "TSO cut with and without OVL_CUT_PARTIAL_CSUM: same slices, same headers but the TCP checksum");
  tap_ok(ovl_gso_cut(p, len, &h, stubs, 4 * 40 - 1, segs, OVL_GSO_SEGS_MAX, OVL_CUT_PARTIAL_CSUM) == -ENOBUFS,
         "partial TSO cut: stubs one byte short: -ENOBUFS");
  /* an IPv4 super-packet with fragment bits (MF, an offset) is cut with full checksums
   * even when asked for partial ones: the receiver never takes a fragment as partial */
  for (int k = 0; k < 2; k++) {
    wr16(p + 6, k ? 0x4100u : 0x2000u);
    wr16(p + 10, ref_header_checksum(p, 20));
    n = ovl_gso_cut(p, len, &h, stubs2, sizeof(stubs2), full, OVL_GSO_SEGS_MAX, 0);
    m = ovl_gso_cut(p, len, &h, stubs, sizeof(stubs), segs, OVL_GSO_SEGS_MAX, OVL_CUT_PARTIAL_CSUM);
    ok = n == 4 && m == 4;
    for (int i = 0; ok && i < n; i++) {
      memcpy(q, segs[i].hdr, segs[i].hdr_len);
      memcpy(q + segs[i].hdr_len, segs[i].payload, segs[i].payload_len);
      ok &= memcmp(full[i].hdr, segs[i].hdr, 40) == 0 && tp_l4_ok(q, segs[i].hdr_len + segs[i].payload_len) &&
            !partial(q, segs[i].hdr_len + segs[i].payload_len);
    }
    tap_ok(ok, "TSO cut of an IPv4 super-packet with %s, partial asked: full checksums (as without the flag)",
           k ? "a fragment offset" : "MF");
  }
}

/* ---------------------------------------------------------------- GRO ------------------ */

/* Segment k of a TCP flow (IPv4 IHL 5 DF, or IPv6), mss payload bytes, ACK. */
static size_t flow_seg(uint8_t *s, int v6, uint32_t k, size_t mss, bool part) {
  size_t iphl = v6 ? 40 : 20, len = iphl + 20 + mss;
  memset(s, 0, iphl + 20);
  if (v6) {
    s[0] = 0x60;
    wr16(s + 4, (uint32_t)(len - 40));
    s[6] = TCP;
    s[7] = 64;
    s[8] = 0xfd;
    s[23] = 1;
    s[24] = 0xfd;
    s[39] = 2;
  } else {
    s[0] = 0x45;
    wr16(s + 2, (uint32_t)len);
    wr16(s + 4, 100 + k);
    wr16(s + 6, 0x4000);
    s[8] = 64;
    s[9] = TCP;
    wr32(s + 12, 0x0af40207);
    wr32(s + 16, 0x0af40105);
    wr16(s + 10, ref_header_checksum(s, 20));
  }
  uint8_t *th = s + iphl;
  wr16(th, 40000);
  wr16(th + 2, 5001);
  wr32(th + 4, 1000 + k * (uint32_t)mss);
  wr32(th + 8, 1);
  th[12] = 0x50;
  th[13] = 0x10;
  wr16(th + 14, 500);
  for (size_t i = 0; i < mss; i++) th[20 + i] = (uint8_t)rnd();
  if (part)
    tp_set_partial(s, len);
  else
    tp_set_full(s, len);
  return len;
}

static void test_gro(int v6) {
  static uint8_t seg[4][2000];
  size_t l[4];
  for (uint32_t k = 0; k < 4; k++) l[k] = flow_seg(seg[k], v6, k, 1000, k != 2); /* segment 2 full, others partial */
  int elig = 1, invalid = 1;
  for (int k = 0; k < 4; k++) elig &= ovl_gro_eligible(seg[k], l[k]);
  for (int k = 0; k < 4; k++) invalid &= (k == 2) == tp_l4_ok(seg[k], l[k]);
  tap_ok(elig && invalid, "%s GRO: partial segments (full checksum not valid) and a full one are all eligible", fam(v6));
  struct ovl_gro g;
  ovl_gro_init(&g);
  int added = 1;
  for (int k = 0; k < 4; k++) added &= ovl_gro_add(&g, seg[k], l[k]);
  struct ovl_vnet_hdr h;
  struct iovec iov[OVL_GRO_SEGS_MAX];
  uint32_t n = 0;
  size_t len = ovl_gro_finish(&g, &h, iov, &n);
  size_t o = 0;
  for (uint32_t i = 0; i < n; i++) {
    memcpy(p + o, iov[i].iov_base, iov[i].iov_len);
    o += iov[i].iov_len;
  }
  size_t iphl = v6 ? 40 : 20;
  /* the super-packet, finished and cut, gives the 4 segments with valid checksums */
  int ok = added && o == len && len == iphl + 20 + 4000 && h.gso_size == 1000 && h.flags == OVL_VNET_F_NEEDS_CSUM &&
           rd16(p + iphl + 16) == tp_pseudo(p, len);
  int cut = ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  o = 0;
  for (int i = 0; ok && i < cut; i++) {
    ok &= lens[i] == l[i] && tp_l4_ok(out + o, lens[i]) && memcmp(out + o + iphl + 20, seg[i] + iphl + 20, 1000) == 0;
    o += lens[i];
  }
  tap_ok(ok && cut == 4, "%s GRO: the 4 segments (3 partial, 1 full) coalesce; the super-packet is partial and cuts into "
                         "4 valid segments of the same payload", fam(v6));
  ovl_gro_init(&g);
  /* a corrupted byte: the field is neither the pseudo sum nor a valid full checksum */
  size_t k = flow_seg(seg[0], v6, 0, 1000, false);
  seg[0][k - 1] ^= 0x40;
  int bad_full = !ovl_gro_eligible(seg[0], k);
  k = flow_seg(seg[0], v6, 0, 1000, true);
  wr16(seg[0] + iphl + 16, rd16(seg[0] + iphl + 16) ^ 0x0100);
  int bad_partial = !ovl_gro_eligible(seg[0], k) && !tp_l4_ok(seg[0], k);
  k = flow_seg(seg[0], v6, 0, 1000, true);
  seg[0][v6 ? 9 : 13] ^= 1; /* a source address byte after the sum */
  if (!v6) wr16(seg[0] + 10, ref_header_checksum(seg[0], 20));
  int bad_addr = !ovl_gro_eligible(seg[0], k);
  tap_ok(bad_full && bad_partial && bad_addr, "%s GRO refuses a segment whose checksum is neither partial nor valid "
                                              "(a payload byte, the field, an address byte changed)", fam(v6));
}

/* ---------------------------------------------------------------- routes --------------- */

static void test_peer_flags(void) {
  const uint32_t A = 0xc0a80001u, B = 0xc0a80002u, C = 0xc0a80003u, D = 0xc0a80004u;
  struct ovl_route r[] = {
      {.net = 0x0af40100u, .len = 24, .peer = A},
      {.net = 0x0af40200u, .len = 24, .peer = A, .flags = OVL_ROUTE_PARTIAL_CSUM},
      {.net = 0x0af40300u, .len = 24, .peer = B},
      /* C's route replaced by a later duplicate to D: C is no peer, its flag gone */
      {.net = 0x0af40400u, .len = 24, .peer = C, .flags = OVL_ROUTE_PARTIAL_CSUM},
      {.net = 0x0af40400u, .len = 24, .peer = D},
      /* a route to B with the flag, replaced by the same route without it: B has none */
      {.net = 0x0af40500u, .len = 24, .peer = B, .flags = OVL_ROUTE_PARTIAL_CSUM},
      {.net = 0x0af40500u, .len = 24, .peer = B},
      {.net = 0x0a000000u, .len = 8, .peer = D},
  };
  struct ovl_rtable *t;
  TAP_ASSERT(ovl_rtable_build(&t, r, sizeof(r) / sizeof(r[0])) == 0, "table built");
  tap_ok(ovl_rtable_peer_flags(t, A) == OVL_ROUTE_PARTIAL_CSUM, "peer flags: the OR over the peer's routes (one of two flagged)");
  tap_ok(ovl_rtable_peer_flags(t, B) == 0, "peer flags: a flagged route replaced by the same route unflagged leaves none");
  tap_ok(ovl_rtable_peer_flags(t, C) == 0 && !ovl_rtable_is_peer(t, C),
         "peer flags: a flagged route replaced by a duplicate to another peer: its old peer has none");
  tap_ok(ovl_rtable_peer_flags(t, D) == 0 && ovl_rtable_peer_flags(t, 0x0a0a0a0au) == 0,
         "peer flags: 0 for an unflagged peer and for an unknown address");
  ovl_rtable_free(t);
  /* the reverse order: the flagged duplicate last wins */
  struct ovl_route r2[] = {
      {.net = 0x0af40500u, .len = 24, .peer = B},
      {.net = 0x0af40500u, .len = 24, .peer = B, .flags = OVL_ROUTE_PARTIAL_CSUM},
  };
  TAP_ASSERT(ovl_rtable_build(&t, r2, 2) == 0, "table built");
  tap_ok(ovl_rtable_peer_flags(t, B) == OVL_ROUTE_PARTIAL_CSUM, "peer flags: the flagged duplicate given last counts");
  ovl_rtable_free(t);
  /* many prefix lengths (the block index) and many peers: flags against a brute force */
  static struct ovl_route many[2000];
  size_t n = 0;
  for (; n < 2000; n++) {
    unsigned len = 8 + rnd() % 25;
    uint32_t m = ~0u << (32 - len);
    many[n] = (struct ovl_route){.net = (0x0a000000u | (rnd() & 0x00ffffffu)) & m, .len = (uint8_t)len,
                                 .peer = 0xc0a80000u | (rnd() % 300), .flags = (uint8_t)(rnd() % 5 == 0)};
  }
  TAP_ASSERT(ovl_rtable_build(&t, many, n) == 0, "table built");
  int ok = 1;
  for (uint32_t peer = 0xc0a80000u; peer < 0xc0a80000u + 310; peer++) {
    uint32_t want = 0;
    for (size_t i = 0; i < n; i++) { /* the surviving route of each subnet: the last given */
      if (many[i].peer != peer) continue;
      bool last = true;
      for (size_t j = i + 1; j < n && last; j++) last = !(many[j].net == many[i].net && many[j].len == many[i].len);
      if (last) want |= many[i].flags;
    }
    ok &= ovl_rtable_peer_flags(t, peer) == want;
  }
  tap_ok(ok, "peer flags of 310 addresses over %zu random routes (duplicates included) match a brute force", n);
  ovl_rtable_free(t);
}

int main(void) {
  for (int v6 = 0; v6 <= 1; v6++) {
    test_true(v6, 5, TCP);
    test_true(v6, 5, UDP);
  }
  test_true(0, 6, TCP);
  test_true(0, 15, UDP);
  test_true(0, 10, TCP); /* a 40-byte IPv4 header: as long as IPv6's, still IPv4's pseudo header */
  test_true(0, 10, UDP);
  test_false();
  test_safety();
  for (int v6 = 0; v6 <= 1; v6++) {
    test_gso_partial(v6, 20, 10000, 1448); /* short last segment */
    test_gso_partial(v6, 32, 9000, 1000);  /* timestamps; an exact multiple */
    test_gso_partial(v6, 60, 255, 1);      /* odd: 1-byte segments of 60-byte TCP headers */
    test_gso_partial(v6, 20, 65535 - 40 - (v6 ? 0 : 20) - 20, 1460);
    test_uso_partial(v6, 5, 8000, 1400);
    test_uso_partial(v6, 5, 2999, 1001);
    test_uso_partial(v6, 5, 255, 1);
    test_uso_partial(v6, 5, 0, 1400);
    test_uso_partial(v6, 5, 65535 - 8 - (v6 ? 0 : 20), 1472);
    test_gro(v6);
  }
  test_uso_partial(0, 15, 5000, 1200);
  for (int k = 0; k < 20; k++) test_gso_partial((int)(rnd() & 1), 20 + 4 * (rnd() % 11), 1 + rnd() % 20000, 100 + rnd() % 1400);
  for (int k = 0; k < 20; k++) test_uso_partial((int)(rnd() & 1), 5, rnd() % 20000, 100 + rnd() % 3000);
  test_gso_flag_only_checksums();
  test_peer_flags();
  return tap_done();
}
