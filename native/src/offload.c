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
 *    addresses, ports, ack, window, options; IPv4 with DF set and no options, or IPv6
 *    without extension headers; flags ACK[/PSH]; every segment's TCP checksum verified
 *    in full first) into one super-packet written with gso_type TCPV4 or TCPV6 and a
 *    partial checksum; the kernel (or the pod's stack) cuts or consumes it. Anything else
 *    is written plainly. UDP datagrams of one flow coalesce the same way into a UDP_L4
 *    super-packet (each datagram whole; the kernel cuts it again before the pod's socket).
 *    ovl_gro_table_* keep up to OVL_GRO_FLOWS_MAX such flows side by
 *    side over one batch of receives (TCP streams between two nodes arrive interleaved).
 * Pure functions over caller buffers: no allocation, no globals, any thread.
 */
#include "overlayd.h"
#include "internal.h"

#include <errno.h>
#include <string.h>

/* Byte 0 of an IP header: the version in the high nibble (RFC 791, RFC 8200) */
#define IP_VERSION_SHIFT 4u
#define IP_V4 4u
#define IP_V6 6u
/* The largest IPv4 total length and IPv6 payload length (16-bit fields) */
#define IP_LEN_MAX 65535u
/* IPv4 header (RFC 791): byte offsets */
#define IP4_VER_IHL 0u /* version and header length */
#define IP4_TOS 1u
#define IP4_TOTLEN 2u
#define IP4_ID 4u
#define IP4_FRAG 6u /* flags (reserved, DF, MF) and fragment offset, 16 bits */
#define IP4_TTL 8u
#define IP4_PROTO 9u
#define IP4_CSUM 10u
#define IP4_ADDRS 12u /* source then destination */
#define IP4_ADDRS_LEN 8u
#define IP4_DF 0x4000u        /* in the IP4_FRAG word */
#define IP4_FRAG_OTHER 0xbfffu /* in the IP4_FRAG word: reserved, MF, offset */
#define IP4_OFFSET 0x1fffu     /* in the IP4_FRAG word: the fragment offset */
#define IP4_MF_OFFSET 0x3fffu  /* in the IP4_FRAG word: MF and the offset (a fragment) */
/* IPv6 header (RFC 8200): byte offsets; the fixed header is the whole header GRO takes */
#define IP6_HEADER 40u
#define IP6_PLEN 4u /* payload length */
#define IP6_NEXT 6u
#define IP6_HLIM 7u
#define IP6_ADDRS 8u /* source then destination */
#define IP6_ADDRS_LEN 32u
#define IP6_FIRST_WORD 4u /* version, traffic class, flow label */
/* IPv6 next headers that are not extension headers: the packet carries no TCP here */
#define PROTO_ICMP6 58u
#define PROTO_NONE6 59u
/* TCP header (RFC 9293): byte offsets */
#define TCP_PORTS 0u /* source then destination, 4 bytes */
#define TCP_PORTS_LEN 4u
#define TCP_SEQ 4u
#define TCP_ACKNO 8u
#define TCP_DOFF 12u /* data offset in the high nibble */
#define TCP_FLAGS 13u
#define TCP_WIN 14u
#define TCP_CSUM 16u
#define TCP_URP 18u
#define TCP_OPTS 20u
#define TCP_DOFF_SHIFT 4u /* the data offset is the high nibble, in 32-bit words */
#define TCP_DOFF_UNIT 4u
#define CSUM_LEN 2u /* bytes of a checksum field */
/* UDP header (RFC 768): its length, and the byte offsets of its length and checksum */
#define UDP_HEADER 8u
#define UDP_LEN_OFF 4u
#define UDP_CSUM_OFF 6u
#define FIELD16 2u  /* bytes of a 16-bit field (IPv4 flags/fragment word, TCP window, urgent pointer) */
#define FIELD32 4u  /* bytes of a 32-bit field (TCP sequence and acknowledgment numbers) */

#define TCP_FIN 0x01u
#define TCP_SYN 0x02u
#define TCP_RST 0x04u
#define TCP_PSH 0x08u
#define TCP_ACK 0x10u
#define TCP_URG 0x20u
#define TCP_ECE 0x40u
#define TCP_CWR 0x80u

/* Every header ovl_gro_add can take (IPv4 IHL 5 or the IPv6 fixed header, any TCP data
 * offset) fits the saved copy. */
_Static_assert(sizeof(((struct ovl_gro *)0)->saved) >= IP6_HEADER + OVL_TCP_MAX_HEADER,
               "struct ovl_gro saves a 40-byte IPv6 header and a TCP header of up to 60 bytes");
_Static_assert(OVL_GRO_IP_HEADER_MAX == IP6_HEADER && OVL_IPV4_MIN_HEADER < IP6_HEADER,
               "the longest IP header GRO takes is IPv6's fixed header");
_Static_assert(OVL_TCP_MAX_HEADER == 15u * 4u, "TCP data offset is 4 bits of 32-bit words");
/* The engine's arena (engine.c VNET_NEED) reserves IPv4 max + TCP max header bytes per
 * segment: the IPv6 segments' headers (40 + TCP) must fit the same reserve. */
_Static_assert(OVL_IPV6_HEADER + OVL_TCP_MAX_HEADER <= OVL_IPV4_MAX_HEADER + OVL_TCP_MAX_HEADER,
               "an IPv6/TCP segment header fits the per-segment reserve of the IPv4 one");
_Static_assert(OVL_TCP_MIN_HEADER == TCP_OPTS, "TCP options follow the 20 fixed bytes");
_Static_assert(OVL_GRO_FLOWS_MAX >= 1 && OVL_GRO_FLOWS_MAX <= 64, "a small table, scanned per packet");

static size_t tcp_header_len(const uint8_t *th) { return (size_t)(th[TCP_DOFF] >> TCP_DOFF_SHIFT) * TCP_DOFF_UNIT; }
static unsigned ip_version(const uint8_t *pkt) { return pkt[0] >> IP_VERSION_SHIFT; }
static bool is_v6(const uint8_t *pkt) { return ip_version(pkt) == IP_V6; }

/* Folded one's-complement sum of the IPv4 pseudo header (src, dst, proto, l4 length). */
static uint32_t pseudo_sum(const uint8_t *ip, uint32_t proto, uint32_t l4len) {
  const uint8_t *a = ip + IP4_ADDRS; /* 4 words inline: once per segment cut or checked */
  uint32_t s = be16(a) + be16(a + 2) + be16(a + 4) + be16(a + 6) + proto + l4len;
  s = (s & 0xffffu) + (s >> 16);
  return (s & 0xffffu) + (s >> 16);
}

/* The same for IPv6 (RFC 8200 8.1: src, dst, 32-bit upper-layer length, next header). */
static uint32_t pseudo_sum6(const uint8_t *ip, uint32_t proto, uint32_t l4len) {
  uint32_t s = ovl_ones_sum(ip + IP6_ADDRS, IP6_ADDRS_LEN, 0) + proto + (l4len >> 16) + (l4len & 0xffffu);
  s = (s & 0xffffu) + (s >> 16);
  return (s & 0xffffu) + (s >> 16);
}

bool ovl_l4_checksum_ok(const uint8_t *pkt, size_t len) {
  size_t hl = ovl_ipv4_header_len(pkt);
  if (hl < OVL_IPV4_MIN_HEADER || hl > len) return false;
  uint32_t s = ovl_ones_sum(pkt + hl, len - hl, pseudo_sum(pkt, pkt[IP4_PROTO], (uint32_t)(len - hl)));
  return s == 0xffffu;
}

bool ovl_csum_partial(const uint8_t *pkt, size_t len, struct ovl_vnet_hdr *h) {
  size_t iphl;
  uint32_t proto;
  bool v6 = false; /* not iphl == IP6_HEADER: an IPv4 header with IHL 10 is 40 bytes too */
  if (len < OVL_IPV4_MIN_HEADER || len > IP_LEN_MAX + IP6_HEADER) return false;
  if (ip_version(pkt) == IP_V4) {
    iphl = ovl_ipv4_header_len(pkt);
    if (iphl < OVL_IPV4_MIN_HEADER || iphl > len || be16(pkt + IP4_TOTLEN) != len) return false;
    if (be16(pkt + IP4_FRAG) & IP4_MF_OFFSET) return false; /* MF or an offset: a fragment */
    proto = pkt[IP4_PROTO];
  } else if (is_v6(pkt) && len >= IP6_HEADER) {
    v6 = true;
    iphl = IP6_HEADER;
    if (be16(pkt + IP6_PLEN) != len - IP6_HEADER) return false; /* a jumbogram or padding */
    proto = pkt[IP6_NEXT];
  } else {
    return false;
  }
  size_t off;
  if (proto == OVL_PROTO_TCP)
    off = TCP_CSUM;
  else if (proto == OVL_PROTO_UDP)
    off = UDP_CSUM_OFF;
  else
    return false;
  if (iphl + off + CSUM_LEN > len || (proto == OVL_PROTO_TCP && iphl + OVL_TCP_MIN_HEADER > len)) return false;
  uint32_t l4 = (uint32_t)(len - iphl);
  uint32_t ps = v6 ? pseudo_sum6(pkt, proto, l4) : pseudo_sum(pkt, proto, l4);
  if (be16(pkt + iphl + off) != ps) return false;
  memset(h, 0, sizeof(*h));
  h->flags = OVL_VNET_F_NEEDS_CSUM;
  h->csum_start = (uint16_t)iphl;
  h->csum_offset = (uint16_t)off;
  return true;
}

bool ovl_vnet_csum_is_partial(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h) {
  struct ovl_vnet_hdr p;
  return (h->flags & OVL_VNET_F_NEEDS_CSUM) && ovl_csum_partial(pkt, len, &p) && p.csum_start == h->csum_start &&
         p.csum_offset == h->csum_offset;
}

int ovl_vnet_csum_finish(uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h) {
  if (!(h->flags & OVL_VNET_F_NEEDS_CSUM)) return 0;
  size_t start = h->csum_start, off = (size_t)h->csum_start + h->csum_offset;
  if (start >= len || off + CSUM_LEN > len) return -EINVAL;
  /* the field holds the pseudo-header sum: the sum from csum_start on covers it */
  uint16_t c = ovl_inet_checksum(pkt + start, len - start);
  /* A computed 0 is stored as 0xffff, as Linux's skb_checksum_help does (CSUM_MANGLED_0):
   * for UDP 0 means "no checksum" (RFC 768); for TCP both encodings verify. */
  put16(pkt + off, c == 0 ? 0xffffu : c);
  return 0;
}

/* Checks an IPv4/TCP header chain; returns the header bytes (IP + TCP) or 0. */
static size_t tcp4_headers(const uint8_t *pkt, size_t len) {
  if (len < OVL_IPV4_MIN_HEADER + OVL_TCP_MIN_HEADER || ip_version(pkt) != IP_V4 || pkt[IP4_PROTO] != OVL_PROTO_TCP) return 0;
  size_t ihl = ovl_ipv4_header_len(pkt);
  if (ihl < OVL_IPV4_MIN_HEADER || ihl + OVL_TCP_MIN_HEADER > len) return 0;
  size_t thl = tcp_header_len(pkt + ihl);
  if (thl < OVL_TCP_MIN_HEADER || ihl + thl > len) return 0;
  return ihl + thl;
}

/* Checks an IPv6/TCP header chain with TCP right after the fixed header (super-packets
 * with extension headers are refused: the kernel's own TSO6 path does not make them for a
 * TUN's TCP); returns the header bytes (40 + TCP) or 0. */
static size_t tcp6_headers(const uint8_t *pkt, size_t len) {
  if (len < IP6_HEADER + OVL_TCP_MIN_HEADER || !is_v6(pkt) || pkt[IP6_NEXT] != OVL_PROTO_TCP) return 0;
  size_t thl = tcp_header_len(pkt + IP6_HEADER);
  if (thl < OVL_TCP_MIN_HEADER || IP6_HEADER + thl > len) return 0;
  return IP6_HEADER + thl;
}

/* How a super-packet is cut (gso_plan), shared by the copying and the zero-copy cut. */
struct gso_plan {
  bool v6;
  bool partial; /* leave each segment's TCP checksum partial (OVL_CUT_PARTIAL_CSUM) */
  size_t iphl, hdr, mss, payload, nseg;
  uint32_t id, seq; /* IPv4 id and TCP sequence number of the first segment */
  uint8_t flags;    /* TCP flags of the super-packet */
};

/* Checks the super-packet and plans its cut; 0 or the negative errno of ovl_gso_segment. */
static int gso_plan(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint32_t max_segs,
                    struct gso_plan *c) {
  uint8_t type = (uint8_t)(h->gso_type & ~OVL_VNET_GSO_ECN);
  if (type == OVL_VNET_GSO_TCPV6) {
    c->v6 = true;
    c->hdr = tcp6_headers(pkt, len);
    if (c->hdr == 0 || len > IP_LEN_MAX + IP6_HEADER || h->gso_size == 0) return -EINVAL;
    c->iphl = IP6_HEADER;
    c->id = 0;
  } else if (type == OVL_VNET_GSO_TCPV4) {
    c->v6 = false;
    c->hdr = tcp4_headers(pkt, len);
    if (c->hdr == 0 || len > IP_LEN_MAX || h->gso_size == 0) return -EINVAL;
    c->iphl = ovl_ipv4_header_len(pkt);
    c->id = be16(pkt + IP4_ID);
  } else {
    return -EPROTONOSUPPORT;
  }
  c->mss = h->gso_size;
  c->payload = len - c->hdr;
  c->nseg = c->payload == 0 ? 1 : (c->payload + c->mss - 1) / c->mss;
  if (c->nseg > max_segs) return -E2BIG;
  c->seq = ovl_be32(pkt + c->iphl + TCP_SEQ);
  c->flags = pkt[c->iphl + TCP_FLAGS];
  return 0;
}

/* Payload bytes of segment i. */
static size_t gso_plen(const struct gso_plan *c, size_t i) { return i + 1 < c->nseg ? c->mss : c->payload - i * c->mss; }

/* Writes segment i's headers (c->hdr bytes) into s, from the super-packet's pkt: lengths,
 * IPv4 id + i and header checksum, TCP seq + i * MSS, FIN/PSH only on the last segment,
 * CWR only on the first, and the TCP checksum summed over s's TCP header and then the
 * segment's payload where it lies (payload, plen bytes: in the super-packet or a copy;
 * c->hdr is even, so the two sums chain). s may not overlap pkt's headers. */
static void gso_header(const uint8_t *pkt, const struct gso_plan *c, size_t i, uint8_t *s, const uint8_t *payload,
                       size_t plen) {
  memcpy(s, pkt, c->hdr);
  size_t slen = c->hdr + plen;
  if (c->v6) {
    put16(s + IP6_PLEN, (uint32_t)(slen - IP6_HEADER));
  } else {
    put16(s + IP4_TOTLEN, (uint32_t)slen);
    put16(s + IP4_ID, (c->id + (uint32_t)i) & 0xffffu);
    put16(s + IP4_CSUM, 0);
    put16(s + IP4_CSUM, ovl_ipv4_header_checksum(s, c->iphl));
  }
  uint8_t *th = s + c->iphl;
  put32(th + TCP_SEQ, c->seq + (uint32_t)(i * c->mss));
  uint8_t f = c->flags;
  if (i + 1 < c->nseg) f &= (uint8_t)~(TCP_FIN | TCP_PSH);
  if (i > 0) f &= (uint8_t)~TCP_CWR;
  th[TCP_FLAGS] = f;
  put16(th + TCP_CSUM, 0);
  size_t thl = c->hdr - c->iphl;
  uint32_t l4 = (uint32_t)(slen - c->iphl);
  uint32_t ps = c->v6 ? pseudo_sum6(s, OVL_PROTO_TCP, l4) : pseudo_sum(s, OVL_PROTO_TCP, l4);
  if (c->partial) { /* the pseudo-header sum, as the kernel leaves it: the receiver finishes */
    put16(th + TCP_CSUM, ps);
    return;
  }
  uint32_t sum = ovl_ones_sum(payload, plen, ovl_ones_sum(th, thl, ps));
  put16(th + TCP_CSUM, ~sum & 0xffffu);
}

_Static_assert(OVL_IPV4_MIN_HEADER % 2 == 0 && OVL_TCP_MIN_HEADER % 2 == 0,
               "IP and TCP header lengths are whole 32-bit words: the header sum chains into the payload's");

int ovl_gso_segment(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *out, size_t out_cap,
                    uint32_t *seg_lens, uint32_t max_segs) {
  struct gso_plan c;
  int err = gso_plan(pkt, len, h, max_segs, &c);
  if (err) return err;
  if (c.payload + c.nseg * c.hdr > out_cap) return -ENOBUFS;
  c.partial = false;
  size_t o = 0;
  for (size_t i = 0; i < c.nseg; i++) {
    size_t plen = gso_plen(&c, i);
    uint8_t *s = out + o;
    memcpy(s + c.hdr, pkt + c.hdr + i * c.mss, plen);
    gso_header(pkt, &c, i, s, s + c.hdr, plen);
    seg_lens[i] = (uint32_t)(c.hdr + plen);
    o += c.hdr + plen;
  }
  return (int)c.nseg;
}

int ovl_gso_cut(const uint8_t *pkt, size_t len, const struct ovl_vnet_hdr *h, uint8_t *stubs, size_t stubs_cap,
                struct ovl_gso_seg *segs, uint32_t max_segs, unsigned flags) {
  struct gso_plan c;
  int err = gso_plan(pkt, len, h, max_segs, &c);
  if (err) return err;
  if (c.nseg * c.hdr > stubs_cap) return -ENOBUFS;
  /* partial only where the peer recognises it (ovl_csum_partial): never on an IPv4 fragment */
  c.partial = (flags & OVL_CUT_PARTIAL_CSUM) != 0 && (c.v6 || (be16(pkt + IP4_FRAG) & IP4_MF_OFFSET) == 0);
  for (size_t i = 0; i < c.nseg; i++) {
    size_t plen = gso_plen(&c, i);
    const uint8_t *payload = pkt + c.hdr + i * c.mss;
    uint8_t *s = stubs + i * c.hdr;
    gso_header(pkt, &c, i, s, payload, plen);
    segs[i] = (struct ovl_gso_seg){.hdr = s, .hdr_len = (uint32_t)c.hdr, .payload = payload, .payload_len = (uint32_t)plen};
  }
  return (int)c.nseg;
}

/* ---------------------------------------------------------------- GRO ------------------ */

void ovl_gro_init(struct ovl_gro *g) {
  g->len = 0;
  g->nseg = 0;
  g->edited = false;
}

/* The IP header length GRO would take this packet with: IPv4 IHL 5 (20) or the IPv6 fixed
 * header (40) followed directly by TCP or UDP (*proto), len holding the IP header; else 0. */
static size_t gro_ip_header(const uint8_t *pkt, size_t len, uint8_t *proto) {
  if (len < OVL_IPV4_MIN_HEADER) return 0;
  if (ip_version(pkt) == IP_V4) {
    *proto = pkt[IP4_PROTO];
    return ovl_ipv4_header_len(pkt) == OVL_IPV4_MIN_HEADER && (*proto == OVL_PROTO_TCP || *proto == OVL_PROTO_UDP)
               ? OVL_IPV4_MIN_HEADER
               : 0;
  }
  if (!is_v6(pkt) || len < IP6_HEADER) return 0;
  *proto = pkt[IP6_NEXT];
  return *proto == OVL_PROTO_TCP || *proto == OVL_PROTO_UDP ? IP6_HEADER : 0;
}

/* ovl_gro_check of a UDP datagram (IP header iphl bytes, checked by ovl_gro_check): a UDP
 * length equal to the rest of the packet, payload > 0, and a checksum (never 0: "none" in
 * IPv4 would have to be computed to coalesce) verified in full or left partial. */
static int gro_check_udp(const uint8_t *pkt, size_t len, size_t iphl) {
  if (iphl + UDP_HEADER >= len) return 0; /* no payload */
  const uint8_t *uh = pkt + iphl;
  uint32_t l4 = (uint32_t)(len - iphl);
  if (be16(uh + UDP_LEN_OFF) != l4) return 0;
  uint16_t field = (uint16_t)be16(uh + UDP_CSUM_OFF);
  if (field == 0) return 0;
  uint32_t ps = iphl == IP6_HEADER ? pseudo_sum6(pkt, OVL_PROTO_UDP, l4) : pseudo_sum(pkt, OVL_PROTO_UDP, l4);
  if (field == ps) return OVL_GRO_PARTIAL;
  return ovl_ones_sum(uh, l4, ps) == 0xffffu ? OVL_GRO_VERIFIED : 0;
}

bool ovl_gro_eligible(const uint8_t *pkt, size_t len) { return ovl_gro_check(pkt, len) != 0; }

int ovl_gro_check(const uint8_t *pkt, size_t len) {
  uint8_t proto = 0;
  size_t iphl = gro_ip_header(pkt, len, &proto); /* no IPv4 options, no IPv6 extension headers */
  if (iphl == 0 || len > IP_LEN_MAX || iphl + UDP_HEADER > len) return 0;
  if (iphl == IP6_HEADER) {
    if (be16(pkt + IP6_PLEN) != len - IP6_HEADER) return 0; /* a jumbogram or padding */
  } else {
    if ((be16(pkt + IP4_FRAG) & IP4_FRAG_OTHER) != 0) return 0; /* MF, offset or reserved bit */
    if (be16(pkt + IP4_TOTLEN) != len) return 0;
    /* DF clear: ids matter; UDP runs keep them (consecutive ids only: ovl_gro_add), TCP's
     * are not taken */
    if (!(be16(pkt + IP4_FRAG) & IP4_DF) && proto != OVL_PROTO_UDP) return 0;
  }
  if (proto == OVL_PROTO_UDP) return gro_check_udp(pkt, len, iphl);
  if (iphl + OVL_TCP_MIN_HEADER > len) return 0;
  const uint8_t *th = pkt + iphl;
  size_t hdr = iphl + tcp_header_len(th);
  if (hdr < iphl + OVL_TCP_MIN_HEADER || hdr >= len) return 0; /* bad offset, or no payload */
  uint8_t f = th[TCP_FLAGS];
  if (!(f & TCP_ACK) || (f & ~(TCP_ACK | TCP_PSH | TCP_ECE))) return 0;
  /* a checksum left partial by the sending peer has nothing to verify (see
   * ovl_csum_partial): the run is written with NEEDS_CSUM either way */
  uint32_t l4 = (uint32_t)(len - iphl);
  uint32_t ps = iphl == IP6_HEADER ? pseudo_sum6(pkt, OVL_PROTO_TCP, l4) : pseudo_sum(pkt, OVL_PROTO_TCP, l4);
  if (be16(th + TCP_CSUM) == ps) return OVL_GRO_PARTIAL;
  return ovl_ones_sum(pkt + iphl, l4, ps) == 0xffffu ? OVL_GRO_VERIFIED : 0;
}

static void gro_start(struct ovl_gro *g, uint8_t *pkt, size_t len, size_t iphl, uint8_t proto) {
  const uint8_t *th = pkt + iphl;
  const bool udp = proto == OVL_PROTO_UDP;
  size_t hdr = iphl + (udp ? UDP_HEADER : tcp_header_len(th));
  g->len = (uint32_t)len;
  g->edited = false;
  g->proto = proto;
  g->iphl = (uint16_t)iphl;
  g->hdr = (uint16_t)hdr;
  g->gso_size = (uint16_t)(len - hdr);
  g->next_seq = udp ? 0 : ovl_be32(th + TCP_SEQ) + (uint32_t)(len - hdr);
  g->nseg = 1;
  g->closed = !udp && (th[TCP_FLAGS] & TCP_PSH) != 0;
  g->segs[0] = pkt;
  g->seg_lens[0] = (uint32_t)len;
}

/* The IP headers of a and b (same family, header length iphl) let them share one
 * super-packet: every byte the segments cut from it would copy from the first. */
static bool ip_headers_match(const uint8_t *a, const uint8_t *b, size_t iphl) {
  if (iphl == IP6_HEADER)
    return memcmp(a, b, IP6_FIRST_WORD) == 0 && a[IP6_NEXT] == b[IP6_NEXT] && a[IP6_HLIM] == b[IP6_HLIM] &&
           memcmp(a + IP6_ADDRS, b + IP6_ADDRS, IP6_ADDRS_LEN) == 0;
  /* version/IHL, TOS, flags/fragment word, TTL, protocol, addresses (the id is free: DF) */
  return a[IP4_VER_IHL] == b[IP4_VER_IHL] && a[IP4_TOS] == b[IP4_TOS] && memcmp(a + IP4_FRAG, b + IP4_FRAG, FIELD16) == 0 &&
         a[IP4_TTL] == b[IP4_TTL] && a[IP4_PROTO] == b[IP4_PROTO] &&
         memcmp(a + IP4_ADDRS, b + IP4_ADDRS, IP4_ADDRS_LEN) == 0;
}

bool ovl_gro_add(struct ovl_gro *g, uint8_t *pkt, size_t len) {
  uint8_t proto = 0;
  size_t iphl = gro_ip_header(pkt, len, &proto); /* eligible packets only: headers fit saved[] */
  if (iphl == 0) return false;
  if (g->nseg == 0) {
    gro_start(g, pkt, len, iphl, proto);
    return true;
  }
  const uint8_t *a = g->segs[0];
  size_t hdr = g->hdr, plen = len - hdr;
  if (g->closed || g->nseg >= OVL_GRO_SEGS_MAX || proto != g->proto || iphl != g->iphl || len <= hdr ||
      plen > g->gso_size || (size_t)g->len + plen > IP_LEN_MAX)
    return false;
  const uint8_t *ta = a + iphl, *tb = pkt + iphl;
  if (proto == OVL_PROTO_UDP) {
    /* UDP: the same addresses and IP fields, the same ports; each datagram stays whole
     * (the kernel cuts the super-packet at gso_size, the first one's payload: a shorter
     * datagram is the last of a run) */
    if (!ip_headers_match(a, pkt, iphl) || memcmp(ta + TCP_PORTS, tb + TCP_PORTS, TCP_PORTS_LEN) != 0) return false;
    /* IPv4 without DF: datagram i must have id first + i, the ids the kernel gives the
     * datagrams it cuts from the super-packet (so every id comes back as received) */
    if (iphl != IP6_HEADER && !(be16(a + IP4_FRAG) & IP4_DF) && be16(pkt + IP4_ID) != ((be16(a + IP4_ID) + g->nseg) & 0xffffu))
      return false;
    g->len += (uint32_t)plen;
    g->segs[g->nseg] = pkt;
    g->seg_lens[g->nseg] = (uint32_t)len;
    g->nseg++;
    if (plen < g->gso_size) g->closed = true;
    return true;
  }
  if (iphl + tcp_header_len(tb) != hdr) return false;
  if (!ip_headers_match(a, pkt, iphl)) return false;
  /* TCP: ports, ack, data offset + flags (PSH aside) + window, urgent pointer (meaningless
   * without URG, but cutting the super-packet must give back every byte), options */
  if (memcmp(ta + TCP_PORTS, tb + TCP_PORTS, TCP_PORTS_LEN) != 0 || memcmp(ta + TCP_ACKNO, tb + TCP_ACKNO, FIELD32) != 0 ||
      ta[TCP_DOFF] != tb[TCP_DOFF] || (ta[TCP_FLAGS] & ~TCP_PSH) != (tb[TCP_FLAGS] & ~TCP_PSH) ||
      memcmp(ta + TCP_WIN, tb + TCP_WIN, FIELD16) != 0 || memcmp(ta + TCP_URP, tb + TCP_URP, FIELD16) != 0 ||
      memcmp(ta + TCP_OPTS, tb + TCP_OPTS, hdr - iphl - TCP_OPTS) != 0)
    return false;
  if (ovl_be32(tb + TCP_SEQ) != g->next_seq) return false;
  g->len += (uint32_t)plen;
  g->next_seq += (uint32_t)plen;
  g->segs[g->nseg] = pkt;
  g->seg_lens[g->nseg] = (uint32_t)len;
  g->nseg++;
  if (tb[TCP_FLAGS] & TCP_PSH) g->closed = true;
  if (plen < g->gso_size) g->closed = true; /* a short segment ends the run */
  return true;
}

size_t ovl_gro_finish(struct ovl_gro *g, struct ovl_vnet_hdr *h, struct iovec *iov, uint32_t *iovcnt) {
  memset(h, 0, sizeof(*h));
  size_t len = g->len, iphl = g->iphl;
  iov[0] = (struct iovec){.iov_base = g->segs[0], .iov_len = g->seg_lens[0]};
  *iovcnt = 1;
  if (g->nseg <= 1) return len; /* the packet as it came, plain */
  for (uint32_t i = 1; i < g->nseg; i++)
    iov[i] = (struct iovec){.iov_base = g->segs[i] + g->hdr, .iov_len = g->seg_lens[i] - g->hdr};
  *iovcnt = g->nseg;
  uint8_t *p = g->segs[0], *th = p + iphl;
  memcpy(g->saved, p, g->hdr);
  g->edited = true;
  const bool udp = g->proto == OVL_PROTO_UDP;
  if (!udp && (g->segs[g->nseg - 1][iphl + TCP_FLAGS] & TCP_PSH)) th[TCP_FLAGS] |= TCP_PSH;
  uint32_t l4 = (uint32_t)(len - iphl);
  if (udp) put16(th + UDP_LEN_OFF, l4);
  const size_t csum = udp ? UDP_CSUM_OFF : TCP_CSUM;
  /* the checksum partial (the pseudo-header sum over the whole): the kernel finishes it */
  if (iphl == IP6_HEADER) {
    put16(p + IP6_PLEN, l4);
    put16(th + csum, pseudo_sum6(p, g->proto, l4));
    h->gso_type = udp ? OVL_VNET_GSO_UDP_L4 : OVL_VNET_GSO_TCPV6;
  } else {
    put16(p + IP4_TOTLEN, (uint32_t)len);
    put16(p + IP4_CSUM, 0);
    put16(p + IP4_CSUM, ovl_ipv4_header_checksum(p, iphl));
    put16(th + csum, pseudo_sum(p, g->proto, l4));
    h->gso_type = udp ? OVL_VNET_GSO_UDP_L4 : OVL_VNET_GSO_TCPV4;
  }
  h->flags = OVL_VNET_F_NEEDS_CSUM;
  h->hdr_len = g->hdr;
  h->gso_size = g->gso_size;
  h->csum_start = (uint16_t)iphl;
  h->csum_offset = (uint16_t)csum;
  return len;
}

void ovl_gro_restore(struct ovl_gro *g) {
  if (g->edited) memcpy(g->segs[0], g->saved, g->hdr);
  g->edited = false;
}

/* ---------------------------------------------------------------- the flow table ------- */

void ovl_gro_table_init(struct ovl_gro_table *t) {
  for (uint32_t i = 0; i < t->used; i++) ovl_gro_init(&t->flows[i]);
  t->used = 0;
  t->victim = 0;
}

int ovl_gro_table_find(const struct ovl_gro_table *t, const uint8_t *pkt, size_t len) {
  size_t iphl, addrs, alen;
  if (len < OVL_IPV4_MIN_HEADER) return OVL_GRO_FIND_NONE;
  uint8_t proto;
  if (ip_version(pkt) == IP_V4) {
    proto = pkt[IP4_PROTO];
    if (proto != OVL_PROTO_TCP && proto != OVL_PROTO_UDP) return OVL_GRO_FIND_NONE;
    iphl = ovl_ipv4_header_len(pkt);
    if ((be16(pkt + IP4_FRAG) & IP4_OFFSET) != 0) /* not the first fragment: no ports */
      return proto == OVL_PROTO_TCP ? OVL_GRO_FIND_ALL : OVL_GRO_FIND_NONE; /* UDP: its first fragment flushed the run */
    addrs = IP4_ADDRS;
    alen = IP4_ADDRS_LEN;
  } else if (is_v6(pkt) && len >= IP6_HEADER) {
    proto = pkt[IP6_NEXT];
    if (proto == PROTO_ICMP6 || proto == PROTO_NONE6) return OVL_GRO_FIND_NONE;
    if (proto != OVL_PROTO_TCP && proto != OVL_PROTO_UDP) return OVL_GRO_FIND_ALL; /* an extension header (or unknown): TCP may follow */
    iphl = IP6_HEADER;
    addrs = IP6_ADDRS;
    alen = IP6_ADDRS_LEN;
  } else {
    return OVL_GRO_FIND_NONE;
  }
  if (iphl < OVL_IPV4_MIN_HEADER || iphl + TCP_PORTS_LEN > len) return OVL_GRO_FIND_ALL; /* ports unreadable */
  for (uint32_t i = 0; i < t->used; i++) {
    const struct ovl_gro *g = &t->flows[i];
    if (g->nseg == 0) continue;
    const uint8_t *a = g->segs[0];
    /* the run's headers may be edited (finish) only when it is being written: not here */
    if (g->proto == proto && ip_version(a) == ip_version(pkt) && memcmp(a + addrs, pkt + addrs, alen) == 0 &&
        memcmp(a + g->iphl + TCP_PORTS, pkt + iphl + TCP_PORTS, TCP_PORTS_LEN) == 0)
      return (int)i;
  }
  return OVL_GRO_FIND_NONE;
}

uint32_t ovl_gro_table_slot(struct ovl_gro_table *t) {
  for (uint32_t i = 0; i < t->used; i++)
    if (t->flows[i].nseg == 0) return i;
  if (t->used < OVL_GRO_FLOWS_MAX) {
    ovl_gro_init(&t->flows[t->used]);
    return t->used++;
  }
  uint32_t v = t->victim;
  t->victim = (v + 1) % OVL_GRO_FLOWS_MAX;
  return v;
}
