/*
 * IPv4 validation, checksums, the TTL rule and the ICMP error builder of the C core: the
 * twin of src/net/ipv4.ts and src/net/icmp.ts. The rules are the same, line for line;
 * change both or neither. Pure functions: no globals, no allocation, any thread.
 */
#include "overlayd.h"
#include "internal.h"

#include <string.h>

#define OFF_CHECKSUM 10u
#define OFF_TTL 8u
#define OFF_PROTO 9u
#define FRAG_OFFSET_MASK 0x1fffu


static inline uint32_t fold(uint32_t sum) {
  sum = (sum & 0xffffu) + (sum >> 16);
  return (sum & 0xffffu) + (sum >> 16);
}

/* x + v in one's-complement arithmetic on 64-bit words: the carry out of bit 63 is added
 * back at bit 0 (it cannot carry again: the wrapped sum is below v). */
static inline uint64_t add_end_around(uint64_t x, uint64_t v) {
  x += v;
  return x + (x < v);
}

uint32_t ovl_ones_sum(const uint8_t *buf, size_t len, uint32_t initial) {
  /* RFC 1071 2(B),(C): the one's-complement sum does not depend on byte order, and may be
   * taken over wider words with the carries added back (end-around carry). So 8-byte words
   * are summed as the machine loads them, 64 bytes per turn into four independent
   * accumulators (no carry chain between them), folded to 16 bits, and byte-swapped once on
   * a little-endian machine. */
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 64 <= len; i += 64) {
    uint64_t w[8];
    memcpy(w, buf + i, sizeof(w));
    a = add_end_around(a, w[0]);
    b = add_end_around(b, w[1]);
    c = add_end_around(c, w[2]);
    d = add_end_around(d, w[3]);
    a = add_end_around(a, w[4]);
    b = add_end_around(b, w[5]);
    c = add_end_around(c, w[6]);
    d = add_end_around(d, w[7]);
  }
  for (; i + 8 <= len; i += 8) {
    uint64_t v;
    memcpy(&v, buf + i, 8);
    a = add_end_around(a, v);
  }
  a = add_end_around(add_end_around(a, b), add_end_around(c, d));
  uint64_t s = (a & 0xffffffffu) + (a >> 32); /* < 2^33: room for the tail below */
  for (; i + 2 <= len; i += 2) {
    uint16_t v;
    memcpy(&v, buf + i, 2);
    s += v;
  }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (i < len) s += buf[i]; /* the high byte of a big-endian word: the low byte as loaded */
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  s = ((s & 0xffu) << 8) | (s >> 8); /* back to big-endian order */
#else
  if (i < len) s += (uint32_t)buf[i] << 8;
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
#endif
  return fold((uint32_t)s + initial);
}

uint16_t ovl_inet_checksum(const uint8_t *buf, size_t len) {
  return (uint16_t)(~ovl_ones_sum(buf, len, 0) & 0xffffu);
}

uint16_t ovl_ipv4_header_checksum(const uint8_t *pkt, size_t hlen) {
  if (hlen == OVL_IPV4_MIN_HEADER) { /* the common header, once per segment cut: 9 words inline */
    uint32_t s = be16(pkt) + be16(pkt + 2) + be16(pkt + 4) + be16(pkt + 6) + be16(pkt + 8) + be16(pkt + 12) +
                 be16(pkt + 14) + be16(pkt + 16) + be16(pkt + 18); /* < 2^20 */
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return (uint16_t)(~s & 0xffffu);
  }
  uint32_t before = ovl_ones_sum(pkt, OFF_CHECKSUM, 0);
  return (uint16_t)(~ovl_ones_sum(pkt + OFF_CHECKSUM + 2, hlen - (OFF_CHECKSUM + 2), before) & 0xffffu);
}

enum ovl_ipv4_check ovl_ipv4_validate(const uint8_t *pkt, size_t len) {
  if (len < OVL_IPV4_MIN_HEADER) return OVL_IPV4_TOO_SHORT;
  if ((pkt[0] >> 4) != 4) return OVL_IPV4_BAD_VERSION;
  size_t hlen = ovl_ipv4_header_len(pkt);
  if (hlen < OVL_IPV4_MIN_HEADER || hlen > len) return OVL_IPV4_BAD_IHL;
  if (be16(pkt + 2) != len) return OVL_IPV4_BAD_LENGTH;
  if (ovl_ones_sum(pkt, hlen, 0) != 0xffffu) return OVL_IPV4_BAD_CHECKSUM;
  return OVL_IPV4_OK;
}

bool ovl_ipv4_decrement_ttl(uint8_t *pkt) {
  uint32_t ttl = pkt[OFF_TTL];
  if (ttl <= 1) return false;
  uint32_t proto = pkt[OFF_PROTO];
  uint32_t m = (ttl << 8) | proto;
  uint32_t m2 = ((ttl - 1) << 8) | proto;
  uint32_t hc = be16(pkt + OFF_CHECKSUM);
  uint32_t sum = fold((~hc & 0xffffu) + (~m & 0xffffu) + m2);
  pkt[OFF_TTL] = (uint8_t)(ttl - 1);
  put16(pkt + OFF_CHECKSUM, ~sum & 0xffffu);
  return true;
}

/* RFC 1812 4.3.2.7 sources we never answer: 0.0.0.0, loopback 127/8, multicast 224/4 and
 * class E 240/4 (which holds 255.255.255.255). 0.0.0.0/8 is not in the list, only 0.0.0.0. */
static bool unanswerable_source(uint32_t src) {
  uint32_t top = src >> 24;
  return src == 0 || top == 127 || top >= 224;
}

static bool multicast_or_broadcast(uint32_t dst) { return (dst >> 28) == 0xeu || dst == 0xffffffffu; }

static bool is_icmp_error_type(uint32_t type) {
  return type == OVL_ICMP_DEST_UNREACH || type == 4 /* source quench */ || type == 5 /* redirect */ ||
         type == OVL_ICMP_TIME_EXCEEDED || type == 12 /* parameter problem */;
}

bool ovl_icmp_may_respond(const uint8_t *pkt, size_t len) {
  if (len < OVL_IPV4_MIN_HEADER) return false;
  size_t hlen = ovl_ipv4_header_len(pkt);
  if (hlen < OVL_IPV4_MIN_HEADER || hlen > len) return false;
  if ((be16(pkt + 6) & FRAG_OFFSET_MASK) != 0) return false;
  if (unanswerable_source(ovl_ipv4_src(pkt))) return false;
  if (multicast_or_broadcast(ovl_ipv4_dst(pkt))) return false;
  if (pkt[OFF_PROTO] == OVL_PROTO_ICMP) {
    if (len - hlen < OVL_ICMP_HEADER_LEN) return false;
    if (is_icmp_error_type(pkt[hlen])) return false;
  }
  return true;
}

size_t ovl_icmp_error_build(uint8_t out[OVL_ICMP_ERROR_MAX], uint8_t type, uint8_t code, uint32_t from,
                            const uint8_t *off, size_t off_len, uint16_t next_hop_mtu, uint16_t id) {
  size_t hlen = off_len >= OVL_IPV4_MIN_HEADER ? ovl_ipv4_header_len(off) : off_len;
  size_t quote = hlen + OVL_ICMP_QUOTE_PAYLOAD;
  if (quote > off_len) quote = off_len;
  size_t icmp_len = OVL_ICMP_HEADER_LEN + quote;
  size_t total = OVL_IPV4_MIN_HEADER + icmp_len; /* <= OVL_ICMP_ERROR_MAX: hlen <= 60 */

  memset(out, 0, OVL_IPV4_MIN_HEADER + OVL_ICMP_HEADER_LEN);
  out[0] = 0x45;
  out[1] = OVL_ICMP_ERROR_TOS;
  put16(out + 2, (uint32_t)total);
  put16(out + 4, id);
  out[OFF_TTL] = OVL_ICMP_ERROR_TTL;
  out[OFF_PROTO] = OVL_PROTO_ICMP;
  put32(out + 12, from);
  put32(out + 16, off_len >= OVL_IPV4_MIN_HEADER ? ovl_ipv4_src(off) : 0);
  put16(out + OFF_CHECKSUM, ovl_ipv4_header_checksum(out, OVL_IPV4_MIN_HEADER));

  uint8_t *icmp = out + OVL_IPV4_MIN_HEADER;
  icmp[0] = type;
  icmp[1] = code;
  if (type == OVL_ICMP_DEST_UNREACH && code == OVL_ICMP_FRAG_NEEDED) put16(icmp + 6, next_hop_mtu);
  if (quote) memcpy(icmp + OVL_ICMP_HEADER_LEN, off, quote);
  put16(icmp + 2, ovl_inet_checksum(icmp, icmp_len));
  return total;
}
