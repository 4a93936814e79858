/* offload.c against packets built here and checked by independent references (testpkt.h):
 * cutting TCP super-packets (IPv4 id/length/checksum, sequence numbers, flags only where
 * they belong, every TCP checksum recomputed in full), the boundary sizes (exactly MSS,
 * MSS+1, 64 KB), IPv4 options, finishing partial checksums, and coalescing (userspace GRO):
 * a run of one flow into one super-packet with the right virtio_net_hdr, IPv4 options and
 * odd flags never coalesced, and every reason to stop a flow; IPv6 runs (TCPV6); the flow
 * table: interleaved flows, out of order, ineligible packets of a held flow, table full. */
#include "overlayd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

#define FIN 0x01
#define SYN 0x02
#define RST 0x04
#define PSH 0x08
#define ACK 0x10
#define URG 0x20
#define ECE 0x40
#define CWR 0x80

#define SRC 0x0af40102u
#define DST 0x0af40202u

/* Folded pseudo-header sum of an IPv4 packet for its L4 part (reference). */
static uint32_t ref_pseudo(const uint8_t *ip, size_t l4len) {
  uint8_t ph[12];
  memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = ip[9];
  wr16(ph + 10, (uint32_t)l4len);
  return ref_sum(ph, 12);
}

/* Reference check of an L4 checksum: pseudo header + segment sums to 0xffff. */
static int ref_l4_ok(const uint8_t *p, size_t len) {
  size_t hl = (size_t)(p[0] & 0xf) * 4;
  uint64_t s = (uint64_t)ref_pseudo(p, len - hl) + ref_sum(p + hl, len - hl);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s == 0xffff;
}

static uint16_t ref_l4_checksum(uint8_t *p, size_t len, size_t csum_off) {
  size_t hl = (size_t)(p[0] & 0xf) * 4;
  p[hl + csum_off] = p[hl + csum_off + 1] = 0;
  uint64_t s = (uint64_t)ref_pseudo(p, len - hl) + ref_sum(p + hl, len - hl);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)(~s & 0xffff);
}

struct tcpspec {
  unsigned ihl;      /* 5..15 */
  unsigned optlen;   /* TCP option bytes, multiple of 4 */
  uint16_t sport, dport, id, window;
  uint32_t seq, ack;
  uint8_t flags, ttl, tos;
  bool df;
  uint32_t tsval; /* timestamp option value (optlen >= 12) */
};

static struct tcpspec spec(void) {
  return (struct tcpspec){.ihl = 5, .optlen = 12, .sport = 40000, .dport = 5001, .id = 0x1234, .window = 502,
                          .seq = 0xfffff000u, .ack = 0x01020304u, .flags = ACK, .ttl = 63, .tos = 0, .df = true,
                          .tsval = 777};
}

/* The TCP header (thl bytes) of spec s at t, checksum field 0. */
static void fill_tcp(uint8_t *t, const struct tcpspec *s, size_t thl) {
  memset(t, 0, thl);
  wr16(t, s->sport);
  wr16(t + 2, s->dport);
  wr32(t + 4, s->seq);
  wr32(t + 8, s->ack);
  t[12] = (uint8_t)((thl / 4) << 4);
  t[13] = s->flags;
  wr16(t + 14, s->window);
  if (s->optlen >= 12) { /* NOP NOP TS */
    t[20] = 1;
    t[21] = 1;
    t[22] = 8;
    t[23] = 10;
    wr32(t + 24, s->tsval);
    wr32(t + 28, 99);
  }
  if (s->optlen >= 24) { /* NOP NOP SACK with as many blocks as fit (1 in 24, 3 in 40), NOP padding */
    size_t k = (s->optlen - 14) / 8;
    memset(t + 32, 1, s->optlen - 12);
    t[34] = 5;
    t[35] = (uint8_t)(2 + 8 * k);
    for (size_t b = 0; b < k; b++) {
      wr32(t + 36 + 8 * b, s->ack - 5000u + (uint32_t)b * 1000u);
      wr32(t + 40 + 8 * b, s->ack - 4500u + (uint32_t)b * 1000u);
    }
  }
}

/* A valid IPv4/TCP packet with `plen` payload bytes taken from payload; returns its length. */
static size_t build_tcp(uint8_t *p, const struct tcpspec *s, const uint8_t *payload, size_t plen) {
  size_t ihl = s->ihl * 4u, thl = 20 + s->optlen, len = ihl + thl + plen;
  memset(p, 0, ihl + thl);
  p[0] = (uint8_t)(0x40 | s->ihl);
  p[1] = s->tos;
  wr16(p + 2, (uint32_t)len);
  wr16(p + 4, s->id);
  wr16(p + 6, s->df ? 0x4000 : 0);
  p[8] = s->ttl;
  p[9] = 6;
  wr32(p + 12, SRC);
  wr32(p + 16, DST);
  for (size_t i = 20; i < ihl; i++) p[i] = 1; /* IPv4 options: NOPs */
  uint8_t *t = p + ihl;
  fill_tcp(t, s, thl);
  memcpy(p + ihl + thl, payload, plen);
  wr16(p + 10, ref_header_checksum(p, ihl));
  wr16(t + 16, ref_l4_checksum(p, len, 16));
  return len;
}

static uint8_t payload[80000];
static uint8_t super[65536];
static uint8_t out[200000];
static uint32_t lens[OVL_GSO_SEGS_MAX];

/* Cuts a super-packet of plen payload bytes with MSS mss and checks every segment. */
static void check_segment(const char *what, unsigned ihl, size_t plen, uint16_t mss, uint8_t flags) {
  struct tcpspec s = spec();
  s.ihl = ihl;
  s.flags = flags;
  size_t len = build_tcp(super, &s, payload, plen);
  size_t hdr = ihl * 4u + 20 + s.optlen;
  /* as the kernel hands it over: TCP checksum field = pseudo-header sum only */
  wr16(super + ihl * 4u + 16, ref_pseudo(super, len - ihl * 4u));
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_TCPV4, .hdr_len = (uint16_t)hdr,
                           .gso_size = mss, .csum_start = (uint16_t)(ihl * 4u), .csum_offset = 16};
  int n = ovl_gso_segment(super, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  size_t want = plen == 0 ? 1 : (plen + mss - 1) / mss;
  if (!tap_ok(n == (int)want, "%s: %zu segments (got %d)", what, want, n)) return;
  int ok_len = 1, ok_id = 1, ok_ipsum = 1, ok_seq = 1, ok_flags = 1, ok_l4 = 1, ok_payload = 1, ok_hdr = 1;
  size_t o = 0, done = 0;
  for (int i = 0; i < n; i++) {
    const uint8_t *g = out + o;
    size_t gl = lens[i], gp = i + 1 < n ? mss : plen - done;
    const uint8_t *t = g + ihl * 4u;
    ok_len &= gl == hdr + gp && rd16(g + 2) == gl;
    ok_id &= rd16(g + 4) == (uint16_t)(s.id + i);
    ok_ipsum &= rd16(g + 10) == ref_header_checksum(g, ihl * 4u);
    ok_seq &= rd32(t + 4) == s.seq + (uint32_t)done;
    uint8_t f = flags;
    if (i + 1 < n) f &= (uint8_t)~(FIN | PSH);
    if (i > 0) f &= (uint8_t)~CWR;
    ok_flags &= t[13] == f;
    ok_l4 &= ref_l4_ok(g, gl);
    ok_payload &= memcmp(g + hdr, payload + done, gp) == 0;
    /* everything else of the headers as in the super-packet */
    ok_hdr &= memcmp(g + 12, super + 12, ihl * 4u - 12) == 0 && memcmp(t, super + ihl * 4u, 4) == 0 &&
              memcmp(t + 8, super + ihl * 4u + 8, 5) == 0 && memcmp(t + 14, super + ihl * 4u + 14, 2) == 0 &&
              memcmp(t + 18, super + ihl * 4u + 18, hdr - ihl * 4u - 18) == 0;
    o += gl;
    done += gp;
  }
  tap_ok(ok_len && done == plen, "%s: lengths (IPv4 total length = segment length)", what);
  tap_ok(ok_id, "%s: IPv4 id + i", what);
  tap_ok(ok_ipsum, "%s: IPv4 header checksums recomputed", what);
  tap_ok(ok_seq, "%s: sequence numbers (across the 2^32 wrap)", what);
  tap_ok(ok_flags, "%s: PSH/FIN on the last segment only, CWR on the first only", what);
  tap_ok(ok_l4, "%s: every TCP checksum verifies by full recomputation", what);
  tap_ok(ok_payload && ok_hdr, "%s: payload in order, other header bytes copied", what);
  tap_ok(tp_cut_matches(super, len, &h, out, lens, n), "%s: ovl_gso_cut = header stubs + slices of the same bytes", what);
}

static void test_segment(void) {
  for (size_t i = 0; i < sizeof(payload); i++) payload[i] = (uint8_t)rnd();
  check_segment("10 x MSS 1420 + 300, ACK|PSH|FIN|CWR", 5, 10 * 1420 + 300, 1420, ACK | PSH | FIN | CWR);
  check_segment("exactly MSS", 5, 1420, 1420, ACK | PSH);
  check_segment("MSS + 1", 5, 1421, 1420, ACK | PSH);
  check_segment("64 KB super-packet (total length 65535)", 5, 65535 - 20 - 32, 1420, ACK | PSH);
  check_segment("IPv4 options (IHL 8) are copied to every segment", 8, 5000, 1000, ACK);
  check_segment("ECE kept on every segment", 5, 3000, 1000, ACK | ECE);
  check_segment("no payload", 5, 0, 1420, ACK | FIN);

  struct tcpspec s = spec();
  size_t len = build_tcp(super, &s, payload, 3000);
  struct ovl_vnet_hdr h = {.gso_type = OVL_VNET_GSO_TCPV4, .gso_size = 1000};
  h.gso_type = 5; /* UDP_L4: not negotiated */
  tap_ok(ovl_gso_segment(super, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EPROTONOSUPPORT,
         "gso_type UDP_L4: -EPROTONOSUPPORT");
  h.gso_type = OVL_VNET_GSO_TCPV4;
  h.gso_size = 0;
  tap_ok(ovl_gso_segment(super, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL, "gso_size 0: -EINVAL");
  h.gso_size = 10;
  tap_ok(ovl_gso_segment(super, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -E2BIG,
         "300 segments > OVL_GSO_SEGS_MAX: -E2BIG");
  h.gso_size = 1000;
  tap_ok(ovl_gso_segment(super, len, &h, out, 2000, lens, OVL_GSO_SEGS_MAX) == -ENOBUFS, "output too small: -ENOBUFS");
  super[9] = 17;
  tap_ok(ovl_gso_segment(super, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL, "not TCP: -EINVAL");
  super[9] = 6;
  super[20 + 12] = 0xf0; /* data offset 60 bytes: fine */
  tap_ok(ovl_gso_segment(super, 70, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL,
         "TCP header beyond the packet: -EINVAL");
}

static void test_csum_finish(void) {
  uint8_t p[2000];
  struct tcpspec s = spec();
  size_t len = build_tcp(p, &s, payload, 1001); /* odd length */
  wr16(p + 36, ref_pseudo(p, len - 20));
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .csum_start = 20, .csum_offset = 16};
  tap_ok(ovl_vnet_csum_finish(p, len, &h) == 0 && ref_l4_ok(p, len), "TCP partial checksum finished (odd length)");
  tap_ok(ovl_l4_checksum_ok(p, len), "ovl_l4_checksum_ok agrees");
  p[100] ^= 1;
  tap_ok(!ovl_l4_checksum_ok(p, len), "ovl_l4_checksum_ok: one flipped bit fails");
  /* UDP: checksum at offset 6 */
  make_pkt(p, 28 + 333, 5, 17, 64, SRC, DST);
  wr16(p + 24, 8 + 333);
  wr16(p + 26, ref_pseudo(p, 8 + 333));
  h.csum_offset = 6;
  tap_ok(ovl_vnet_csum_finish(p, 28 + 333, &h) == 0 && ref_l4_ok(p, 28 + 333), "UDP partial checksum finished");
  /* RFC 768: a UDP checksum that computes to 0 is sent as 0xffff (0 means "none"). Payload
   * word 0 is chosen so that pseudo header + datagram sum to 0xffff (complement 0). */
  make_pkt(p, 28 + 333, 5, 17, 64, SRC, DST);
  wr16(p + 24, 8 + 333);
  wr16(p + 26, ref_pseudo(p, 8 + 333));
  wr16(p + 28, 0);
  wr16(p + 28, 0xffff - ref_sum(p + 20, 8 + 333));
  TAP_ASSERT(ref_sum(p + 20, 8 + 333) == 0xffff, "crafted UDP datagram sums to 0xffff");
  int fin = ovl_vnet_csum_finish(p, 28 + 333, &h);
  tap_ok(fin == 0 && rd16(p + 26) == 0xffff && ref_l4_ok(p, 28 + 333),
         "UDP checksum computing to 0 is stored as 0xffff (RFC 768), got %#x", rd16(p + 26));
  h.csum_offset = 6;
  h.csum_start = 2000;
  tap_ok(ovl_vnet_csum_finish(p, 28 + 333, &h) == -EINVAL, "csum_start beyond the packet: -EINVAL");
  h.csum_start = 20;
  h.csum_offset = 340;
  tap_ok(ovl_vnet_csum_finish(p, 28 + 333, &h) == -EINVAL, "checksum field beyond the packet: -EINVAL");
  h.flags = 0;
  tap_ok(ovl_vnet_csum_finish(p, 28 + 333, &h) == 0, "without NEEDS_CSUM: nothing to do");
}

/* GRO ------------------------------------------------------------------------------- */

static struct ovl_gro gro;
static struct iovec giov[OVL_GRO_SEGS_MAX];
static uint8_t flat[65536];

/* ovl_gro_finish, and the super-packet its iovecs describe, copied into flat[]. */
static size_t finish_flat(struct ovl_vnet_hdr *h) {
  uint32_t n = 0;
  size_t len = ovl_gro_finish(&gro, h, giov, &n), o = 0;
  for (uint32_t i = 0; i < n; i++) {
    memcpy(flat + o, giov[i].iov_base, giov[i].iov_len);
    o += giov[i].iov_len;
  }
  return o == len ? len : 0;
}
static uint8_t segs[80][1600];
static size_t seglen[80];

/* n in-order segments of one flow, mss payload each (the last `last` bytes), ids + i. */
static void make_run(int n, size_t mss, size_t last, uint8_t last_flags) {
  struct tcpspec s = spec();
  for (int i = 0; i < n; i++) {
    s.seq = spec().seq + (uint32_t)(i * mss);
    s.id = (uint16_t)(spec().id + i);
    s.flags = i + 1 == n ? last_flags : ACK;
    seglen[i] = build_tcp(segs[i], &s, payload + i * mss, i + 1 == n ? last : mss);
  }
}

static void test_gro_run(void) {
  make_run(10, 1400, 700, ACK | PSH);
  static uint8_t orig[10][1600];
  memcpy(orig, segs, sizeof(orig));
  int all = 1;
  ovl_gro_init(&gro);
  for (int i = 0; i < 10; i++) all &= ovl_gro_eligible(segs[i], seglen[i]) && ovl_gro_add(&gro, segs[i], seglen[i]);
  tap_ok(all && gro.nseg == 10, "10 in-order segments of one flow (last short, PSH) coalesce");
  struct ovl_vnet_hdr h;
  size_t len = finish_flat(&h);
  size_t hdr = 20 + 32;
  tap_ok(len == hdr + 9 * 1400 + 700 && rd16(flat + 2) == len, "super-packet length %zu, IPv4 total length (no copy: %s)", len,
         giov[0].iov_base == segs[0] && giov[1].iov_base == segs[1] + hdr ? "iovecs into the received segments" : "COPIED");
  tap_ok(h.flags == OVL_VNET_F_NEEDS_CSUM && h.gso_type == OVL_VNET_GSO_TCPV4 && h.hdr_len == hdr &&
             h.gso_size == 1400 && h.csum_start == 20 && h.csum_offset == 16,
         "virtio_net_hdr: NEEDS_CSUM, TCPV4, hdr_len 52, gso_size 1400, csum_start 20, csum_offset 16");
  tap_ok(rd16(flat + 10) == ref_header_checksum(flat, 20), "IPv4 header checksum recomputed");
  tap_ok(rd16(flat + 36) == ref_pseudo(flat, len - 20), "TCP checksum field = pseudo-header sum (partial)");
  tap_ok(memcmp(flat + hdr, payload, len - hdr) == 0, "payload = the segments' payloads in order");
  tap_ok((flat[33] & PSH) && rd32(flat + 24) == spec().seq && rd16(flat + 4) == spec().id,
         "PSH of the last segment, seq and id of the first");
  /* what the kernel would do with it: finishing the checksum verifies, cutting it gives
   * back the original segments byte for byte */
  static uint8_t copy[65536];
  memcpy(copy, flat, len);
  tap_ok(ovl_vnet_csum_finish(copy, len, &h) == 0 && ref_l4_ok(copy, len), "its partial checksum finishes to a valid one");
  int n = ovl_gso_segment(flat, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  int same = n == 10;
  size_t o = 0;
  for (int i = 0; same && i < n; i++) {
    same &= lens[i] == seglen[i] && memcmp(out + o, orig[i], seglen[i]) == 0;
    o += lens[i];
  }
  tap_ok(same, "cutting the super-packet again gives the 10 original segments byte for byte");
  ovl_gro_restore(&gro);
  tap_ok(gro.segs[0] == segs[0] && gro.segs[9] == segs[9] && gro.seg_lens[9] == seglen[9] &&
             memcmp(segs, orig, sizeof(orig)) == 0,
         "ovl_gro_restore: the received segments are as they came (for a fallback)");

  ovl_gro_init(&gro);
  make_run(1, 1400, 1400, ACK);
  tap_ok(ovl_gro_add(&gro, segs[0], seglen[0]) && finish_flat(&h) == seglen[0] && h.gso_type == 0 &&
             h.flags == 0 && memcmp(flat, segs[0], seglen[0]) == 0,
         "one segment alone: written as it came, no virtio_net_hdr flags");

  /* limits: 64 segments, 65535 bytes */
  make_run(70, 900, 900, ACK);
  ovl_gro_init(&gro);
  int k = 0;
  while (k < 70 && ovl_gro_add(&gro, segs[k], seglen[k])) k++;
  tap_ok(k == OVL_GRO_SEGS_MAX, "at most %u segments per super-packet (got %d)", OVL_GRO_SEGS_MAX, k);
  make_run(50, 1448, 1448, ACK);
  ovl_gro_init(&gro);
  k = 0;
  while (k < 50 && ovl_gro_add(&gro, segs[k], seglen[k])) k++;
  tap_ok(k == (65535 - 52) / 1448 && gro.len <= 65535, "at most 65535 bytes (%d segments of 1448)", k);
}

static void test_gro_eligible(void) {
  uint8_t p[1600];
  struct tcpspec s = spec();
  size_t len = build_tcp(p, &s, payload, 1000);
  tap_ok(ovl_gro_eligible(p, len), "ACK with payload, DF, IHL 5, checksum good: eligible");
  s.ihl = 6;
  len = build_tcp(p, &s, payload, 1000);
  tap_ok(!ovl_gro_eligible(p, len), "IPv4 options: never coalesced");
  static const uint8_t bad_flags[] = {SYN | ACK, FIN | ACK, RST | ACK, URG | ACK, CWR | ACK, PSH};
  for (size_t i = 0; i < sizeof(bad_flags); i++) {
    s = spec();
    s.flags = bad_flags[i];
    len = build_tcp(p, &s, payload, 1000);
    tap_ok(!ovl_gro_eligible(p, len), "flags %#x: not coalesced", bad_flags[i]);
  }
  s = spec();
  s.flags = ACK | PSH;
  len = build_tcp(p, &s, payload, 1000);
  tap_ok(ovl_gro_eligible(p, len), "ACK|PSH: eligible (ends a flow)");
  s = spec();
  len = build_tcp(p, &s, payload, 0);
  tap_ok(!ovl_gro_eligible(p, len), "pure ACK (no payload): not coalesced");
  s.df = false;
  len = build_tcp(p, &s, payload, 1000);
  tap_ok(!ovl_gro_eligible(p, len), "DF clear: not coalesced (its ids are kept)");
  s = spec();
  len = build_tcp(p, &s, payload, 1000);
  wr16(p + 6, 0x6000);
  wr16(p + 10, ref_header_checksum(p, 20));
  tap_ok(!ovl_gro_eligible(p, len), "MF set (a fragment): not coalesced");
  len = build_tcp(p, &s, payload, 1000);
  p[500] ^= 0x40;
  tap_ok(!ovl_gro_eligible(p, len), "bad TCP checksum: not coalesced (the pod's kernel drops it as before)");
  make_pkt(p, 500, 5, 17, 64, SRC, DST);
  tap_ok(!ovl_gro_eligible(p, 500), "UDP: not coalesced");
}

/* Headers of up to 20 + 60 bytes: two in-order segments with `optlen` bytes of TCP options
 * coalesced in a heap-allocated flow (as the engine allocates it, so ASan sees the bounds). */
static void test_gro_long_options(unsigned optlen) {
  struct ovl_gro *g = malloc(sizeof(*g));
  TAP_ASSERT(g != NULL, "malloc");
  static uint8_t two[2][1600], orig2[2][1600];
  struct tcpspec s = spec();
  s.optlen = optlen;
  size_t hdr = 20 + 20 + optlen, l0 = build_tcp(two[0], &s, payload, 1000);
  s.seq += 1000;
  s.id++;
  size_t l1 = build_tcp(two[1], &s, payload + 1000, 1000);
  memcpy(orig2, two, sizeof(two));
  ovl_gro_init(g);
  int ok = ovl_gro_eligible(two[0], l0) && ovl_gro_eligible(two[1], l1) && ovl_gro_add(g, two[0], l0) &&
           ovl_gro_add(g, two[1], l1);
  tap_ok(ok && g->nseg == 2 && g->hdr == hdr, "%u bytes of TCP options (%zu header bytes): two segments coalesce", optlen, hdr);
  struct ovl_vnet_hdr h;
  struct iovec iov[OVL_GRO_SEGS_MAX];
  uint32_t n = 0;
  size_t len = ovl_gro_finish(g, &h, iov, &n);
  tap_ok(len == hdr + 2000 && n == 2 && h.hdr_len == hdr && h.gso_size == 1000 && rd16(two[0] + 2) == len &&
             memcmp(two[0] + 40, orig2[0] + 40, optlen) == 0,
         "%u option bytes: super-packet of %zu bytes, hdr_len %zu, options kept", optlen, len, hdr);
  ovl_gro_restore(g);
  tap_ok(memcmp(two, orig2, sizeof(two)) == 0, "%u option bytes: ovl_gro_restore puts all %zu header bytes back", optlen, hdr);
  free(g);
}

/* A flow of 2 segments, then a third built from `mod` applied to the spec of the next one:
 * does it join? */
static int joins(void (*mod)(struct tcpspec *, size_t *plen)) {
  make_run(3, 1000, 1000, ACK);
  struct tcpspec s = spec();
  s.seq = spec().seq + 2000;
  s.id = (uint16_t)(spec().id + 2);
  size_t plen = 1000;
  mod(&s, &plen);
  seglen[2] = build_tcp(segs[2], &s, payload, plen);
  ovl_gro_init(&gro);
  if (!ovl_gro_add(&gro, segs[0], seglen[0]) || !ovl_gro_add(&gro, segs[1], seglen[1])) return -1;
  return ovl_gro_add(&gro, segs[2], seglen[2]);
}
static void m_none(struct tcpspec *s, size_t *l) { (void)s, (void)l; }
static void m_gap(struct tcpspec *s, size_t *l) { (void)l, s->seq += 1; }
static void m_retrans(struct tcpspec *s, size_t *l) { (void)l, s->seq -= 1000; }
static void m_port(struct tcpspec *s, size_t *l) { (void)l, s->sport++; }
static void m_ack(struct tcpspec *s, size_t *l) { (void)l, s->ack++; }
static void m_win(struct tcpspec *s, size_t *l) { (void)l, s->window++; }
static void m_ts(struct tcpspec *s, size_t *l) { (void)l, s->tsval++; }
static void m_big(struct tcpspec *s, size_t *l) { (void)s, *l = 1001; }
static void m_ttl(struct tcpspec *s, size_t *l) { (void)l, s->ttl--; }
static void m_tos(struct tcpspec *s, size_t *l) { (void)l, s->tos = 0x10; }
static void m_opts(struct tcpspec *s, size_t *l) { (void)l, s->optlen = 0; }
static void m_id(struct tcpspec *s, size_t *l) { (void)l, s->id = 9; }

static void test_gro_flush(void) {
  tap_ok(joins(m_none) == 1, "the next in-order segment joins");
  tap_ok(joins(m_id) == 1, "an unexpected IPv4 id still joins (DF set: ids carry nothing)");
  tap_ok(joins(m_gap) == 0, "out of order (a gap): flush");
  tap_ok(joins(m_retrans) == 0, "a retransmission (earlier seq): flush");
  tap_ok(joins(m_port) == 0, "another flow (port): flush");
  tap_ok(joins(m_ack) == 0, "another ack: flush");
  tap_ok(joins(m_win) == 0, "another window: flush");
  tap_ok(joins(m_ts) == 0, "other TCP option bytes (timestamp): flush");
  tap_ok(joins(m_opts) == 0, "another TCP header length: flush");
  tap_ok(joins(m_big) == 0, "more payload than the first segment: flush");
  tap_ok(joins(m_ttl) == 0, "another TTL: flush");
  tap_ok(joins(m_tos) == 0, "another TOS: flush");
  /* after PSH, after a short segment: closed */
  make_run(3, 1000, 1000, ACK);
  struct tcpspec s = spec();
  s.seq += 1000;
  s.flags = ACK | PSH;
  seglen[1] = build_tcp(segs[1], &s, payload, 1000);
  ovl_gro_init(&gro);
  tap_ok(ovl_gro_add(&gro, segs[0], seglen[0]) && ovl_gro_add(&gro, segs[1], seglen[1]) &&
             !ovl_gro_add(&gro, segs[2], seglen[2]),
         "a PSH segment ends the flow");
  make_run(3, 1000, 1000, ACK);
  s = spec();
  s.seq += 1000;
  seglen[1] = build_tcp(segs[1], &s, payload, 500);
  s.seq += 500;
  seglen[2] = build_tcp(segs[2], &s, payload, 500);
  ovl_gro_init(&gro);
  tap_ok(ovl_gro_add(&gro, segs[0], seglen[0]) && ovl_gro_add(&gro, segs[1], seglen[1]) &&
             !ovl_gro_add(&gro, segs[2], seglen[2]),
         "a short segment ends the flow");
  /* different destination */
  make_run(2, 1000, 1000, ACK);
  wr32(segs[1] + 16, DST + 1);
  wr16(segs[1] + 10, ref_header_checksum(segs[1], 20));
  ovl_gro_init(&gro);
  tap_ok(ovl_gro_add(&gro, segs[0], seglen[0]) && !ovl_gro_add(&gro, segs[1], seglen[1]), "another destination: flush");
}

/* The scalar ovl_ones_sum that packet.c had before its 4-accumulator loop (two 32-bit
 * halves of each 8-byte word into one 64-bit sum), kept here as a second reference. */
static uint32_t scalar_ones_sum(const uint8_t *buf, size_t len, uint32_t initial) {
  uint64_t s = 0;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v;
    memcpy(&v, buf + i, 8);
    s += (v & 0xffffffffu) + (v >> 32);
  }
  for (; i + 2 <= len; i += 2) {
    uint16_t v;
    memcpy(&v, buf + i, 2);
    s += v;
  }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (i < len) s += buf[i];
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  s = ((s & 0xffu) << 8) | (s >> 8);
#else
  if (i < len) s += (uint32_t)buf[i] << 8;
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
#endif
  s += initial;
  s = (s & 0xffffu) + (s >> 16);
  return (uint32_t)((s & 0xffffu) + (s >> 16));
}

/* The word-at-a-time sum that every checksum here runs on, against the byte reference:
 * every length 0..600 at every alignment 0..7, random initial sums, and all-0xff data. */
/* IPv6 ------------------------------------------------------------------------------ */

static const uint8_t SRC6[16] = {0xfd, 0x00, 0x0a, 0xf4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2};
static const uint8_t DST6[16] = {0xfd, 0x00, 0x0a, 0xf4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2};

/* Folded IPv6 pseudo-header sum for an L4 part (reference: RFC 8200 8.1 layout). */
static uint32_t ref_pseudo6(const uint8_t *ip, size_t l4len, uint8_t nh) {
  uint8_t ph[40];
  memcpy(ph, ip + 8, 32);
  wr32(ph + 32, (uint32_t)l4len);
  ph[36] = ph[37] = ph[38] = 0;
  ph[39] = nh;
  return ref_sum(ph, 40);
}

/* A valid IPv6/TCP packet (fixed header, TCP next; traffic class tos, hop limit ttl, flow
 * label `label`) with plen payload bytes; returns its length. */
static size_t build_tcp6(uint8_t *p, const struct tcpspec *s, uint32_t label, const uint8_t *payload, size_t plen) {
  size_t thl = 20 + s->optlen, len = 40 + thl + plen;
  memset(p, 0, 40);
  wr32(p, 6u << 28 | (uint32_t)s->tos << 20 | (label & 0xfffffu));
  wr16(p + 4, (uint32_t)(thl + plen));
  p[6] = 6;
  p[7] = s->ttl;
  memcpy(p + 8, SRC6, 16);
  memcpy(p + 24, DST6, 16);
  fill_tcp(p + 40, s, thl);
  memcpy(p + 40 + thl, payload, plen);
  uint64_t sum = (uint64_t)ref_pseudo6(p, len - 40, 6) + ref_sum(p + 40, len - 40);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  wr16(p + 40 + 16, (uint32_t)(~sum & 0xffff));
  return len;
}

static int ref_tcp6_ok(const uint8_t *p, size_t len) {
  uint64_t sum = (uint64_t)ref_pseudo6(p, len - 40, 6) + ref_sum(p + 40, len - 40);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff;
}

static void test_gro_v6(void) {
  struct tcpspec s = spec();
  static uint8_t p6[12][1600];
  size_t l6[12];
  for (int i = 0; i < 6; i++) {
    s.seq = spec().seq + (uint32_t)i * 1200u;
    s.flags = i == 5 ? ACK | PSH : ACK;
    l6[i] = build_tcp6(p6[i], &s, 0x12345, payload + i * 1200, i == 5 ? 300 : 1200);
  }
  int all = 1;
  ovl_gro_init(&gro);
  for (int i = 0; i < 6; i++) all &= ovl_gro_eligible(p6[i], l6[i]) && ovl_gro_add(&gro, p6[i], l6[i]);
  tap_ok(all && gro.nseg == 6 && gro.iphl == 40, "IPv6: 6 in-order segments of one flow coalesce");
  struct ovl_vnet_hdr h;
  size_t len = finish_flat(&h), hdr = 40 + 32;
  tap_ok(len == hdr + 5 * 1200 + 300 && rd16(flat + 4) == len - 40, "IPv6 super-packet: %zu bytes, payload length field %u",
         len, rd16(flat + 4));
  tap_ok(h.flags == OVL_VNET_F_NEEDS_CSUM && h.gso_type == OVL_VNET_GSO_TCPV6 && h.hdr_len == hdr && h.gso_size == 1200 &&
             h.csum_start == 40 && h.csum_offset == 16,
         "IPv6 virtio_net_hdr: NEEDS_CSUM, TCPV6, hdr_len 72, gso_size 1200, csum_start 40, csum_offset 16");
  tap_ok(rd16(flat + 40 + 16) == ref_pseudo6(flat, len - 40, 6), "IPv6: TCP checksum field = the v6 pseudo-header sum");
  tap_ok(memcmp(flat + hdr, payload, len - hdr) == 0 && (flat[40 + 13] & PSH) && rd32(flat) == rd32(p6[1]),
         "IPv6: payloads in order, PSH of the last, first word (class, label) kept");
  static uint8_t copy[65536];
  memcpy(copy, flat, len);
  tap_ok(ovl_vnet_csum_finish(copy, len, &h) == 0 && ref_tcp6_ok(copy, len), "IPv6: its partial checksum finishes to a valid one");
  ovl_gro_restore(&gro);

  /* what keeps an IPv6 segment out of a run, or out of GRO */
  struct {
    const char *what;
    uint32_t label;
    uint8_t ttl, tos;
  } mods[] = {{"another flow label", 0x12346, 63, 0}, {"another hop limit", 0x12345, 62, 0}, {"another traffic class", 0x12345, 63, 4}};
  for (size_t m = 0; m < sizeof(mods) / sizeof(mods[0]); m++) {
    s = spec();
    s.flags = ACK;
    l6[0] = build_tcp6(p6[0], &s, 0x12345, payload, 1200);
    s.seq += 1200;
    s.ttl = mods[m].ttl;
    s.tos = mods[m].tos;
    l6[1] = build_tcp6(p6[1], &s, mods[m].label, payload, 1200);
    ovl_gro_init(&gro);
    tap_ok(ovl_gro_eligible(p6[1], l6[1]) && ovl_gro_add(&gro, p6[0], l6[0]) && !ovl_gro_add(&gro, p6[1], l6[1]),
           "IPv6, %s: does not join", mods[m].what);
  }
  s = spec();
  l6[0] = build_tcp6(p6[0], &s, 0, payload, 1000);
  p6[0][6] = 0; /* hop-by-hop options header: the TCP header is not at 40 */
  tap_ok(!ovl_gro_eligible(p6[0], l6[0]), "IPv6 with an extension header: not coalesced");
  l6[0] = build_tcp6(p6[0], &s, 0, payload, 1000);
  wr16(p6[0] + 4, rd16(p6[0] + 4) - 8);
  tap_ok(!ovl_gro_eligible(p6[0], l6[0]), "IPv6 payload length short of the packet: not coalesced");
  l6[0] = build_tcp6(p6[0], &s, 0, payload, 1000);
  p6[0][700] ^= 1;
  tap_ok(!ovl_gro_eligible(p6[0], l6[0]), "IPv6 bad TCP checksum (v6 pseudo header): not coalesced");
  l6[0] = build_tcp6(p6[0], &s, 0, payload, 1000);
  tap_ok(ovl_gro_eligible(p6[0], l6[0]), "IPv6 good packet: eligible");
  s.flags = ACK | FIN;
  l6[0] = build_tcp6(p6[0], &s, 0, payload, 1000);
  tap_ok(!ovl_gro_eligible(p6[0], l6[0]), "IPv6 FIN: not coalesced");
}

/* The flow table --------------------------------------------------------------------- */

static struct ovl_gro_table table;
/* What the engine's deliver() does with the table, writing into `log` (one entry per
 * write: a super-packet flattened or a packet as it came). */
struct wlog {
  int n;
  size_t len[200];
  uint8_t *pkt[200]; /* first segment of the write */
  uint32_t nseg[200];
};
static struct wlog wl;
static void log_flow(struct ovl_gro *g) {
  if (g->nseg == 0) return;
  wl.pkt[wl.n] = g->segs[0];
  wl.nseg[wl.n] = g->nseg;
  wl.len[wl.n++] = g->len;
  ovl_gro_init(g);
}
static void offer(uint8_t *p, size_t len) {
  int f = ovl_gro_table_find(&table, p, len);
  if (ovl_gro_eligible(p, len)) {
    if (f >= 0) {
      if (ovl_gro_add(&table.flows[f], p, len)) return;
      log_flow(&table.flows[f]);
    } else {
      f = (int)ovl_gro_table_slot(&table);
      log_flow(&table.flows[f]);
    }
    ovl_gro_add(&table.flows[f], p, len);
    return;
  }
  if (f == OVL_GRO_FIND_ALL)
    for (uint32_t i = 0; i < table.used; i++) log_flow(&table.flows[i]);
  else if (f >= 0)
    log_flow(&table.flows[f]);
  wl.pkt[wl.n] = p;
  wl.nseg[wl.n] = 1;
  wl.len[wl.n++] = len;
}
static void end_batch(void) {
  for (uint32_t i = 0; i < table.used; i++) log_flow(&table.flows[i]);
  ovl_gro_table_init(&table);
}

static uint8_t fl[40][1600];
static size_t fll[40];

static void test_gro_table(void) {
  /* 4 streams (v4 ports 40000..40002 and one IPv6), 8 segments each, interleaved as one UDP
   * GRO receive hands them over: each coalesces into its own super-packet */
  struct tcpspec s = spec();
  for (int i = 0; i < 8; i++)
    for (int k = 0; k < 4; k++) {
      s.sport = (uint16_t)(40000 + k);
      s.seq = spec().seq + (uint32_t)i * 1000u;
      s.id = (uint16_t)(spec().id + i);
      uint8_t *p = fl[i * 4 + k];
      fll[i * 4 + k] = k == 3 ? build_tcp6(p, &s, 7, payload + i * 1000 + k, 1000) : build_tcp(p, &s, payload + i * 1000 + k, 1000);
    }
  memset(&wl, 0, sizeof(wl));
  ovl_gro_table_init(&table);
  for (int i = 0; i < 32; i++) offer(fl[i], fll[i]);
  tap_ok(wl.n == 0 && table.used == 4, "4 interleaved flows: nothing written before the end of the batch, 4 runs");
  end_batch();
  int ok = wl.n == 4;
  for (int k = 0; ok && k < 4; k++) ok &= wl.nseg[k] == 8 && wl.pkt[k] == fl[k];
  tap_ok(ok, "4 interleaved flows (3 IPv4, 1 IPv6): 4 super-packets of 8 segments each");
  /* a finished run: its payloads in order */
  ovl_gro_table_init(&table);
  for (int i = 0; i < 32; i++) offer(fl[i], fll[i]);
  gro = table.flows[1];
  struct ovl_vnet_hdr h;
  size_t len = finish_flat(&h);
  ok = len == 52 + 8000 && h.gso_type == OVL_VNET_GSO_TCPV4;
  for (int i = 0; ok && i < 8; i++) ok &= memcmp(flat + 52 + i * 1000, payload + i * 1000 + 1, 1000) == 0;
  tap_ok(ok, "the second flow's super-packet carries its own payloads in order");
  ovl_gro_restore(&gro);
  gro = table.flows[3];
  len = finish_flat(&h);
  tap_ok(len == 72 + 8000 && h.gso_type == OVL_VNET_GSO_TCPV6 && memcmp(flat + 72, payload + 3, 1000) == 0,
         "the IPv6 flow's super-packet (TCPV6) beside the IPv4 ones");
  ovl_gro_restore(&gro);
  ovl_gro_table_init(&table);

  /* out of order: 0 1 3 2 of one flow -> [0 1], then [3] alone, then [2] */
  memset(&wl, 0, sizeof(wl));
  offer(fl[0], fll[0]);
  offer(fl[4], fll[4]);
  offer(fl[12], fll[12]);
  offer(fl[8], fll[8]);
  end_batch();
  tap_ok(wl.n == 3 && wl.pkt[0] == fl[0] && wl.nseg[0] == 2 && wl.pkt[1] == fl[12] && wl.nseg[1] == 1 && wl.pkt[2] == fl[8],
         "out of order (0 1 3 2): [0 1] written before 3 starts a run, then 3, then 2 (the flow's order as received)");

  /* an ineligible packet of a flow in the table (FIN) goes after that flow's run only */
  memset(&wl, 0, sizeof(wl));
  offer(fl[0], fll[0]);
  offer(fl[1], fll[1]);
  offer(fl[4], fll[4]);
  s = spec();
  s.seq = spec().seq + 2000u;
  s.flags = ACK | FIN;
  uint8_t fin[1600];
  size_t finl = build_tcp(fin, &s, payload, 10);
  tap_ok(ovl_gro_table_find(&table, fin, finl) == 0, "find: a FIN of the first flow names its run");
  offer(fin, finl);
  tap_ok(wl.n == 2 && wl.pkt[0] == fl[0] && wl.nseg[0] == 2 && wl.pkt[1] == fin && table.flows[1].nseg == 1,
         "its FIN is written after its run; the other flow's run stays");
  end_batch();

  /* find: what has no flow, what has an unknown one */
  uint8_t u[600];
  make_pkt(u, 500, 5, 17, 64, SRC, DST);
  offer(fl[0], fll[0]);
  tap_ok(ovl_gro_table_find(&table, u, 500) == OVL_GRO_FIND_NONE, "find: UDP has no run");
  make_pkt(u, 500, 5, 6, 64, SRC, DST);
  wr16(u + 6, 0x00b9); /* fragment offset 185 */
  tap_ok(ovl_gro_table_find(&table, u, 500) == OVL_GRO_FIND_ALL, "find: a non-first IPv4 fragment of TCP: after every run");
  s = spec();
  size_t l6 = build_tcp6(u, &s, 0, payload, 100);
  tap_ok(ovl_gro_table_find(&table, u, l6) == OVL_GRO_FIND_NONE, "find: IPv6 TCP with the IPv4 flow's ports is another flow");
  u[6] = 0;
  tap_ok(ovl_gro_table_find(&table, u, l6) == OVL_GRO_FIND_ALL, "find: IPv6 with an extension header: after every run");
  u[6] = 58;
  tap_ok(ovl_gro_table_find(&table, u, l6) == OVL_GRO_FIND_NONE, "find: ICMPv6 has no run");
  tap_ok(ovl_gro_table_find(&table, u, 10) == OVL_GRO_FIND_NONE, "find: 10 bytes: nothing read beyond them");
  end_batch();

  /* table full: flow OVL_GRO_FLOWS_MAX + 1 takes the oldest run's place, round robin */
  memset(&wl, 0, sizeof(wl));
  static uint8_t many[OVL_GRO_FLOWS_MAX + 2][1600];
  size_t ml[OVL_GRO_FLOWS_MAX + 2];
  for (uint32_t k = 0; k < OVL_GRO_FLOWS_MAX + 2; k++) {
    s = spec();
    s.sport = (uint16_t)(1000 + k);
    ml[k] = build_tcp(many[k], &s, payload, 1000);
  }
  for (uint32_t k = 0; k < OVL_GRO_FLOWS_MAX; k++) offer(many[k], ml[k]);
  tap_ok(wl.n == 0 && table.used == OVL_GRO_FLOWS_MAX, "%u flows: all held", OVL_GRO_FLOWS_MAX);
  offer(many[OVL_GRO_FLOWS_MAX], ml[OVL_GRO_FLOWS_MAX]);
  offer(many[OVL_GRO_FLOWS_MAX + 1], ml[OVL_GRO_FLOWS_MAX + 1]);
  tap_ok(wl.n == 2 && wl.pkt[0] == many[0] && wl.pkt[1] == many[1] && table.flows[0].segs[0] == many[OVL_GRO_FLOWS_MAX] &&
             table.flows[1].segs[0] == many[OVL_GRO_FLOWS_MAX + 1],
         "table full: the next flows write the oldest runs (flows 0, 1) and take their places");
  end_batch();
  tap_ok(wl.n == (int)OVL_GRO_FLOWS_MAX + 2 && table.used == 0, "end of the batch: every run written, the table empty");
}

static void test_ones_sum(void) {
  static uint8_t b[700];
  int ok = 1;
  for (size_t i = 0; i < sizeof(b); i++) b[i] = (uint8_t)rnd();
  for (size_t off = 0; off < 8; off++)
    for (size_t len = 0; len <= 600; len++) {
      uint32_t init = rnd() & 0xffff;
      uint64_t r = (uint64_t)init + (len ? ref_sum(b + off, len) : 0);
      while (r >> 16) r = (r & 0xffff) + (r >> 16);
      ok &= ovl_ones_sum(b + off, len, init) == r;
    }
  tap_ok(ok, "ovl_ones_sum = the byte reference, lengths 0..600 x alignments 0..7, random initial");
  memset(b, 0xff, sizeof(b));
  tap_ok(ovl_ones_sum(b, 600, 0) == 0xffff && ovl_ones_sum(b, 601, 0) == ref_sum(b, 601), "all-0xff data");
  static uint8_t big[65536];
  for (size_t i = 0; i < sizeof(big); i++) big[i] = (uint8_t)rnd();
  tap_ok(ovl_ones_sum(big, 65535, 0) == ref_sum(big, 65535), "65535 bytes");
  /* against the old scalar loop: random lengths 0..65535 at random alignments 0..63 (every
   * turn count and tail of the 64-byte loop), random initial sums; then data that makes
   * every 64-bit add carry (all 0xff..), where the end-around carry matters */
  static uint8_t rb[65536 + 64];
  for (size_t i = 0; i < sizeof(rb); i++) rb[i] = (uint8_t)rnd();
  int same = 1;
  for (int k = 0; k < 20000 && same; k++) {
    size_t len = k < 1024 ? (size_t)k : rnd() % 65536, off = rnd() % 64;
    uint32_t init = rnd() & 0xffff;
    same &= ovl_ones_sum(rb + off, len, init) == scalar_ones_sum(rb + off, len, init);
  }
  tap_ok(same, "ovl_ones_sum = the old scalar loop over 20000 random lengths (0..1023 all, then up to 65535) x alignments");
  memset(rb, 0xff, sizeof(rb));
  same = 1;
  for (size_t len = 0; len <= 4096 && same; len++)
    same &= ovl_ones_sum(rb + (len & 7), len, 0xffff) == scalar_ones_sum(rb + (len & 7), len, 0xffff);
  tap_ok(same, "all-0xff data (a carry out of every 64-bit add), lengths 0..4096: = the old scalar loop");
  memset(rb, 0, sizeof(rb));
  tap_ok(ovl_ones_sum(rb, 65535, 0) == 0 && ovl_ones_sum(rb, 100, 7) == 7, "zeros: 0, and the initial sum passes through");
}

int main(void) {
  test_ones_sum();
  test_segment();
  test_csum_finish();
  test_gro_run();
  test_gro_eligible();
  test_gro_flush();
  test_gro_long_options(24); /* timestamps + one SACK block, as Linux sends in lossy transfers */
  test_gro_long_options(40); /* the most a TCP header can carry */
  test_gro_v6();
  test_gro_table();
  return tap_done();
}
