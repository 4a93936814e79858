/* packet.c against independent references written here: validation codes in their order,
 * checksums against a plain 64-bit word sum, the RFC 1624 TTL rule against a full
 * recomputation (random headers, every TTL x protocol, and the crafted -0 case), the RFC
 * 1812 may-respond rule case by case, and ICMP errors decoded field by field. */
#include "overlayd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

static void test_checksums(void) {
  uint8_t buf[1501];
  for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (uint8_t)rnd();
  int ok = 1;
  for (size_t len = 0; len <= sizeof(buf); len += 7) ok &= ovl_ones_sum(buf, len, 0) == (len ? ref_sum(buf, len) : 0);
  tap_ok(ok, "ovl_ones_sum equals a 64-bit reference sum, even and odd lengths");
  uint8_t ff[4] = {0xff, 0xff, 0xff, 0xff};
  tap_ok(ovl_ones_sum(ff, 4, 0) == 0xffff && ovl_ones_sum(ff, 0, 0) == 0, "sum of 0xffff words is 0xffff (-0); empty is 0");
  tap_ok(ovl_ones_sum(buf + 2, 10, ovl_ones_sum(buf, 2, 0)) == ovl_ones_sum(buf, 12, 0), "initial chains partial sums");
  tap_ok(ovl_inet_checksum(buf, 100) == (uint16_t)(~ref_sum(buf, 100) & 0xffff), "ovl_inet_checksum = ~sum");
  uint8_t h[60];
  ok = 1;
  for (unsigned ihl = 5; ihl <= 15; ihl++) {
    make_pkt(h, ihl * 4u, ihl, 17, 64, rnd(), rnd());
    ok &= ovl_ipv4_header_checksum(h, ihl * 4u) == ref_header_checksum(h, ihl * 4u);
  }
  tap_ok(ok, "ovl_ipv4_header_checksum equals the reference for IHL 5..15");
  /* the inline 20-byte path: random headers, and words of all ones / all zeros */
  ok = 1;
  for (int i = 0; i < 200000; i++) {
    for (int k = 0; k < 20; k++) h[k] = (uint8_t)(i % 3 == 0 ? 0xff : i % 3 == 1 ? rnd() : (rnd() & 1) * 0xff);
    ok &= ovl_ipv4_header_checksum(h, 20) == ref_header_checksum(h, 20);
  }
  memset(h, 0, 20);
  ok &= ovl_ipv4_header_checksum(h, 20) == 0xffff;
  tap_ok(ok, "ovl_ipv4_header_checksum of 20 bytes (inline path) equals the reference over 200,000 headers");
}

static void test_validate(void) {
  uint8_t p[100];
  make_pkt(p, 40, 5, 17, 64, 0x0a000001, 0x0a000002);
  tap_ok(ovl_ipv4_validate(p, 40) == OVL_IPV4_OK, "a valid packet is OK");
  tap_ok(ovl_ipv4_validate(p, 19) == OVL_IPV4_TOO_SHORT, "19 bytes: too short");
  tap_ok(ovl_ipv4_validate(p, 0) == OVL_IPV4_TOO_SHORT, "0 bytes: too short");
  uint8_t q[100];
  memcpy(q, p, 40);
  q[0] = 0x65;
  tap_ok(ovl_ipv4_validate(q, 40) == OVL_IPV4_BAD_VERSION, "version 6: bad version");
  memcpy(q, p, 40);
  q[0] = 0x44;
  tap_ok(ovl_ipv4_validate(q, 40) == OVL_IPV4_BAD_IHL, "IHL 4: bad IHL");
  make_pkt(q, 40, 5, 17, 64, 1, 2);
  q[0] = 0x4f; /* 60-byte header in a 40-byte packet */
  tap_ok(ovl_ipv4_validate(q, 40) == OVL_IPV4_BAD_IHL, "IHL*4 > len: bad IHL");
  tap_ok(ovl_ipv4_validate(p, 39) == OVL_IPV4_BAD_LENGTH, "one byte less than total length: bad length");
  tap_ok(ovl_ipv4_validate(p, 43) == OVL_IPV4_BAD_LENGTH, "longer than total length: bad length");
  memcpy(q, p, 40);
  q[10] ^= 1;
  tap_ok(ovl_ipv4_validate(q, 40) == OVL_IPV4_BAD_CHECKSUM, "flipped checksum bit: bad checksum");
  memcpy(q, p, 40);
  q[15] ^= 0x80;
  tap_ok(ovl_ipv4_validate(q, 40) == OVL_IPV4_BAD_CHECKSUM, "flipped source bit: bad checksum");
  memcpy(q, p, 40);
  q[0] = 0x65;
  q[10] ^= 1;
  tap_ok(ovl_ipv4_validate(q, 40) == OVL_IPV4_BAD_VERSION, "the first failure in order is reported");
  /* The other encoding of zero: a header whose checksum computes as 0x0000 also passes as 0xffff. */
  make_pkt(q, 20, 5, 17, 64, 0, 0);
  memset(q + 4, 0, 16);
  q[0] = 0x45; q[1] = 0; wr16(q + 2, 20);
  /* words: 0x4500, 0x0014 -> sum 0x4514; make it 0xffff with the id field */
  wr16(q + 4, 0xffff - 0x4514);
  tap_ok(ref_header_checksum(q, 20) == 0, "crafted header has checksum 0x0000");
  tap_ok(ovl_ipv4_validate(q, 20) == OVL_IPV4_OK, "checksum field 0x0000 passes");
  wr16(q + 10, 0xffff);
  tap_ok(ovl_ipv4_validate(q, 20) == OVL_IPV4_OK, "checksum field 0xffff (the other zero) passes");
  /* A truncated datagram validated with its real length reads only the header. */
  uint8_t *big = malloc(64);
  TAP_ASSERT(big != NULL, "malloc");
  make_pkt(p, 20, 5, 17, 64, 1, 2);
  memcpy(big, p, 20);
  wr16(big + 2, 3000);
  wr16(big + 10, ref_header_checksum(big, 20));
  tap_ok(ovl_ipv4_validate(big, 3000) == OVL_IPV4_OK, "a 3000-byte packet validates from its 64 buffered bytes");
  free(big);
}

static void test_ttl(void) {
  uint8_t p[60], q[60];
  int ok = 1, cases = 0;
  for (unsigned ttl = 2; ttl <= 255; ttl++) {
    for (unsigned proto = 0; proto <= 255; proto++) {
      unsigned ihl = 5 + rnd() % 11;
      make_pkt(p, ihl * 4u, ihl, (uint8_t)proto, (uint8_t)ttl, rnd(), rnd());
      memcpy(q, p, sizeof(q));
      ok &= ovl_ipv4_decrement_ttl(p);
      q[8] = (uint8_t)(ttl - 1);
      wr16(q + 10, ref_header_checksum(q, ihl * 4u));
      ok &= memcmp(p, q, ihl * 4u) == 0;
      cases++;
    }
  }
  tap_ok(ok, "RFC 1624 incremental update == full recomputation, %d headers (every TTL x protocol)", cases);

  /* The -0 case: a header whose new checksum is 0x0000. */
  make_pkt(p, 20, 5, 6, 9, 0x0a000001, 0x0a000002);
  p[8] = 8; /* the TTL after the decrement */
  wr16(p + 4, 0);
  wr16(p + 10, 0);
  uint32_t s = ref_sum(p, 20);
  wr16(p + 4, (0xffff - s) & 0xffff); /* now the words after the decrement sum to 0xffff */
  TAP_ASSERT(ref_header_checksum(p, 20) == 0, "crafted: new checksum is 0x0000");
  p[8] = 9;
  wr16(p + 10, ref_header_checksum(p, 20));
  tap_ok(ovl_ipv4_decrement_ttl(p) && p[8] == 8 && rd16(p + 10) == 0x0000,
         "-0 case: incremental gives 0x0000 like a full recomputation (eqn. 3, not eqn. 2)");
  tap_ok(ovl_ipv4_validate(p, 20) == OVL_IPV4_OK, "and the result validates");

  make_pkt(p, 20, 5, 17, 1, 1, 2);
  memcpy(q, p, 20);
  tap_ok(!ovl_ipv4_decrement_ttl(p) && memcmp(p, q, 20) == 0, "TTL 1: false, packet untouched");
  p[8] = 0;
  tap_ok(!ovl_ipv4_decrement_ttl(p) && p[8] == 0, "TTL 0: false, packet untouched");

  make_pkt(p, 20, 5, 17, 64, 1, 2);
  p[10] ^= 0x10; /* a wrong checksum stays exactly as wrong: the one's-complement sum is off by the same */
  uint32_t off_before = ref_sum(p, 20);
  tap_ok(ovl_ipv4_decrement_ttl(p) && ref_sum(p, 20) == off_before && ovl_ipv4_validate(p, 20) == OVL_IPV4_BAD_CHECKSUM,
         "a wrong checksum stays exactly as wrong (sum %#x before and after)", off_before);
}

static void test_may_respond(void) {
  uint8_t p[60];
  struct {
    const char *what;
    uint8_t proto;
    uint32_t src, dst;
    uint16_t frag;
    int icmp_type; /* -1: not ICMP or no override */
    size_t len;
    int want;
  } cases[] = {
      {"UDP unicast", 17, 0x0af40102, 0x0af40202, 0x4000, -1, 40, 1},
      {"ICMP echo request", 1, 0x0af40102, 0x0af40202, 0, 8, 40, 1},
      {"ICMP dest unreachable (an error)", 1, 0x0af40102, 0x0af40202, 0, 3, 40, 0},
      {"ICMP time exceeded (an error)", 1, 0x0af40102, 0x0af40202, 0, 11, 40, 0},
      {"ICMP redirect", 1, 0x0af40102, 0x0af40202, 0, 5, 40, 0},
      {"ICMP source quench", 1, 0x0af40102, 0x0af40202, 0, 4, 40, 0},
      {"ICMP parameter problem", 1, 0x0af40102, 0x0af40202, 0, 12, 40, 0},
      {"ICMP with 7 header bytes", 1, 0x0af40102, 0x0af40202, 0, 8, 27, 0},
      {"non-first fragment", 17, 0x0af40102, 0x0af40202, 0x0001, -1, 40, 0},
      {"first fragment (MF, offset 0)", 17, 0x0af40102, 0x0af40202, 0x2000, -1, 40, 1},
      {"source 0.0.0.0", 17, 0, 0x0af40202, 0, -1, 40, 0},
      {"source 0.1.2.3 (0/8 but not 0.0.0.0)", 17, 0x00010203, 0x0af40202, 0, -1, 40, 1},
      {"source loopback", 17, 0x7f000001, 0x0af40202, 0, -1, 40, 0},
      {"source multicast", 17, 0xe0000001, 0x0af40202, 0, -1, 40, 0},
      {"source class E", 17, 0xf0000001, 0x0af40202, 0, -1, 40, 0},
      {"source broadcast", 17, 0xffffffff, 0x0af40202, 0, -1, 40, 0},
      {"destination multicast", 17, 0x0af40102, 0xe0000005, 0, -1, 40, 0},
      {"destination broadcast", 17, 0x0af40102, 0xffffffff, 0, -1, 40, 0},
      {"19 bytes", 17, 0x0af40102, 0x0af40202, 0, -1, 19, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    make_pkt(p, 40, 5, cases[i].proto, 64, cases[i].src, cases[i].dst);
    wr16(p + 6, cases[i].frag);
    if (cases[i].icmp_type >= 0) p[20] = (uint8_t)cases[i].icmp_type;
    tap_ok(ovl_icmp_may_respond(p, cases[i].len) == (cases[i].want != 0), "may respond: %s -> %s", cases[i].what,
           cases[i].want ? "yes" : "no");
  }
  make_pkt(p, 40, 5, 17, 64, 1, 2);
  p[0] = 0x4f;
  tap_ok(!ovl_icmp_may_respond(p, 40), "IHL*4 > len: no");
  p[0] = 0x44;
  tap_ok(!ovl_icmp_may_respond(p, 40), "IHL 4: no");
}

/* Decodes an ICMP error and checks every field; returns 1 when all hold. */
static int check_icmp(const uint8_t *o, size_t n, uint8_t type, uint8_t code, uint32_t from, const uint8_t *off,
                      size_t off_len, uint16_t mtu, uint16_t id) {
  size_t hlen = (size_t)(off[0] & 0xf) * 4;
  size_t quote = hlen + 8 < off_len ? hlen + 8 : off_len;
  int ok = 1;
  ok &= n == 20 + 8 + quote;
  ok &= o[0] == 0x45 && o[1] == 0xc0 && rd16(o + 2) == n && rd16(o + 4) == id;
  ok &= rd16(o + 6) == 0 && o[8] == 64 && o[9] == 1;
  ok &= rd32(o + 12) == from && rd32(o + 16) == rd32(off + 12);
  ok &= ref_sum(o, 20) == 0xffff;             /* header checksum valid */
  ok &= ref_sum(o + 20, n - 20) == 0xffff;    /* ICMP checksum valid */
  ok &= o[20] == type && o[21] == code;
  ok &= rd16(o + 24) == 0 && rd16(o + 26) == mtu;
  ok &= memcmp(o + 28, off, quote) == 0;
  return ok;
}

static void test_icmp_build(void) {
  uint8_t p[200], o[OVL_ICMP_ERROR_MAX + 16];
  memset(o, 0xaa, sizeof(o));
  make_pkt(p, 100, 5, 17, 64, 0x0af40102, 0x0a4d0005);
  size_t n = ovl_icmp_error_build(o, 3, 0, 0x0af40100, p, 100, 0, 0x1234);
  tap_ok(check_icmp(o, n, 3, 0, 0x0af40100, p, 100, 0, 0x1234), "net unreachable: every field decodes (%zu bytes)", n);
  tap_ok(o[n] == 0xaa, "nothing written past the returned length");
  n = ovl_icmp_error_build(o, 11, 0, 0x0af40100, p, 100, 0, 7);
  tap_ok(check_icmp(o, n, 11, 0, 0x0af40100, p, 100, 0, 7), "time exceeded: every field decodes");
  n = ovl_icmp_error_build(o, 3, 4, 0x0af40100, p, 100, 1472, 8);
  tap_ok(check_icmp(o, n, 3, 4, 0x0af40100, p, 100, 1472, 8), "frag needed carries the next-hop MTU");
  n = ovl_icmp_error_build(o, 11, 0, 0x0af40100, p, 100, 1472, 8);
  tap_ok(check_icmp(o, n, 11, 0, 0x0af40100, p, 100, 0, 8), "next-hop MTU only for type 3 code 4");
  make_pkt(p, 60, 15, 17, 64, 0x0af40102, 0x0a4d0005);
  n = ovl_icmp_error_build(o, 3, 0, 1, p, 60, 0, 9);
  tap_ok(n == 20 + 8 + 60 && check_icmp(o, n, 3, 0, 1, p, 60, 0, 9), "IHL 15, no payload: quotes the 60-byte header only");
  make_pkt(p, 200, 15, 17, 64, 0x0af40102, 0x0a4d0005);
  n = ovl_icmp_error_build(o, 3, 0, 1, p, 200, 0, 9);
  tap_ok(n == OVL_ICMP_ERROR_MAX && check_icmp(o, n, 3, 0, 1, p, 200, 0, 9), "IHL 15: the largest error, %u bytes",
         OVL_ICMP_ERROR_MAX);
  make_pkt(p, 24, 5, 17, 64, 0x0af40102, 0x0a4d0005);
  n = ovl_icmp_error_build(o, 3, 0, 1, p, 24, 0, 9);
  tap_ok(n == 20 + 8 + 24 && check_icmp(o, n, 3, 0, 1, p, 24, 0, 9), "a 24-byte packet is quoted whole");
}

int main(void) {
  test_checksums();
  test_validate();
  test_ttl();
  test_may_respond();
  test_icmp_build();
  return tap_done();
}
