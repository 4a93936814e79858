/* offload.c's IPv6 TSO cut (gso_type TCPV6): a super-packet cut into MSS segments, each
 * checked against references written here: payload length, sequence numbers, FIN/PSH only
 * on the last, CWR only on the first, the TCP checksum recomputed over an IPv6 pseudo
 * header built byte by byte, and the payload bytes in order; refusals (extension headers,
 * a truncated TCP header, gso_size 0, too many segments, no room) leave nothing half done. */
#include "overlayd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

#define TH 40u /* TCP header offset */

static size_t make_super6(uint8_t *p, size_t payload, unsigned tcp_hl, uint8_t flags) {
  size_t len = 40 + tcp_hl + payload;
  for (size_t i = 0; i < len; i++) p[i] = (uint8_t)rnd();
  p[0] = 0x60;
  wr16(p + 4, (uint32_t)(len - 40));
  p[6] = 6;
  p[7] = 64;
  p[TH + 12] = (uint8_t)((tcp_hl / 4) << 4);
  p[TH + 13] = flags;
  return len;
}

static int tcp6_checksum_ok(const uint8_t *s, size_t len) {
  static uint8_t ps[40 + 70000];
  memcpy(ps, s + 8, 32);
  wr32(ps + 32, (uint32_t)(len - 40));
  ps[36] = ps[37] = ps[38] = 0;
  ps[39] = 6;
  memcpy(ps + 40, s + 40, len - 40);
  return ref_sum(ps, len) == 0xffff;
}

static void test_cut(unsigned tcp_hl, size_t payload, unsigned mss) {
  static uint8_t p[70000], out[140000];
  uint32_t lens[OVL_GSO_SEGS_MAX];
  size_t len = make_super6(p, payload, tcp_hl, 0x18 | 0x01 | 0x80); /* ACK PSH FIN CWR */
  struct ovl_vnet_hdr h = {.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_TCPV6, .hdr_len = (uint16_t)(40 + tcp_hl),
                           .gso_size = (uint16_t)mss, .csum_start = 40, .csum_offset = 16};
  int n = ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX);
  size_t want = (payload + mss - 1) / mss, hdr = 40 + tcp_hl;
  int ok = n == (int)want;
  size_t o = 0, done = 0;
  uint32_t seq = rd32(p + TH + 4);
  for (int i = 0; ok && i < n; i++) {
    const uint8_t *s = out + o;
    size_t plen = (size_t)i + 1 < want ? mss : payload - done;
    ok &= lens[i] == hdr + plen && rd16(s + 4) == lens[i] - 40 && memcmp(s + 6, p + 6, 34) == 0;
    ok &= rd32(s + TH + 4) == seq + (uint32_t)done && memcmp(s + TH + 8, p + TH + 8, 5) == 0;
    uint8_t f = s[TH + 13];
    ok &= (i + 1 == n) == ((f & 0x09) == 0x09) && (i == 0) == ((f & 0x80) != 0) && (f & 0x10);
    ok &= tcp6_checksum_ok(s, lens[i]);
    ok &= memcmp(s + hdr, p + hdr + done, plen) == 0;
    done += plen;
    o += lens[i];
  }
  tap_ok(ok && done == payload, "TCPV6 %zu payload bytes, TCP header %u, MSS %u: %d segments, fields and checksums right", payload,
         tcp_hl, mss, n);
  tap_ok(ok && tp_cut_matches(p, len, &h, out, lens, n), "TCPV6 %zu payload bytes, MSS %u: ovl_gso_cut = header stubs + slices of the same bytes",
         payload, mss);
}

static void test_refusals(void) {
  static uint8_t p[4000], out[8000];
  uint32_t lens[OVL_GSO_SEGS_MAX];
  struct ovl_vnet_hdr h = {.gso_type = OVL_VNET_GSO_TCPV6, .gso_size = 1000};
  size_t len = make_super6(p, 3000, 20, 0x10);
  p[6] = 60; /* a Destination options header before TCP */
  tap_ok(ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL, "extension headers: -EINVAL");
  p[6] = 6;
  tap_ok(ovl_gso_segment(p, 50, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL, "TCP header cut short: -EINVAL");
  p[TH + 12] = 0xf0; /* 60-byte TCP header in a 90-byte packet */
  tap_ok(ovl_gso_segment(p, 90, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL, "data offset beyond the packet: -EINVAL");
  p[TH + 12] = 0x50;
  p[0] = 0x45;
  tap_ok(ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL, "TCPV6 on an IPv4 packet: -EINVAL");
  p[0] = 0x60;
  h.gso_size = 0;
  tap_ok(ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -EINVAL, "gso_size 0: -EINVAL");
  h.gso_size = 10;
  tap_ok(ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == -E2BIG, "300 segments: -E2BIG");
  h.gso_size = 1000;
  tap_ok(ovl_gso_segment(p, len, &h, out, 3000, lens, OVL_GSO_SEGS_MAX) == -ENOBUFS, "no room for the headers: -ENOBUFS");
  h.gso_type = OVL_VNET_GSO_TCPV6 | OVL_VNET_GSO_ECN;
  tap_ok(ovl_gso_segment(p, len, &h, out, sizeof(out), lens, OVL_GSO_SEGS_MAX) == 3, "TCPV6|ECN: cut too");
}

int main(void) {
  test_cut(20, 3000, 1000);
  test_cut(32, 2999, 1428);
  test_cut(60, 64000, 1388);
  test_cut(20, 1, 1000);
  test_refusals();
  return tap_done();
}
