/*
 * The native engine's forwarding policy (engine_int.h): per packet exactly what
 * src/dataplane/js-engine.ts does, in both directions, for inner IPv4 and IPv6 — the same
 * checks in the same order, the same counters, the same ICMP errors — with packet.c's and
 * packet6.c's rules (validation, TTL, ICMP builders) and route.c's lookups. Two things are
 * decided once per TUN super-packet rather than per segment (its segments cannot differ in
 * them): validation, the route and the TTL rule (outbound on its first segment,
 * outbound_same on the others), so it draws at most one ICMP error; and ICMP errors of all
 * queues share one rate limit (ratelimit.c; suppressed: drop_icmp_ratelimit). No I/O of its
 * own: what passes goes to the UDP side's queue (queue_tx) or the TUN side (deliver),
 * ICMP errors through tun_write / udp_reply. Runs on the worker's thread.
 */
#include "engine_int.h"

#include <string.h>

/* The js engine's icmp4(): an ICMP error about pkt (`len` bytes present) from our TUN's
 * IPv4 address (next_hop_mtu for fragmentation needed), only where RFC 1812 allows and the
 * shared rate limit has a token (else counted as drop_icmp_ratelimit); built in w->icmp.
 * Returns its length, 0 when none is to be sent. Counts icmp_sent. */
static size_t icmp_build(struct worker *w, const uint8_t *pkt, size_t len, uint8_t type, uint8_t code,
                         uint16_t next_hop_mtu) {
  if (!ovl_icmp_may_respond(pkt, len)) return 0;
  if (!ovl_ratelimit_take(&w->e->icmp_limit, mono_ns())) {
    w->acc[OVL_EC_DROP_ICMP_RATELIMIT]++;
    return 0;
  }
  w->acc[OVL_EC_ICMP_SENT]++;
  uint16_t id = (uint16_t)atomic_fetch_add_explicit(&w->e->icmp_id, 1, memory_order_relaxed);
  return ovl_icmp_error_build(w->icmp, type, code, w->e->tun_address, pkt, len, next_hop_mtu, id);
}

/* The js engine's icmpError(): icmp_build, written into the TUN. */
static void icmp_error(struct worker *w, const uint8_t *pkt, size_t len, uint8_t type, uint8_t code) {
  size_t n = icmp_build(w, pkt, len, type, code, 0);
  if (n) tun_write(w, w->icmp, n);
}

/* The TTL step of both directions: decrements the TTL (packet.c's rule), or counts the
 * drop and answers time exceeded. Returns false when the packet is dropped. */
static bool ttl_step(struct worker *w, uint8_t *pkt, size_t len) {
  if (ovl_ipv4_decrement_ttl(pkt)) return true;
  w->acc[OVL_EC_DROP_TTL]++;
  icmp_error(w, pkt, len, OVL_ICMP_TIME_EXCEEDED, OVL_ICMP_TTL_EXCEEDED);
  return false;
}

static const struct ovl_rtable6 *table6(struct worker *w) {
  if (w->t6 == NULL) w->t6 = ovl_routes_table6(w->e->routes);
  return w->t6;
}

static bool in_subnet6(const struct ovl_engine *e, const uint8_t *a) {
  for (int i = 0; i < 16; i++)
    if ((a[i] & e->subnet6_mask[i]) != e->subnet6[i]) return false;
  return true;
}

/* An ICMPv6 error about pkt (avail bytes present, validated: info) where RFC 4443 allows
 * and the shared rate limit has a token (else drop_icmp_ratelimit); built in w->icmp6.
 * Returns its length, 0 when none is to be sent. Counts icmp_sent. */
static size_t icmp6_build(struct worker *w, const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info,
                          uint8_t type, uint8_t code, uint32_t mtu) {
  if (!ovl_icmp6_may_respond(pkt, avail, info, type)) return 0;
  if (!ovl_ratelimit_take(&w->e->icmp_limit, mono_ns())) {
    w->acc[OVL_EC_DROP_ICMP_RATELIMIT]++;
    return 0;
  }
  w->acc[OVL_EC_ICMP_SENT]++;
  return ovl_icmp6_error_build(w->icmp6, type, code, w->e->tun_address6, pkt, avail, mtu);
}

/* icmp6_build, written into the TUN. */
static void icmp6_error(struct worker *w, const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info,
                        uint8_t type, uint8_t code, uint32_t mtu) {
  size_t n = icmp6_build(w, pkt, avail, info, type, code, mtu);
  if (n) tun_write(w, w->icmp6, n);
}

/* outbound() of an inner IPv6 packet (len bytes, all in the buffer): validation with the
 * extension-header walk, route, hop limit, then the TUN MTU (packet too big, MTU = TUN
 * MTU, toward the sender), in the order Linux forwards. Over the IPv6 underlay when the
 * route has a peer6 and this engine has IPv6 sockets, else over IPv4. */
static verdict_t outbound6(struct worker *w, uint8_t *pkt, size_t len, struct dest *d) {
  struct ovl_ipv6_info info;
  if (ovl_ipv6_validate(pkt, len, len, &info) != OVL_IPV6_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return OVL_EC_DROP_MALFORMED;
  }
  const struct ovl_route6 *r = ovl_rtable6_lookup(table6(w), ovl_ipv6_dst(pkt));
  if (r == NULL) {
    w->acc[OVL_EC_DROP_NO_ROUTE]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_DEST_UNREACH, OVL_ICMP6_NO_ROUTE, 0);
    return OVL_EC_DROP_NO_ROUTE;
  }
  if (pkt[7] <= 1) {
    w->acc[OVL_EC_DROP_TTL]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_TIME_EXCEEDED, OVL_ICMP6_HOP_LIMIT, 0);
    return OVL_EC_DROP_TTL;
  }
  if (len > w->e->tun_mtu) {
    w->acc[OVL_EC_DROP_TOO_BIG]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_PACKET_TOO_BIG, 0, w->e->tun_mtu);
    return OVL_EC_DROP_TOO_BIG;
  }
  (void)ovl_ipv6_decrement_hop_limit(pkt); /* > 1, checked above */
  d->over6 = r->has_peer6 && w->udp6_fd >= 0;
  d->v4 = r->peer;
  memcpy(d->v6, r->peer6, 16);
  queue_tx(w, pkt, len, NULL, 0, d);
  return OVL_EC_TX;
}

verdict_t outbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len, struct dest *d) {
  w->acc[OVL_EC_TUN_RX]++;
  if (w->e->ipv6 && len > 0 && (pkt[0] >> 4) == 6) return outbound6(w, pkt, len, d);
  uint32_t *peer = &d->v4;
  d->over6 = false;
  if (ovl_ipv4_validate(pkt, len) != OVL_IPV4_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return OVL_EC_DROP_MALFORMED;
  }
  if (!ovl_rcache_lookup(&w->cache, t, ovl_ipv4_dst(pkt), peer)) {
    w->acc[OVL_EC_DROP_NO_ROUTE]++;
    icmp_error(w, pkt, len, OVL_ICMP_DEST_UNREACH, OVL_ICMP_NET_UNREACH);
    return OVL_EC_DROP_NO_ROUTE;
  }
  if (!ttl_step(w, pkt, len)) return OVL_EC_DROP_TTL;
  queue_tx(w, pkt, len, NULL, 0, d);
  return OVL_EC_TX;
}

bool peer_takes_partial(struct worker *w, const struct ovl_rtable *t, const uint8_t *pkt, size_t len) {
  uint32_t peer;
  if (len >= OVL_IPV6_HEADER && (pkt[0] >> 4) == 6) {
    if (!w->e->ipv6) return false;
    const struct ovl_route6 *r = ovl_rtable6_lookup(table6(w), ovl_ipv6_dst(pkt));
    if (r == NULL) return false;
    peer = r->peer;
  } else if (len >= OVL_IPV4_MIN_HEADER && (pkt[0] >> 4) == 4) {
    if (!ovl_rcache_lookup(&w->cache, t, ovl_ipv4_dst(pkt), &peer)) return false;
  } else {
    return false;
  }
  return (ovl_rtable_peer_flags(t, peer) & OVL_ROUTE_PARTIAL_CSUM) != 0;
}

/* A segment cut from the same super-packet as one outbound() already judged (`v`, `d`):
 * the same addresses, TTL and header fields (ovl_gso_cut wrote valid lengths and
 * checksums), so the same verdict; counted per segment like outbound(), but no second
 * ICMP error (one per super-packet, as one per packet the pod's stack sent). */
void outbound_same(struct worker *w, const struct ovl_gso_seg *s, verdict_t v, const struct dest *d) {
  w->acc[OVL_EC_TUN_RX]++;
  if (v != OVL_EC_TX) {
    w->acc[v]++;
    return;
  }
  /* TTL / hop limit > 1, as in the first segment (the same version: cut from one packet) */
  if ((s->hdr[0] >> 4) == 6)
    (void)ovl_ipv6_decrement_hop_limit(s->hdr);
  else
    (void)ovl_ipv4_decrement_ttl(s->hdr);
  queue_tx(w, s->hdr, s->hdr_len, s->payload, s->payload_len, d);
}

/* A packet too big sent back over UDP to the peer it came from (`from`, on the socket of
 * its family): source our TUN's IPv6 address, destination the inner source. */
static void ptb_to_peer(struct worker *w, const uint8_t *pkt, size_t avail, const struct ovl_ipv6_info *info,
                        const union ovl_sa *from) {
  size_t n = icmp6_build(w, pkt, avail, info, OVL_ICMP6_PACKET_TOO_BIG, 0, w->e->tun_mtu);
  if (n == 0) return;
  udp_reply(w, from, w->icmp6, n);
}

/* inbound() of an inner IPv6 packet from a known peer: the buffer holds min(len, slot)
 * bytes. Checks in the IPv4 order: malformed (with the extension-header walk, within the
 * bytes present), spoofed (the Route6 of the inner source must point at the sender over
 * the underlay it came by: its peer for IPv4, its peer6 for IPv6), wrong destination
 * (outside our IPv6 subnet), too big (packet too big back to the peer), hop limit. */
static void inbound6(struct worker *w, uint8_t *pkt, size_t len, const union ovl_sa *from) {
  const struct ovl_engine *e = w->e;
  size_t avail = len < e->slot ? len : e->slot;
  struct ovl_ipv6_info info;
  if (ovl_ipv6_validate(pkt, len, avail, &info) != OVL_IPV6_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return;
  }
  const struct ovl_route6 *r = ovl_rtable6_lookup(table6(w), ovl_ipv6_src(pkt));
  bool owner = r != NULL && (from->sa.sa_family == AF_INET6
                                 ? r->has_peer6 && memcmp(r->peer6, &from->v6.sin6_addr, 16) == 0
                                 : r->peer == ntohl(from->v4.sin_addr.s_addr));
  if (!owner) {
    w->acc[OVL_EC_DROP_SPOOFED]++;
    return;
  }
  if (!in_subnet6(e, ovl_ipv6_dst(pkt))) {
    w->acc[OVL_EC_DROP_WRONG_DST]++;
    return;
  }
  if (len > e->tun_mtu) {
    w->acc[OVL_EC_DROP_TOO_BIG]++;
    ptb_to_peer(w, pkt, avail, &info, from);
    return;
  }
  if (!ovl_ipv6_decrement_hop_limit(pkt)) { /* the whole packet is present: len <= tun_mtu <= slot */
    w->acc[OVL_EC_DROP_TTL]++;
    icmp6_error(w, pkt, len, &info, OVL_ICMP6_TIME_EXCEEDED, OVL_ICMP6_HOP_LIMIT, 0);
    return;
  }
  deliver(w, pkt, len);
}

/* js-engine.ts inbound(): one datagram of `len` bytes (its real length; the buffer holds
 * min(len, slot) of them) from `from` (fromlen bytes of it), over IPv4 or IPv6. */
void inbound(struct worker *w, const struct ovl_rtable *t, uint8_t *pkt, size_t len,
                    const union ovl_sa *from, socklen_t fromlen) {
  const struct ovl_engine *e = w->e;
  w->acc[OVL_EC_RX]++;
  w->acc[OVL_EC_RX_BYTES] += len;
  bool over6 = fromlen >= (socklen_t)sizeof(struct sockaddr_in6) && from->sa.sa_family == AF_INET6;
  uint32_t sender = 0;
  if (over6) {
    if (!e->ipv6 || ntohs(from->v6.sin6_port) != e->port ||
        !ovl_rtable6_is_peer6(table6(w), (const uint8_t *)&from->v6.sin6_addr)) {
      w->acc[OVL_EC_DROP_UNKNOWN_PEER]++;
      return;
    }
  } else {
    sender = ntohl(from->v4.sin_addr.s_addr);
    if (fromlen < (socklen_t)sizeof(struct sockaddr_in) || from->sa.sa_family != AF_INET ||
        ntohs(from->v4.sin_port) != e->port || !ovl_rtable_is_peer(t, sender)) {
      w->acc[OVL_EC_DROP_UNKNOWN_PEER]++;
      return;
    }
  }
  if (e->ipv6 && len > 0 && (pkt[0] >> 4) == 6) {
    inbound6(w, pkt, len, from);
    return;
  }
  /* Reads at most 60 header bytes, all present: the buffer holds min(len, slot >= 576). */
  if (ovl_ipv4_validate(pkt, len) != OVL_IPV4_OK) {
    w->acc[OVL_EC_DROP_MALFORMED]++;
    return;
  }
  uint32_t owner;
  /* inner IPv4 rides the IPv4 underlay only: over IPv6 no route can point at the sender */
  if (over6 || !ovl_rcache_lookup(&w->cache, t, ovl_ipv4_src(pkt), &owner) || owner != sender) {
    w->acc[OVL_EC_DROP_SPOOFED]++;
    return;
  }
  if ((ovl_ipv4_dst(pkt) & e->subnet_mask) != e->subnet) {
    w->acc[OVL_EC_DROP_WRONG_DST]++;
    return;
  }
  if (len > e->tun_mtu) {
    w->acc[OVL_EC_DROP_TOO_BIG]++;
    /* path MTU discovery (RFC 1191) with DF set: fragmentation needed (next-hop MTU = our
     * TUN MTU) back over UDP to the peer it came from, as ptb_to_peer for inner IPv6;
     * quotes only the min(len, slot) bytes present. Without DF dropped silently. */
    if (ovl_ipv4_dont_fragment(pkt)) {
      size_t n = icmp_build(w, pkt, len < e->slot ? len : e->slot, OVL_ICMP_DEST_UNREACH, OVL_ICMP_FRAG_NEEDED,
                            (uint16_t)e->tun_mtu);
      if (n) udp_reply(w, from, w->icmp, n);
    }
    return;
  }
  /* from here on the whole packet is in the buffer: len <= tun_mtu <= slot */
  if (!ttl_step(w, pkt, len)) return;
  deliver(w, pkt, len);
}
