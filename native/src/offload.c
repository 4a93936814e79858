/*
 * TUN offloads of the C core (userspace GSO and GRO for IPv4/TCP), the way wireguard-go
 * does it, with the wire format unchanged: every packet that leaves the node is one plain
 * IPv4 packet no larger than the TUN MTU.
 *
 *  - Reads with IFF_VNET_HDR + TUNSETOFFLOAD(CSUM|TSO4) give super-packets of up to 64 KB
 *    with a virtio_net_hdr; ovl_gso_segment cuts one into MSS-sized packets (IPv4 id +i,
 *    total length and header checksum per segment; TCP sequence numbers; FIN/PSH only on
 *    the last segment, CWR only on the first; every TCP checksum computed in full).
 *    ovl_vnet_csum_finish completes the partial checksum of a packet that is not GSO.
 *  - Writes: ovl_gro_* coalesce consecutive in-order TCP segments of one flow (same
 *    addresses, ports, ack, window, options, DF set, no IPv4 options, flags ACK[/PSH],
 *    every segment's TCP checksum verified in full first) into one super-packet written
 *    with gso_type TCPV4 and a partial checksum; the kernel (or the pod's stack) cuts or
 *    consumes it. Anything else is written plainly.
 * Pure functions over caller buffers: no allocation, no globals, any thread.
 */
#include "overlayd.h"
#include "internal.h"

#include <errno.h>
#include <string.h>

#define TCP_FIN 0x01u
#define TCP_SYN 0x02u
#define TCP_RST 0x04u
#define TCP_PSH 0x08u
#define TCP_ACK 0x10u
#define TCP_URG 0x20u
#define TCP_ECE 0x40u
#define TCP_CWR 0x80u

/* Every header ovl_gro_add can take (IHL 5, any TCP data offset) fits the saved copy. */
_Static_assert(sizeof(((struct ovl_gro *)0)->saved) >= OVL_IPV4_MIN_HEADER + OVL_TCP_MAX_HEADER,
               "struct ovl_gro saves a 20-byte IPv4 header and a TCP header of up to 60 bytes");
_Static_assert(OVL_TCP_MAX_HEADER == 15u * 4u, "TCP data offset is 4 bits of 32-bit words");
/* The engine's arena (engine.c VNET_NEED) reserves IPv4 max + TCP max header bytes per
 * segment: the IPv6 segments' headers (40 + TCP) must fit the same reserve. */
_Static_assert(OVL_IPV6_HEADER + OVL_TCP_MAX_HEADER <= OVL_IPV4_MAX_HEADER + OVL_TCP_MAX_HEADER,
               "an IPv6/TCP segment header fits the per-segment reserve of the IPv4 one");


/* Folded one's-complement sum of the IPv4 pseudo header (src, dst, proto, l4 length). */
static uint32_t pseudo_sum(const uint8_t *ip, uint32_t proto, uint32_t l4len) {
  uint32_t s = ovl_ones_sum(ip + 12, 8, 0) + proto + l4len;
  s = (s & 0xffffu) + (s >> 16);
  return (s & 0xffffu) + (s >> 16);
}

bool ovl_l4_checksum_ok(const uint8_t *pkt, size_t len) {
  size_t hl = ovl_ipv4_header_len(pkt);
  if (hl < 20 || hl > len) return false;
  uint32_t s = ovl_ones_sum(pkt + hl, len - hl, pseudo_sum(pkt, pkt[9], (uint32_t)(len - hl)));
  return s == 0xffffu;
}

int ovl_vnet_csum_finish(uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h) {
  if (!(h->flags & OVL_VNET_F_NEEDS_CSUM)) return 0;
  size_t start = h->csum_start, off = (size_t)h->csum_start + h->csum_offset;
  if (start >= len || off + 2 > len) return -EINVAL;
  /* the field holds the pseudo-header sum: the sum from csum_start on covers it */
  uint16_t c = ovl_inet_checksum(pkt + start, len - start);
  /* A computed 0 is stored as 0xffff, as Linux's skb_checksum_help does (CSUM_MANGLED_0):
   * for UDP 0 means "no checksum" (RFC 768); for TCP both encodings verify. */
  put16(pkt + off, c == 0 ? 0xffffu : c);
  return 0;
}

/* Checks an IPv4/TCP header chain; returns the header bytes (IP + TCP) or 0. */
static size_t tcp4_headers(const uint8_t *pkt, size_t len) {
  if (len < OVL_IPV4_MIN_HEADER + OVL_TCP_MIN_HEADER || (pkt[0] >> 4) != 4 || pkt[9] != OVL_PROTO_TCP) return 0;
  size_t ihl = ovl_ipv4_header_len(pkt);
  if (ihl < OVL_IPV4_MIN_HEADER || ihl + OVL_TCP_MIN_HEADER > len) return 0;
  size_t thl = (size_t)(pkt[ihl + 12] >> 4) * 4;
  if (thl < OVL_TCP_MIN_HEADER || ihl + thl > len) return 0;
  return ihl + thl;
}

/* Checks an IPv6/TCP header chain with TCP right after the fixed header (super-packets
 * with extension headers are refused: the kernel's own TSO6 path does not make them for a
 * TUN's TCP); returns the header bytes (40 + TCP) or 0. */
static size_t tcp6_headers(const uint8_t *pkt, size_t len) {
  if (len < OVL_IPV6_HEADER + OVL_TCP_MIN_HEADER || (pkt[0] >> 4) != 6 || pkt[6] != OVL_PROTO_TCP) return 0;
  size_t thl = (size_t)(pkt[OVL_IPV6_HEADER + 12] >> 4) * 4;
  if (thl < OVL_TCP_MIN_HEADER || OVL_IPV6_HEADER + thl > len) return 0;
  return OVL_IPV6_HEADER + thl;
}

/* ovl_gso_segment of an IPv6/TCP super-packet: payload length per segment, the TCP
 * fields as for IPv4, the TCP checksum with the IPv6 pseudo header. */
static int gso_segment6(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *out, size_t out_cap,
                        uint32_t *seg_lens, uint32_t max_segs) {
  size_t hdr = tcp6_headers(pkt, len);
  if (hdr == 0 || len > 65535 + OVL_IPV6_HEADER || h->gso_size == 0) return -EINVAL;
  size_t mss = h->gso_size, payload = len - hdr;
  size_t nseg = payload == 0 ? 1 : (payload + mss - 1) / mss;
  if (nseg > max_segs) return -E2BIG;
  if (payload + nseg * hdr > out_cap) return -ENOBUFS;
  const size_t th_off = OVL_IPV6_HEADER;
  uint32_t seq = ovl_be32(pkt + th_off + 4);
  uint8_t flags = pkt[th_off + 13];
  size_t o = 0;
  for (size_t i = 0; i < nseg; i++) {
    size_t plen = i + 1 < nseg ? mss : payload - i * mss;
    uint8_t *s = out + o;
    memcpy(s, pkt, hdr);
    memcpy(s + hdr, pkt + hdr + i * mss, plen);
    size_t slen = hdr + plen;
    put16(s + 4, (uint32_t)(slen - OVL_IPV6_HEADER));
    uint8_t *th = s + th_off;
    put32(th + 4, seq + (uint32_t)(i * mss));
    uint8_t f = flags;
    if (i + 1 < nseg) f &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (i > 0) f &= (uint8_t)~TCP_CWR;
    th[13] = f;
    put16(th + 16, 0);
    uint32_t l4 = (uint32_t)(slen - th_off);
    put16(th + 16, ~ovl_ones_sum(th, l4, ovl_ipv6_pseudo_sum(s, OVL_PROTO_TCP, l4)) & 0xffffu);
    seg_lens[i] = (uint32_t)slen;
    o += slen;
  }
  return (int)nseg;
}

int ovl_gso_segment(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *out, size_t out_cap,
                    uint32_t *seg_lens, uint32_t max_segs) {
  if ((h->gso_type & ~OVL_VNET_GSO_ECN) == OVL_VNET_GSO_TCPV6)
    return gso_segment6(pkt, len, h, out, out_cap, seg_lens, max_segs);
  if ((h->gso_type & ~OVL_VNET_GSO_ECN) != OVL_VNET_GSO_TCPV4) return -EPROTONOSUPPORT;
  size_t hdr = tcp4_headers(pkt, len);
  if (hdr == 0 || len > 65535 || h->gso_size == 0) return -EINVAL;
  size_t ihl = ovl_ipv4_header_len(pkt);
  size_t mss = h->gso_size, payload = len - hdr;
  size_t nseg = payload == 0 ? 1 : (payload + mss - 1) / mss;
  if (nseg > max_segs) return -E2BIG;
  if (payload + nseg * hdr > out_cap) return -ENOBUFS;
  uint32_t id = be16(pkt + 4), seq = ovl_be32(pkt + ihl + 4);
  uint8_t flags = pkt[ihl + 13];
  size_t o = 0;
  for (size_t i = 0; i < nseg; i++) {
    size_t plen = i + 1 < nseg ? mss : payload - i * mss;
    uint8_t *s = out + o;
    memcpy(s, pkt, hdr);
    memcpy(s + hdr, pkt + hdr + i * mss, plen);
    size_t slen = hdr + plen;
    put16(s + 2, (uint32_t)slen);
    put16(s + 4, (id + (uint32_t)i) & 0xffffu);
    put16(s + 10, 0);
    put16(s + 10, ovl_ipv4_header_checksum(s, ihl));
    uint8_t *th = s + ihl;
    put32(th + 4, seq + (uint32_t)(i * mss));
    uint8_t f = flags;
    if (i + 1 < nseg) f &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (i > 0) f &= (uint8_t)~TCP_CWR;
    th[13] = f;
    put16(th + 16, 0);
    uint32_t l4 = (uint32_t)(slen - ihl);
    put16(th + 16, ~ovl_ones_sum(th, l4, pseudo_sum(s, OVL_PROTO_TCP, l4)) & 0xffffu);
    seg_lens[i] = (uint32_t)slen;
    o += slen;
  }
  return (int)nseg;
}

/* ---------------------------------------------------------------- GRO ------------------ */

void ovl_gro_init(struct ovl_gro *g) {
  g->len = 0;
  g->nseg = 0;
  g->edited = false;
}

bool ovl_gro_eligible(const uint8_t *pkt, size_t len) {
  size_t hdr = tcp4_headers(pkt, len);
  if (hdr == 0 || hdr == len) return false;           /* not TCP, or no payload */
  if ((pkt[0] & 0x0f) != 5) return false;             /* IPv4 options: never coalesced */
  if ((be16(pkt + 6) & 0xbfffu) != 0) return false;   /* MF, fragment offset or reserved bit */
  if (!(pkt[6] & 0x40)) return false;                 /* DF clear: ids matter, keep them */
  uint8_t f = pkt[20 + 13];
  if (!(f & TCP_ACK) || (f & ~(TCP_ACK | TCP_PSH | TCP_ECE))) return false;
  if (be16(pkt + 2) != len) return false;
  return ovl_l4_checksum_ok(pkt, len);
}

static void gro_start(struct ovl_gro *g, uint8_t *pkt, size_t len) {
  size_t hdr = 20 + (size_t)(pkt[32] >> 4) * 4;
  g->len = (uint32_t)len;
  g->edited = false;
  g->hdr = (uint16_t)hdr;
  g->gso_size = (uint16_t)(len - hdr);
  g->next_seq = ovl_be32(pkt + 24) + (uint32_t)(len - hdr);
  g->nseg = 1;
  g->closed = (pkt[33] & TCP_PSH) != 0;
  g->segs[0] = pkt;
  g->seg_lens[0] = (uint32_t)len;
}

bool ovl_gro_add(struct ovl_gro *g, uint8_t *pkt, size_t len) {
  if (g->nseg == 0) {
    if ((pkt[0] & 0x0fu) != 5) return false; /* eligible packets only: headers fit saved[] */
    gro_start(g, pkt, len);
    return true;
  }
  const uint8_t *a = g->segs[0];
  size_t hdr = g->hdr, plen = len - hdr;
  if (g->closed || g->nseg >= OVL_GRO_SEGS_MAX || len <= hdr || plen > g->gso_size ||
      (size_t)g->len + plen > 65535u)
    return false;
  if ((size_t)(pkt[32] >> 4) * 4 + 20 != hdr) return false;
  /* IPv4: TOS, flags/fragment word, TTL, protocol, addresses */
  if (a[1] != pkt[1] || a[6] != pkt[6] || a[7] != pkt[7] || a[8] != pkt[8] || a[9] != pkt[9] ||
      memcmp(a + 12, pkt + 12, 8) != 0)
    return false;
  /* TCP: ports, ack, data offset + flags (PSH aside) + window, urgent pointer (meaningless
   * without URG, but cutting the super-packet must give back every byte), options */
  if (memcmp(a + 20, pkt + 20, 4) != 0 || memcmp(a + 28, pkt + 28, 4) != 0 || a[32] != pkt[32] ||
      (a[33] & ~TCP_PSH) != (pkt[33] & ~TCP_PSH) || memcmp(a + 34, pkt + 34, 2) != 0 || memcmp(a + 38, pkt + 38, 2) != 0 ||
      memcmp(a + 40, pkt + 40, hdr - 40) != 0)
    return false;
  if (ovl_be32(pkt + 24) != g->next_seq) return false;
  g->len += (uint32_t)plen;
  g->next_seq += (uint32_t)plen;
  g->segs[g->nseg] = pkt;
  g->seg_lens[g->nseg] = (uint32_t)len;
  g->nseg++;
  if (pkt[33] & TCP_PSH) g->closed = true;
  if (plen < g->gso_size) g->closed = true; /* a short segment ends the run */
  return true;
}

size_t ovl_gro_finish(struct ovl_gro *g, struct ovl_vnet_hdr *h, struct iovec *iov, uint32_t *iovcnt) {
  memset(h, 0, sizeof(*h));
  size_t len = g->len;
  iov[0] = (struct iovec){.iov_base = g->segs[0], .iov_len = g->seg_lens[0]};
  *iovcnt = 1;
  if (g->nseg <= 1) return len; /* the packet as it came, plain */
  for (uint32_t i = 1; i < g->nseg; i++)
    iov[i] = (struct iovec){.iov_base = g->segs[i] + g->hdr, .iov_len = g->seg_lens[i] - g->hdr};
  *iovcnt = g->nseg;
  uint8_t *p = g->segs[0];
  memcpy(g->saved, p, g->hdr);
  g->edited = true;
  if (g->segs[g->nseg - 1][33] & TCP_PSH) p[33] |= TCP_PSH;
  put16(p + 2, (uint32_t)len);
  put16(p + 10, 0);
  put16(p + 10, ovl_ipv4_header_checksum(p, 20));
  uint32_t l4 = (uint32_t)(len - 20);
  put16(p + 36, pseudo_sum(p, OVL_PROTO_TCP, l4)); /* partial: the kernel finishes it */
  h->flags = OVL_VNET_F_NEEDS_CSUM;
  h->gso_type = OVL_VNET_GSO_TCPV4;
  h->hdr_len = g->hdr;
  h->gso_size = g->gso_size;
  h->csum_start = 20;
  h->csum_offset = 16;
  return len;
}

void ovl_gro_restore(struct ovl_gro *g) {
  if (g->edited) memcpy(g->segs[0], g->saved, g->hdr);
  g->edited = false;
}
