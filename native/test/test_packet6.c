/* packet6.c against independent references: validation codes and the extension-header
 * walk (every truncation of a chain, Hop-by-hop not first, the walk bound, first and
 * non-first fragments, bytes beyond `avail` never needed), the hop limit rule, RFC 4443's
 * may-respond rule case by case, and ICMPv6 errors decoded field by field with the
 * checksum recomputed here over a hand-built pseudo header. */
#include "overlayd.h"

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "testpkt.h"

static const uint8_t SRC[16] = {0xfd, 0, 0, 0x10, 0, 0, 0, 1, [15] = 5};
static const uint8_t DST[16] = {0xfd, 0, 0, 0x10, 0, 0, 0, 2, [15] = 7};

/* An IPv6 packet: header, then the extension headers exts[] (next-header values, each 8
 * bytes, a Fragment header with offset frag_off), then proto with payload bytes. */
static size_t make6(uint8_t *p, const uint8_t *exts, size_t next, uint8_t proto, size_t payload, unsigned frag_off) {
  memset(p, 0, 40);
  p[0] = 0x60;
  p[7] = 64;
  memcpy(p + 8, SRC, 16);
  memcpy(p + 24, DST, 16);
  size_t off = 40;
  p[6] = next ? exts[0] : proto;
  for (size_t i = 0; i < next; i++) {
    uint8_t *h = p + off;
    memset(h, 0, 8);
    h[0] = i + 1 < next ? exts[i + 1] : proto;
    if (exts[i] == 44) wr16(h + 2, frag_off << 3 | 1);
    off += 8;
  }
  for (size_t i = 0; i < payload; i++) p[off + i] = (uint8_t)rnd();
  off += payload;
  wr16(p + 4, (uint32_t)(off - 40));
  return off;
}

static void test_validate(void) {
  uint8_t p[2000];
  struct ovl_ipv6_info in;
  size_t n = make6(p, NULL, 0, 17, 100, 0);
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_OK && in.proto == 17 && in.l4_off == 40 && !in.fragment, "plain UDP: OK");
  tap_ok(ovl_ipv6_validate(p, 39, 39, &in) == OVL_IPV6_TOO_SHORT, "39 bytes: too short");
  tap_ok(ovl_ipv6_validate(p, n + 1, n + 1, &in) == OVL_IPV6_BAD_LENGTH && ovl_ipv6_validate(p, n - 1, n - 1, &in) == OVL_IPV6_BAD_LENGTH,
         "length != 40 + payload length: bad length");
  p[0] = 0x45;
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_BAD_VERSION, "version 4: bad version");
  uint8_t chain[] = {0, 43, 60, 44};
  n = make6(p, chain, 4, 6, 20, 0);
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_OK && in.proto == 6 && in.l4_off == 72 && in.fragment && !in.later_fragment,
         "HBH, Routing, DestOpts, first Fragment, TCP: walked to offset 72");
  int ok = 1;
  for (size_t avail = 40; avail < 72; avail++) ok &= ovl_ipv6_validate(p, n, avail, &in) == OVL_IPV6_BAD_EXT;
  tap_ok(ok, "the chain cut anywhere by `avail` (the buffer) is BAD_EXT, never read beyond");
  ok = 1;
  for (size_t len = 40; len < 72; len++) {
    wr16(p + 4, (uint32_t)(len - 40));
    ok &= ovl_ipv6_validate(p, len, sizeof(p), &in) == OVL_IPV6_BAD_EXT;
  }
  tap_ok(ok, "the chain truncated by the payload length anywhere: BAD_EXT");
  n = make6(p, chain, 4, 6, 20, 0);
  p[40 + 1] = 200; /* HBH claims 1608 bytes */
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_BAD_EXT, "an extension length beyond the packet: BAD_EXT");
  uint8_t late[] = {43, 0};
  n = make6(p, late, 2, 17, 8, 0);
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_BAD_EXT, "Hop-by-hop not first: BAD_EXT");
  uint8_t many[9] = {60, 60, 60, 60, 60, 60, 60, 60, 60};
  n = make6(p, many, 8, 17, 8, 0);
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_OK, "8 extension headers: OK");
  n = make6(p, many, 9, 17, 8, 0);
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_BAD_EXT, "9 extension headers: BAD_EXT (bounded walk)");
  uint8_t frag[] = {44};
  n = make6(p, frag, 1, 6, 100, 3);
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_OK && in.later_fragment && in.proto == 6 && in.l4_off == 48,
         "a non-first fragment: OK, later_fragment, walk stops after the Fragment header");
  n = make6(p, NULL, 0, 99, 0, 0);
  tap_ok(ovl_ipv6_validate(p, n, n, &in) == OVL_IPV6_OK && in.proto == 99 && n == 40, "unknown next header, no payload: OK (upper layer)");
}

static void test_hop_limit(void) {
  uint8_t p[100];
  size_t n = make6(p, NULL, 0, 17, 10, 0);
  (void)n;
  p[7] = 2;
  tap_ok(ovl_ipv6_decrement_hop_limit(p) && p[7] == 1, "hop limit 2 -> 1");
  tap_ok(!ovl_ipv6_decrement_hop_limit(p) && p[7] == 1, "hop limit 1: drop, untouched");
  p[7] = 0;
  tap_ok(!ovl_ipv6_decrement_hop_limit(p) && p[7] == 0, "hop limit 0: drop, untouched");
}

static int may(uint8_t *p, size_t n, uint8_t type) {
  struct ovl_ipv6_info in;
  if (ovl_ipv6_validate(p, n, n, &in) != OVL_IPV6_OK) return -1;
  return ovl_icmp6_may_respond(p, n, &in, type);
}

static void test_may_respond(void) {
  uint8_t p[200];
  size_t n = make6(p, NULL, 0, 17, 20, 0);
  tap_ok(may(p, n, 1) == 1, "UDP to a unicast destination: yes");
  n = make6(p, NULL, 0, 58, 8, 0);
  p[40] = 128;
  tap_ok(may(p, n, 1) == 1, "ICMPv6 echo request: yes");
  p[40] = 1;
  tap_ok(may(p, n, 3) == 0, "ICMPv6 destination unreachable (an error): no");
  p[40] = 127;
  tap_ok(may(p, n, 3) == 0, "ICMPv6 type 127 (error range): no");
  uint8_t frag[] = {44};
  n = make6(p, frag, 1, 58, 8, 0);
  p[48] = 1;
  tap_ok(may(p, n, 1) == 0, "an ICMPv6 error behind a first Fragment header: no");
  n = make6(p, frag, 1, 17, 8, 5);
  tap_ok(may(p, n, 1) == 0, "a non-first fragment: no");
  n = make6(p, NULL, 0, 17, 8, 0);
  memset(p + 8, 0, 16);
  tap_ok(may(p, n, 1) == 0, "unspecified source: no");
  p[8] = 0xff;
  tap_ok(may(p, n, 1) == 0, "multicast source: no");
  memset(p + 8, 0, 16);
  p[23] = 1;
  tap_ok(may(p, n, 1) == 0, "loopback source: no");
  n = make6(p, NULL, 0, 17, 8, 0);
  p[24] = 0xff;
  tap_ok(may(p, n, 1) == 0 && may(p, n, 2) == 1, "multicast destination: only packet too big");
}

static void test_build(void) {
  uint8_t p[1500], out[OVL_ICMP6_ERROR_MAX];
  const uint8_t from[16] = {0xfd, 0, 0, 0x10, 0, 0, 0, 9};
  for (int round = 0; round < 2; round++) {
    size_t n = make6(p, NULL, 0, 17, round ? 1400 : 60, 0);
    size_t m = ovl_icmp6_error_build(out, 2, 0, from, p, n, 1400);
    size_t want = round ? 1280 : 48 + n;
    int ok = m == want && out[0] == 0x60 && out[1] == 0 && rd16(out + 4) == m - 40 && out[6] == 58 && out[7] == 64 &&
             memcmp(out + 8, from, 16) == 0 && memcmp(out + 24, SRC, 16) == 0 && out[40] == 2 && out[41] == 0 &&
             rd32(out + 44) == 1400 && memcmp(out + 48, p, m - 48) == 0;
    /* checksum: the pseudo header built byte by byte, then the reference sum */
    uint8_t ps[40 + 1280];
    memcpy(ps, out + 8, 32);
    wr32(ps + 32, (uint32_t)(m - 40));
    ps[36] = ps[37] = ps[38] = 0;
    ps[39] = 58;
    memcpy(ps + 40, out + 40, m - 40);
    ok &= ref_sum(ps, 40 + m - 40) == 0xffff;
    tap_ok(ok, "packet too big (%s offending packet): fields, %zu bytes, quote, checksum over the pseudo header",
           round ? "a 1440-byte" : "a 100-byte", m);
  }
  size_t n = make6(p, NULL, 0, 6, 100, 0);
  size_t m = ovl_icmp6_error_build(out, 3, 0, from, p, n, 1400);
  tap_ok(m == 48 + n && out[40] == 3 && rd32(out + 44) == 0, "time exceeded: bytes 4-7 zero (no MTU)");
}

int main(void) {
  test_validate();
  test_hop_limit();
  test_may_respond();
  test_build();
  return tap_done();
}
