/* Packet helpers of the C tests, written independently of packet.c (they are its reference):
 * big-endian access, a plain 64-bit one's-complement sum, full header checksums, a PRNG
 * and a builder of valid IPv4 packets. */
#ifndef OVL_TEST_PKT_H
#define OVL_TEST_PKT_H

#include <stdint.h>
#include <string.h>

#define TP_FN static __attribute__((unused))

TP_FN uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
TP_FN uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) << 16 | rd16(p + 2); }
TP_FN void wr16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
TP_FN void wr32(uint8_t *p, uint32_t v) {
  wr16(p, v >> 16);
  wr16(p + 2, v);
}

/* Folded one's-complement sum of len bytes (odd tail padded with a zero low byte). */
TP_FN uint32_t ref_sum(const uint8_t *b, size_t len) {
  uint64_t s = 0;
  for (size_t i = 0; i < len; i++) s += (i & 1) ? b[i] : (uint64_t)b[i] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint32_t)s;
}

/* Full recomputation of a header checksum: checksum field taken as 0, sum, complement. */
TP_FN uint16_t ref_header_checksum(const uint8_t *h, size_t hlen) {
  uint8_t tmp[60];
  memcpy(tmp, h, hlen);
  tmp[10] = tmp[11] = 0;
  return (uint16_t)(~ref_sum(tmp, hlen) & 0xffff);
}

static uint64_t tp_rng_state = 0x9e3779b97f4a7c15ull;
TP_FN uint32_t rnd(void) { /* xorshift64* */
  tp_rng_state ^= tp_rng_state >> 12;
  tp_rng_state ^= tp_rng_state << 25;
  tp_rng_state ^= tp_rng_state >> 27;
  return (uint32_t)((tp_rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* A valid IPv4 packet of len bytes at p: IHL ihl, DF, given proto/ttl/src/dst, random
 * other bytes (payload too), correct header checksum. */
TP_FN void make_pkt(uint8_t *p, size_t len, unsigned ihl, uint8_t proto, uint8_t ttl, uint32_t src, uint32_t dst) {
  for (size_t i = 0; i < len; i++) p[i] = (uint8_t)rnd();
  p[0] = (uint8_t)(0x40 | ihl);
  wr16(p + 2, (uint32_t)len);
  wr16(p + 6, 0x4000); /* DF, offset 0 */
  p[8] = ttl;
  p[9] = proto;
  wr32(p + 12, src);
  wr32(p + 16, dst);
  wr16(p + 10, ref_header_checksum(p, ihl * 4u));
}

/* The pseudo header of the L4 part of s (IP header iphl bytes; len bytes in all) for proto,
 * built byte by byte into ps (RFC 768 / RFC 8200 8.1): its length, 12 (IPv4) or 40 (IPv6). */
TP_FN size_t tp_pseudo_header(uint8_t ps[40], const uint8_t *s, size_t len, size_t iphl, int v6, uint8_t proto) {
  size_t l4 = len - iphl;
  if (v6) {
    memcpy(ps, s + 8, 32);
    wr32(ps + 32, (uint32_t)l4);
    ps[36] = ps[37] = ps[38] = 0;
    ps[39] = proto;
    return 40;
  }
  memcpy(ps, s + 12, 8);
  ps[8] = 0;
  ps[9] = proto;
  wr16(ps + 10, (uint32_t)l4);
  return 12;
}

/* The expected forwarded form of p: TTL - 1, checksum fully recomputed. */
TP_FN void expect_forwarded(uint8_t *p) {
  p[8] = (uint8_t)(p[8] - 1);
  wr16(p + 10, ref_header_checksum(p, (size_t)(p[0] & 0xf) * 4));
}

/* TCP/UDP checksums of an IPv4 packet (IHL from its header) or an IPv6 one (TCP/UDP right
 * after the fixed header): the header length, the checksum field's offset in the L4
 * header, the pseudo-header sum built byte by byte, full verification, and the field set
 * full (0 stored as 0xffff) or partial (the pseudo-header sum, as a TSO/partial sender
 * leaves it). */
TP_FN size_t tp_iphl(const uint8_t *s) { return (s[0] >> 4) == 6 ? 40u : (size_t)(s[0] & 15) * 4u; }
TP_FN size_t tp_csum_off(uint8_t proto) { return proto == 6 ? 16u : 6u; } /* TCP (6) or UDP */
TP_FN uint8_t tp_proto(const uint8_t *s) { return (s[0] >> 4) == 6 ? s[6] : s[9]; }

/* The folded sum of the pseudo header of s (len bytes), built byte by byte. */
TP_FN uint32_t tp_pseudo(const uint8_t *s, size_t len) {
  uint8_t ph[40];
  size_t iphl = tp_iphl(s), l4 = len - iphl;
  if ((s[0] >> 4) == 6) {
    memcpy(ph, s + 8, 32);
    wr32(ph + 32, (uint32_t)l4);
    ph[36] = ph[37] = ph[38] = 0;
    ph[39] = s[6];
    return ref_sum(ph, 40);
  }
  memcpy(ph, s + 12, 8);
  ph[8] = 0;
  ph[9] = s[9];
  wr16(ph + 10, (uint32_t)l4);
  return ref_sum(ph, 12);
}

/* The full TCP/UDP checksum of s verifies (pseudo header + L4 bytes sum to 0xffff). */
TP_FN int tp_l4_ok(const uint8_t *s, size_t len) {
  size_t iphl = tp_iphl(s);
  uint64_t x = (uint64_t)tp_pseudo(s, len) + ref_sum(s + iphl, len - iphl);
  while (x >> 16) x = (x & 0xffff) + (x >> 16);
  return x == 0xffff;
}

/* Writes the full checksum of s (field 0 summed, complemented; 0 stored as 0xffff). */
TP_FN void tp_set_full(uint8_t *s, size_t len) {
  size_t iphl = tp_iphl(s), off = iphl + tp_csum_off(tp_proto(s));
  wr16(s + off, 0);
  uint64_t x = (uint64_t)tp_pseudo(s, len) + ref_sum(s + iphl, len - iphl);
  while (x >> 16) x = (x & 0xffff) + (x >> 16);
  uint32_t c = ~x & 0xffff;
  wr16(s + off, c == 0 ? 0xffff : c);
}

TP_FN void tp_set_partial(uint8_t *s, size_t len) { wr16(s + tp_iphl(s) + tp_csum_off(tp_proto(s)), tp_pseudo(s, len)); }

#ifdef OVERLAYD_H
#include <errno.h>
#include <time.h>
/* Waits (at most wait_ms, polling every millisecond) until every route table retired from
 * r is freed: no forwarding thread reads an old one any more. 1 when it happened. */
TP_FN int tp_routes_settled(struct ovl_routes *r, unsigned wait_ms) {
  for (unsigned waited = 0;; waited++) {
    if (ovl_routes_reclaim(r) == 0) return 1;
    if (waited >= wait_ms) return 0;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}
/* The zero-copy cut (ovl_gso_cut) of the super-packet pkt gives exactly the n segments the
 * copying cut wrote back to back into out (lengths lens[]): each header stub followed by
 * its payload slice equals the copied segment byte for byte (checksums included), every
 * slice lies inside pkt's payload, and pkt is not written. 1 when all holds. */
TP_FN int tp_cut_matches(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, const uint8_t *out,
                         const uint32_t *lens, int n) {
  static uint8_t before[70000], stubs[OVL_GSO_SEGS_MAX * 120];
  static struct ovl_gso_seg segs[OVL_GSO_SEGS_MAX];
  if (len > sizeof(before)) return 0;
  memcpy(before, pkt, len);
  int m = ovl_gso_cut(pkt, len, h, stubs, sizeof(stubs), segs, OVL_GSO_SEGS_MAX, 0);
  if (m != n || memcmp(before, pkt, len) != 0) return 0;
  size_t o = 0;
  for (int i = 0; i < n; i++) {
    const struct ovl_gso_seg *s = &segs[i];
    if (s->hdr_len + s->payload_len != lens[i] || memcmp(s->hdr, out + o, s->hdr_len) != 0 ||
        memcmp(s->payload, out + o + s->hdr_len, s->payload_len) != 0)
      return 0;
    if (s->payload < pkt + s->hdr_len || s->payload + s->payload_len > pkt + len) return 0;
    if (s->hdr < stubs || s->hdr + s->hdr_len > stubs + sizeof(stubs)) return 0;
    o += lens[i];
  }
  /* stubs too small: the error of the copying cut's output too small */
  return ovl_gso_cut(pkt, len, h, stubs, (size_t)n * segs[0].hdr_len - 1, segs, OVL_GSO_SEGS_MAX, 0) == -ENOBUFS;
}
#endif

#endif
