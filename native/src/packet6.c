/*
 * IPv6 validation with a bounded extension-header walk, the hop limit rule and the ICMPv6
 * error builder of the C core (RFC 8200, RFC 4443). Pure functions: no globals, no
 * allocation, any thread. Every byte read is checked against both the packet length and
 * the bytes present in the buffer first.
 */
#include "overlayd.h"
#include "internal.h"

#include <string.h>

#define NH_HOP_BY_HOP 0u
#define NH_ROUTING 43u
#define NH_FRAGMENT 44u
#define NH_AUTH 51u
#define NH_DEST_OPTS 60u
#define ICMP6_HEADER 8u

_Static_assert(OVL_ICMP6_ERROR_MAX > OVL_IPV6_HEADER + ICMP6_HEADER + OVL_IPV6_HEADER,
               "an ICMPv6 error quotes at least the offending IPv6 header");

enum ovl_ipv6_check ovl_ipv6_validate(const uint8_t *pkt, size_t len, size_t avail, struct ovl_ipv6_info *info) {
  if (avail > len) avail = len;
  if (len < OVL_IPV6_HEADER || avail < OVL_IPV6_HEADER) return OVL_IPV6_TOO_SHORT;
  if ((pkt[0] >> 4) != 6) return OVL_IPV6_BAD_VERSION;
  if (OVL_IPV6_HEADER + be16(pkt + 4) != len) return OVL_IPV6_BAD_LENGTH;
  uint32_t nh = pkt[6];
  size_t off = OVL_IPV6_HEADER;
  struct ovl_ipv6_info in = {0};
  for (uint32_t count = 0;; count++) {
    if (nh != NH_HOP_BY_HOP && nh != NH_ROUTING && nh != NH_FRAGMENT && nh != NH_AUTH && nh != NH_DEST_OPTS) break;
    if (count == OVL_IPV6_EXT_MAX) return OVL_IPV6_BAD_EXT;
    if (nh == NH_HOP_BY_HOP && count != 0) return OVL_IPV6_BAD_EXT;
    if (off + 8 > avail) return OVL_IPV6_BAD_EXT; /* every extension header is >= 8 bytes */
    const uint8_t *h = pkt + off;
    size_t hl = nh == NH_FRAGMENT ? 8 : nh == NH_AUTH ? ((size_t)h[1] + 2) * 4 : ((size_t)h[1] + 1) * 8;
    if (off + hl > avail) return OVL_IPV6_BAD_EXT;
    uint32_t next = h[0];
    off += hl;
    if (nh == NH_FRAGMENT) {
      in.fragment = true;
      if ((be16(h + 2) >> 3) != 0) {
        in.later_fragment = true;
        nh = next;
        break;
      }
    }
    nh = next;
  }
  in.proto = (uint8_t)nh;
  in.l4_off = (uint32_t)off;
  *info = in;
  return OVL_IPV6_OK;
}

bool ovl_ipv6_decrement_hop_limit(uint8_t *pkt) {
  if (pkt[7] <= 1) return false;
  pkt[7]--;
  return true;
}

uint32_t ovl_ipv6_pseudo_sum(const uint8_t *ip6, uint32_t proto, uint32_t l4len) {
  uint32_t s = ovl_ones_sum(ip6 + 8, 32, 0) + (l4len >> 16) + (l4len & 0xffffu) + proto;
  s = (s & 0xffffu) + (s >> 16);
  return (s & 0xffffu) + (s >> 16);
}

bool ovl_icmp6_may_respond(const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info, uint8_t type) {
  if (avail < OVL_IPV6_HEADER) return false;
  const uint8_t *src = ovl_ipv6_src(pkt), *dst = ovl_ipv6_dst(pkt);
  static const uint8_t zero[16], loopback[16] = {[15] = 1};
  if (memcmp(src, zero, 16) == 0 || memcmp(src, loopback, 16) == 0 || src[0] == 0xff) return false;
  if (dst[0] == 0xff && type != OVL_ICMP6_PACKET_TOO_BIG) return false;
  if (info->later_fragment) return false;
  if (info->proto == OVL_PROTO_ICMPV6) {
    if (info->l4_off + 1 > avail) return false;
    if (pkt[info->l4_off] < 128) return false; /* an error message */
  }
  return true;
}

size_t ovl_icmp6_error_build(uint8_t out[OVL_ICMP6_ERROR_MAX], uint8_t type, uint8_t code, const uint8_t from[16],
                             const uint8_t *off, size_t off_avail, uint32_t mtu) {
  size_t quote = off_avail;
  if (quote > OVL_ICMP6_ERROR_MAX - OVL_IPV6_HEADER - ICMP6_HEADER) quote = OVL_ICMP6_ERROR_MAX - OVL_IPV6_HEADER - ICMP6_HEADER;
  size_t l4 = ICMP6_HEADER + quote;
  memset(out, 0, OVL_IPV6_HEADER + ICMP6_HEADER);
  out[0] = 0x60;
  put16(out + 4, (uint32_t)l4);
  out[6] = OVL_PROTO_ICMPV6;
  out[7] = OVL_ICMP6_ERROR_HOP_LIMIT;
  memcpy(out + 8, from, 16);
  memcpy(out + 24, ovl_ipv6_src(off), 16);
  uint8_t *icmp = out + OVL_IPV6_HEADER;
  icmp[0] = type;
  icmp[1] = code;
  if (type == OVL_ICMP6_PACKET_TOO_BIG) put32(icmp + 4, mtu);
  memcpy(icmp + ICMP6_HEADER, off, quote);
  put16(icmp + 2, ~ovl_ones_sum(icmp, l4, ovl_ipv6_pseudo_sum(out, OVL_PROTO_ICMPV6, (uint32_t)l4)) & 0xffffu);
  return OVL_IPV6_HEADER + l4;
}
