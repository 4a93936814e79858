/*
 * USO: cutting UDP super-packets read from the TUN (virtio gso_type UDP_L4, the TUN opened
 * with TUNSETOFFLOAD(... | TUN_F_USO4 | TUN_F_USO6)) into plain UDP datagrams of gso_size
 * payload each, the way the kernel's __udp_gso_segment does: IPv4 total length, id + i and
 * header checksum, or IPv6 payload length; each UDP header's length and its checksum
 * computed in full with the pseudo header (a computed 0 stored as 0xffff, RFC 768).
 * Pure function over caller buffers: no allocation, no globals, any thread.
 */
#include "overlayd.h"
#include "internal.h"

#include <errno.h>
#include <string.h>

/* IPv4 header (RFC 791): byte offsets */
#define IP4_TOTLEN 2u
#define IP4_ID 4u
#define IP4_FRAG 6u
#define IP4_PROTO 9u
#define IP4_CSUM 10u
#define IP4_ADDRS 12u /* source then destination */
#define IP4_ADDRS_LEN 8u
#define IP4_MF_OFFSET 0x3fffu /* in the IP4_FRAG word: MF and the fragment offset */
/* IPv6 header (RFC 8200): byte offsets */
#define IP6_PLEN 4u
#define IP6_NEXT 6u
/* UDP header (RFC 768): byte offsets */
#define UDP_LEN 4u
#define UDP_CSUM 6u
#define UDP_HEADER 8u
/* The largest IPv4 packet; an IPv6 packet's payload length is 16 bits as well. */
#define IP_LEN_MAX 65535u

/* The engine reserves OVL_IPV4_MAX_HEADER + OVL_TCP_MAX_HEADER stub bytes per segment
 * (engine_int.h STUB_HDR_MAX): a UDP segment's headers (IPv4 with options or IPv6, + 8) fit. */
_Static_assert(OVL_IPV4_MAX_HEADER + UDP_HEADER <= OVL_IPV4_MAX_HEADER + OVL_TCP_MAX_HEADER &&
                   OVL_IPV6_HEADER + UDP_HEADER <= OVL_IPV4_MAX_HEADER + OVL_TCP_MAX_HEADER,
               "a UDP segment's headers fit the per-segment header reserve");
/* A segment count fits the int returned. */
_Static_assert(OVL_GSO_SEGS_MAX <= IP_LEN_MAX, "segment counts are small");

/* Checks the super-packet's IP + UDP headers against len and the vnet header; returns the
 * IP header length (the UDP header's offset), or 0 when malformed. */
static size_t uso_headers(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h) {
  size_t iphl;
  if (len < 1) return 0;
  if ((pkt[0] >> 4) == 4) {
    if (len < OVL_IPV4_MIN_HEADER || pkt[IP4_PROTO] != OVL_PROTO_UDP) return 0;
    iphl = ovl_ipv4_header_len(pkt);
    if (iphl < OVL_IPV4_MIN_HEADER || len > IP_LEN_MAX || be16(pkt + IP4_TOTLEN) != len) return 0;
    if (be16(pkt + IP4_FRAG) & IP4_MF_OFFSET) return 0; /* a fragment is no datagram to cut */
  } else if ((pkt[0] >> 4) == 6) {
    /* UDP right after the fixed header (the kernel's UDP sockets make no extension
     * headers on a USO super-packet of their own) */
    if (len < OVL_IPV6_HEADER || pkt[IP6_NEXT] != OVL_PROTO_UDP) return 0;
    iphl = OVL_IPV6_HEADER;
    if (len > IP_LEN_MAX + OVL_IPV6_HEADER || be16(pkt + IP6_PLEN) != len - OVL_IPV6_HEADER) return 0;
  } else {
    return 0;
  }
  if (iphl + UDP_HEADER > len || be16(pkt + iphl + UDP_LEN) != len - iphl) return 0;
  /* the virtio header must describe this packet: the partial checksum is the UDP one, and
   * the linear-part hint hdr_len is within the packet */
  if ((h->flags & OVL_VNET_F_NEEDS_CSUM) && (h->csum_start != iphl || h->csum_offset != UDP_CSUM)) return 0;
  if (h->hdr_len > len) return 0;
  return iphl;
}

/* What one cut needs: the checked super-packet's geometry. */
struct uso_plan {
  size_t iphl, hdr, mss, payload, nseg;
  bool v6;
  bool partial; /* leave each datagram's UDP checksum partial (OVL_CUT_PARTIAL_CSUM) */
  uint32_t id; /* the IPv4 id of the super-packet (segment i gets id + i) */
};

/* Checks the super-packet and plans its cut; 0 or the negative errno of ovl_uso_segment. */
static int uso_plan(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint32_t max_segs,
                    struct uso_plan *c) {
  if ((h->gso_type & ~OVL_VNET_GSO_ECN) != OVL_VNET_GSO_UDP_L4) return -EPROTONOSUPPORT;
  if (h->gso_type & OVL_VNET_GSO_ECN) return -EINVAL; /* ECN is TCP's (CWR) only */
  c->iphl = uso_headers(pkt, len, h);
  if (c->iphl == 0 || h->gso_size == 0) return -EINVAL;
  c->v6 = (pkt[0] >> 4) == 6;
  c->hdr = c->iphl + UDP_HEADER;
  c->mss = h->gso_size;
  c->payload = len - c->hdr;
  c->nseg = c->payload == 0 ? 1 : (c->payload + c->mss - 1) / c->mss;
  c->id = c->v6 ? 0 : be16(pkt + IP4_ID);
  if (c->nseg > max_segs) return -E2BIG;
  return 0;
}

/* Payload bytes of segment i. */
static size_t uso_plen(const struct uso_plan *c, size_t i) {
  return i + 1 < c->nseg ? c->mss : c->payload - i * c->mss;
}

/* Writes segment i's headers into s (c->hdr bytes, copied from pkt and fixed up) with the
 * UDP checksum summed over them and its payload (plen bytes at payload, read in place). */
static void uso_header(const uint8_t *pkt, const struct uso_plan *c, size_t i, uint8_t *s, const uint8_t *payload,
                       size_t plen) {
  memcpy(s, pkt, c->hdr);
  uint8_t *uh = s + c->iphl;
  const size_t slen = c->hdr + plen;
  const uint32_t l4 = (uint32_t)(slen - c->iphl);
  uint32_t ps;
  if (c->v6) {
    put16(s + IP6_PLEN, (uint32_t)(slen - OVL_IPV6_HEADER));
    ps = ovl_ipv6_pseudo_sum(s, OVL_PROTO_UDP, l4);
  } else {
    put16(s + IP4_TOTLEN, (uint32_t)slen);
    put16(s + IP4_ID, c->id + (uint32_t)i);
    put16(s + IP4_CSUM, 0);
    put16(s + IP4_CSUM, ovl_inet_checksum(s, c->iphl));
    uint32_t pl = OVL_PROTO_UDP + l4; /* folded: ovl_ones_sum takes 0..0xffff */
    ps = ovl_ones_sum(s + IP4_ADDRS, IP4_ADDRS_LEN, (pl & 0xffffu) + (pl >> 16));
  }
  put16(uh + UDP_LEN, l4);
  if (c->partial) { /* the pseudo-header sum (folded, never 0): the receiver finishes it */
    put16(uh + UDP_CSUM, ps);
    return;
  }
  put16(uh + UDP_CSUM, 0);
  /* UDP_HEADER is even: the sum over the header then the payload is the sum over both */
  uint32_t c16 = ~ovl_ones_sum(payload, plen, ovl_ones_sum(uh, UDP_HEADER, ps)) & 0xffffu;
  put16(uh + UDP_CSUM, c16 == 0 ? 0xffffu : c16);
}
_Static_assert(UDP_HEADER % 2u == 0u, "the header sum continues over the payload");

int ovl_uso_segment(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *out, size_t out_cap,
                    uint32_t *seg_lens, uint32_t max_segs) {
  struct uso_plan c;
  int err = uso_plan(pkt, len, h, max_segs, &c);
  if (err) return err;
  if (c.payload + c.nseg * c.hdr > out_cap) return -ENOBUFS;
  c.partial = false;
  size_t o = 0;
  for (size_t i = 0; i < c.nseg; i++) {
    const size_t plen = uso_plen(&c, i);
    uint8_t *s = out + o;
    memcpy(s + c.hdr, pkt + c.hdr + i * c.mss, plen);
    uso_header(pkt, &c, i, s, s + c.hdr, plen);
    seg_lens[i] = (uint32_t)(c.hdr + plen);
    o += c.hdr + plen;
  }
  return (int)c.nseg;
}

int ovl_uso_cut(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *stubs, size_t stubs_cap,
                struct ovl_gso_seg *segs, uint32_t max_segs, unsigned flags) {
  struct uso_plan c;
  int err = uso_plan(pkt, len, h, max_segs, &c);
  if (err) return err;
  if (c.nseg * c.hdr > stubs_cap) return -ENOBUFS;
  c.partial = (flags & OVL_CUT_PARTIAL_CSUM) != 0;
  for (size_t i = 0; i < c.nseg; i++) {
    const size_t plen = uso_plen(&c, i);
    const uint8_t *payload = pkt + c.hdr + i * c.mss;
    uint8_t *s = stubs + i * c.hdr;
    uso_header(pkt, &c, i, s, payload, plen);
    segs[i] = (struct ovl_gso_seg){.hdr = s, .hdr_len = (uint32_t)c.hdr, .payload = payload, .payload_len = (uint32_t)plen};
  }
  return (int)c.nseg;
}
