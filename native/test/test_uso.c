/* uso.c's UDP super-packet cut (gso_type UDP_L4), IPv4 and IPv6: each datagram checked
 * against references written here (IPv4 total length, id + i, header checksum by
 * testpkt.h; IPv6 payload length; UDP length; the UDP checksum recomputed over a pseudo
 * header built byte by byte; payload bytes in order), the last short datagram, gso_size
 * edge cases, a computed 0 checksum stored as 0xffff, and refusals of malformed
 * super-packets and virtio headers. */
#include "overlayd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

static uint8_t p[70000], out[140000];
static uint32_t lens[OVL_GSO_SEGS_MAX];

/* A UDP super-packet of `payload` bytes: IPv4 (IHL ihl) or IPv6, lengths consistent. */
static size_t make_super(int v6, unsigned ihl, size_t payload) {
  size_t iphl = v6 ? 40 : ihl * 4u, len = iphl + 8 + payload;
  if (v6) {
    for (size_t i = 0; i < len; i++) p[i] = (uint8_t)rnd();
    p[0] = 0x60;
    wr16(p + 4, (uint32_t)(len - 40));
    p[6] = 17;
    p[7] = 64;
  } else {
    make_pkt(p, len, ihl, 17, 64, 0x0a010203, 0x0a020304);
  }
  wr16(p + iphl + 4, (uint32_t)(len - iphl));
  return len;
}

static struct ovl_vnet_hdr vh(int v6, unsigned ihl, unsigned gso) {
  uint16_t iphl = (uint16_t)(v6 ? 40 : ihl * 4u);
  return (struct ovl_vnet_hdr){.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_UDP_L4, .hdr_len = (uint16_t)(iphl + 8),
                               .gso_size = (uint16_t)gso, .csum_start = iphl, .csum_offset = 6};
}

/* The UDP checksum of datagram s (len bytes, UDP at iphl) verifies over a pseudo header
 * built here byte by byte. */
static int udp_checksum_ok(const uint8_t *s, size_t len, size_t iphl, int v6) {
  static uint8_t ps[40 + 70000];
  size_t l4 = len - iphl, n = tp_pseudo_header(ps, s, len, iphl, v6, 17);
  memcpy(ps + n, s + iphl, l4);
  return rd16(s + iphl + 6) != 0 && ref_sum(ps, n + l4) == 0xffff;
}

static void test_cut(int v6, unsigned ihl, size_t payload, unsigned gso) {
  size_t len = make_super(v6, ihl, payload), iphl = v6 ? 40 : ihl * 4u, hdr = iphl + 8;
  struct ovl_vnet_hdr h = vh(v6, ihl, gso);
  int n = ovl_uso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  size_t want = payload == 0 ? 1 : (payload + gso - 1) / gso;
  if (want > OVL_GSO_SEGS_MAX) {
    tap_ok(n == -E2BIG, "%s %zu payload bytes, gso_size %u: %zu datagrams refused (-E2BIG)", v6 ? "IPv6" : "IPv4", payload, gso, want);
    return;
  }
  int ok = n == (int)want;
  size_t o = 0, done = 0;
  for (int i = 0; ok && i < n; i++) {
    const uint8_t *s = out + o;
    size_t plen = (size_t)i + 1 < want ? gso : payload - done;
    ok &= lens[i] == hdr + plen && lens[i] <= hdr + gso;
    if (v6) {
      ok &= rd16(s + 4) == lens[i] - 40 && s[0] == 0x60 && memcmp(s + 6, p + 6, 34) == 0;
    } else {
      ok &= rd16(s + 2) == lens[i] && rd16(s + 4) == (uint16_t)(rd16(p + 4) + i) && memcmp(s + 6, p + 6, 4) == 0;
      ok &= memcmp(s + 12, p + 12, iphl - 12) == 0 && rd16(s + 10) == ref_header_checksum(s, iphl);
    }
    ok &= memcmp(s + iphl, p + iphl, 4) == 0 && rd16(s + iphl + 4) == lens[i] - iphl; /* ports, UDP length */
    ok &= udp_checksum_ok(s, lens[i], iphl, v6);
    ok &= memcmp(s + hdr, p + hdr + done, plen) == 0;
    done += plen;
    o += lens[i];
  }
  tap_ok(ok && done == payload, "%s IHL %u, %zu payload bytes, gso_size %u: %d datagrams, fields and checksums right",
         v6 ? "IPv6" : "IPv4", v6 ? 0 : ihl, payload, gso, n);
}

/* A datagram whose UDP checksum computes to 0 is sent with 0xffff (RFC 768). */
static void test_zero_checksum(int v6) {
  size_t payload = 100, len = make_super(v6, 5, payload), iphl = v6 ? 40 : 20, hdr = iphl + 8;
  struct ovl_vnet_hdr h = vh(v6, 5, 200);
  /* choose the last two payload bytes so that the datagram's full sum (checksum field 0)
   * is 0xffff: its complement, the checksum, is then 0 */
  wr16(p + len - 2, 0);
  int n = ovl_uso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  uint16_t c = rd16(out + iphl + 6); /* ~(S) with the word 0 */
  uint32_t s = (~c) & 0xffffu;       /* S (not 0 here: S = 0 needs all words 0) */
  wr16(p + len - 2, 0xffffu - s);
  int n2 = ovl_uso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  tap_ok(n == 1 && n2 == 1 && rd16(out + iphl + 6) == 0xffff && udp_checksum_ok(out, lens[0], iphl, v6) &&
             memcmp(out + hdr, p + hdr, payload) == 0,
         "%s: a computed 0 UDP checksum is stored as 0xffff", v6 ? "IPv6" : "IPv4");
}

static void test_refusals(int v6) {
  const char *f = v6 ? "IPv6" : "IPv4";
  size_t iphl = v6 ? 40 : 20;
  size_t len = make_super(v6, 5, 3000);
  struct ovl_vnet_hdr h = vh(v6, 5, 1000);
  memset(lens, 0xab, sizeof(lens));
#define CUT(hh, l) ovl_uso_segment(p, (l), &(hh), out, sizeof(out), lens, OVL_GSO_SEGS_MAX)
  tap_ok(CUT(h, len) == 3, "%s: the well-formed super-packet cuts into 3", f);
  struct ovl_vnet_hdr b = h;
  b.gso_size = 0;
  tap_ok(CUT(b, len) == -EINVAL, "%s: gso_size 0: -EINVAL", f);
  b = h;
  b.csum_start = (uint16_t)(iphl + 2);
  tap_ok(CUT(b, len) == -EINVAL, "%s: csum_start not at the UDP header: -EINVAL", f);
  b = h;
  b.csum_offset = 16;
  tap_ok(CUT(b, len) == -EINVAL, "%s: csum_offset 16 (TCP's): -EINVAL", f);
  b = h;
  b.hdr_len = (uint16_t)(len + 1);
  tap_ok(CUT(b, len) == -EINVAL, "%s: hdr_len beyond the packet: -EINVAL", f);
  b = h;
  b.gso_type = OVL_VNET_GSO_UDP_L4 | OVL_VNET_GSO_ECN;
  tap_ok(CUT(b, len) == -EINVAL, "%s: UDP_L4 with the ECN bit: -EINVAL", f);
  b = h;
  b.gso_type = OVL_VNET_GSO_TCPV4;
  tap_ok(CUT(b, len) == -EPROTONOSUPPORT, "%s: gso_type TCPV4: -EPROTONOSUPPORT", f);
  b = h;
  b.flags = 0; /* no partial checksum: csum_start/offset unused, the cut computes it all */
  tap_ok(CUT(b, len) == 3 && udp_checksum_ok(out, lens[0], iphl, v6), "%s: without NEEDS_CSUM: cut, checksums right", f);
  tap_ok(CUT(h, len - 1) == -EINVAL, "%s: IP length says more than the buffer: -EINVAL", f);
  tap_ok(CUT(h, iphl + 7) == -EINVAL, "%s: UDP header cut short: -EINVAL", f);
  tap_ok(CUT(h, 0) == -EINVAL, "%s: empty buffer: -EINVAL", f);
  wr16(p + iphl + 4, (uint32_t)(len - iphl - 1));
  tap_ok(CUT(h, len) == -EINVAL, "%s: UDP length not the packet's: -EINVAL", f);
  wr16(p + iphl + 4, (uint32_t)(len - iphl));
  uint8_t proto = p[v6 ? 6 : 9];
  p[v6 ? 6 : 9] = v6 ? 60 : 6; /* IPv6: a Destination options header; IPv4: TCP */
  tap_ok(CUT(h, len) == -EINVAL, "%s: not UDP right after the IP header: -EINVAL", f);
  p[v6 ? 6 : 9] = proto;
  if (!v6) {
    wr16(p + 6, 0x2000); /* MF */
    tap_ok(CUT(h, len) == -EINVAL, "IPv4: a fragment (MF): -EINVAL");
    wr16(p + 6, 0x0001); /* offset 8 */
    tap_ok(CUT(h, len) == -EINVAL, "IPv4: a fragment (offset): -EINVAL");
    wr16(p + 6, 0x4000);
    p[0] = 0x44; /* IHL 4 */
    tap_ok(CUT(h, len) == -EINVAL, "IPv4: IHL 4: -EINVAL");
    p[0] = 0x45;
  }
  p[0] = v6 ? 0x45 : 0x65; /* the other version's number */
  tap_ok(CUT(h, len) == -EINVAL, "%s: wrong IP version: -EINVAL", f);
  p[0] = v6 ? 0x60 : 0x45;
  b = h;
  b.gso_size = 10; /* 300 datagrams */
  tap_ok(CUT(b, len) == -E2BIG, "%s: more than OVL_GSO_SEGS_MAX datagrams: -E2BIG", f);
  tap_ok(ovl_uso_segment(p, len, &h, out, len + 2 * (iphl + 8) - 1, lens, OVL_GSO_SEGS_MAX) == -ENOBUFS &&
             ovl_uso_segment(p, len, &h, out, len + 2 * (iphl + 8), lens, OVL_GSO_SEGS_MAX) == 3,
         "%s: out one byte too small: -ENOBUFS; exactly enough: cut", f);
  tap_ok(ovl_uso_segment(p, len, &h, out, sizeof(out), lens, 2) == -E2BIG, "%s: max_segs 2 for 3: -E2BIG", f);
#undef CUT
}

int main(void) {
  for (int v6 = 0; v6 <= 1; v6++) {
    test_cut(v6, 5, 8000, 1400);          /* last datagram short */
    test_cut(v6, 5, 7000, 1400);          /* exact multiple */
    test_cut(v6, 5, 100, 1400);           /* one datagram, shorter than gso_size */
    test_cut(v6, 5, 1400, 1400);          /* one datagram of exactly gso_size */
    test_cut(v6, 5, 0, 1400);             /* no payload: one empty datagram */
    test_cut(v6, 5, 65535 - 8 - (v6 ? 0 : 20), 1472); /* the largest super-packet */
    test_cut(v6, 5, 255, 1);              /* gso_size 1 (odd: checksums over odd lengths) */
    test_cut(v6, 5, 257, 1);              /* one datagram too many: -E2BIG */
    test_cut(v6, 5, 256, 1);              /* exactly OVL_GSO_SEGS_MAX datagrams */
    test_cut(v6, 5, 2999, 1001);          /* odd sizes */
    test_cut(v6, 5, 40000, 65535);        /* gso_size larger than the payload */
    test_zero_checksum(v6);
    test_refusals(v6);
  }
  test_cut(0, 15, 5000, 1200); /* IPv4 options copied into every datagram */
  test_cut(0, 6, 3333, 333);
  for (int k = 0; k < 20; k++) test_cut((int)(rnd() & 1), 5 + (rnd() % 11), rnd() % 20000, 1 + rnd() % 3000);
  return tap_done();
}
