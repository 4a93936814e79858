/*
 * The native engine's TUN side (engine_int.h): reads with or without a virtio_net_hdr
 * (super-packets cut by ovl_gso_cut into header stubs + slices of the read, segment 0 in
 * place), handed to the policy one packet at a time; writes into the TUN, plain or
 * coalesced per TCP flow by the GRO table (offload.c) and written as one super-packet
 * with a virtio_net_hdr. An offload the TUN refuses at run time is off on this queue for
 * a back-off (backoff.c). Runs on the worker's thread.
 */
#include "engine_int.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

/* One write into the TUN (with a virtio_net_hdr first when the queue has one: h, or all
 * zero). Returns 0 or the errno of the failure (nothing counted). */
static int tun_write_raw(struct worker *w, const struct ovl_vnet_hdr *h, const uint8_t *pkt, size_t len) {
  static const struct ovl_vnet_hdr none;
  struct iovec iov[2] = {{.iov_base = (void *)(h ? h : &none), .iov_len = OVL_VNET_HDR_LEN},
                         {.iov_base = (void *)pkt, .iov_len = len}};
  size_t want = len + (w->vnet ? OVL_VNET_HDR_LEN : 0);
  for (int attempt = 0; attempt < 3; attempt++) { /* retried only after EINTR */
    ssize_t r = w->vnet ? writev(w->tun_fd, iov, 2) : write(w->tun_fd, pkt, len);
    if (r == (ssize_t)want) return 0;
    if (r >= 0) return EIO; /* a packet fd writes all or nothing: a short write is a broken packet */
    if (errno == EINTR) continue;
    return errno;
  }
  return EINTR;
}

static void count_write_error(struct worker *w, int err, uint64_t n) {
  if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS)
    w->acc[OVL_EC_DROP_RING_FULL] += n;
  else
    w->acc[OVL_EC_TUN_WRITE_ERRORS] += n;
}

/* tun_write; `counted`: a partial checksum of this packet is already counted (deliver()
 * counted it when it joined a GRO run). */
static void tun_write_one(struct worker *w, uint8_t *pkt, size_t len, bool counted) {
  /* a checksum the peer left partial: NEEDS_CSUM for the kernel, or finished here when
   * the queue writes without a virtio header */
  struct ovl_vnet_hdr h;
  bool partial = ovl_csum_partial(pkt, len, &h);
  if (partial && !w->vnet) {
    (void)ovl_vnet_csum_finish(pkt, len, &h); /* offsets within len: ovl_csum_partial checked */
    if (!counted) w->acc[OVL_EC_CSUM_PARTIAL_RECEIVED]++;
  }
  int err = tun_write_raw(w, partial && w->vnet ? &h : NULL, pkt, len);
  if (err == 0) {
    w->acc[OVL_EC_TUN_TX]++;
    if (partial && w->vnet && !counted) w->acc[OVL_EC_CSUM_PARTIAL_RECEIVED]++;
  } else {
    count_write_error(w, err, 1);
  }
}

void tun_write(struct worker *w, uint8_t *pkt, size_t len) { tun_write_one(w, pkt, len, false); }

/* Writes one run of the GRO table, if it holds one: one super-packet, or its one packet
 * plainly; then the flow is empty. A TUN that refuses the GSO write (EINVAL) gets the
 * original packets, and no GSO writes from this queue until its back-off is over
 * (gro_gate); runs still in the table then go out packet by packet too. */
static void flush_flow(struct worker *w, struct ovl_gro *g) {
  if (g->nseg == 0) return;
  if (g->nseg == 1 || !w->tun_gro) {
    for (uint32_t i = 0; i < g->nseg; i++) tun_write_one(w, g->segs[i], g->seg_lens[i], true);
  } else {
    struct ovl_vnet_hdr h;
    struct iovec iov[1 + OVL_GRO_SEGS_MAX];
    uint32_t n;
    size_t len = ovl_gro_finish(g, &h, iov + 1, &n);
    iov[0] = (struct iovec){.iov_base = &h, .iov_len = OVL_VNET_HDR_LEN};
    int err = 0;
    for (int attempt = 0; attempt < 3; attempt++) { /* retried only after EINTR */
      ssize_t r = writev(w->tun_fd, iov, (int)n + 1);
      err = r == (ssize_t)(len + OVL_VNET_HDR_LEN) ? 0 : r >= 0 ? EIO : errno;
      if (err != EINTR) break;
    }
    if (err == 0) {
      w->acc[OVL_EC_TUN_TX] += g->nseg;
      w->acc[OVL_EC_TUN_GRO_WRITES]++;
    } else if (err == EINVAL && g->proto == OVL_PROTO_UDP) {
      /* a TUN without UDP_L4 writes (before Linux 6.2): datagrams are written one by one
       * from now on, on this queue; TCP runs are not affected */
      w->udp_runs = false;
      ovl_gro_restore(g);
      for (uint32_t i = 0; i < g->nseg; i++) tun_write_one(w, g->segs[i], g->seg_lens[i], true);
    } else if (err == EINVAL) { /* off for a back-off (a transient path MTU drop does this too) */
      if (ovl_offload_gate_fail(&w->gro_gate, mono_ns())) w->acc[OVL_EC_TUN_GRO_FALLBACK]++;
      w->tun_gro = false;
      ovl_gro_restore(g);
      for (uint32_t i = 0; i < g->nseg; i++) tun_write_one(w, g->segs[i], g->seg_lens[i], true);
    } else {
      count_write_error(w, err, g->nseg);
    }
  }
  ovl_gro_init(g);
}

/* Writes every run of the GRO table (end of a batch of receives: they point into udp_buf). */
void gro_flush(struct worker *w) {
  struct ovl_gro_table *t = w->gro;
  if (t == NULL) return;
  for (uint32_t i = 0; i < t->used; i++) flush_flow(w, &t->flows[i]);
  ovl_gro_table_init(t);
}

/* IPv4 or IPv6 with UDP right after the fixed header (a packet ovl_gro_check took). */
static bool is_udp(const uint8_t *pkt) { return (pkt[0] >> 4) == 4 ? pkt[9] == OVL_PROTO_UDP : pkt[6] == OVL_PROTO_UDP; }

/* An inbound packet (IPv4 or IPv6) that passed every check: into the run of its TCP flow
 * or UDP flow in the GRO table, or written. Per flow the order is kept: a packet that does not join
 * its flow's run goes after that run (and one whose flow cannot be told, after all runs). */
void deliver(struct worker *w, uint8_t *pkt, size_t len) {
  struct ovl_gro_table *t = w->gro;
  if (t == NULL) {
    tun_write(w, pkt, len);
    return;
  }
  int f = ovl_gro_table_find(t, pkt, len);
  int how = w->tun_gro ? ovl_gro_check(pkt, len) : 0;
  if (how != 0 && !w->udp_runs && is_udp(pkt)) how = 0;
  if (how != 0) { /* eligible: TCP with ports, never FIND_ALL */
    if (f >= 0 && ovl_gro_add(&t->flows[f], pkt, len)) {
      if (how == OVL_GRO_PARTIAL) w->acc[OVL_EC_CSUM_PARTIAL_RECEIVED]++;
      return;
    }
    if (f >= 0) {
      flush_flow(w, &t->flows[f]);
    } else {
      f = (int)ovl_gro_table_slot(t);
      flush_flow(w, &t->flows[f]); /* a victim when the table is full; else empty */
    }
    (void)ovl_gro_add(&t->flows[f], pkt, len); /* an empty flow takes any eligible packet */
    if (how == OVL_GRO_PARTIAL) w->acc[OVL_EC_CSUM_PARTIAL_RECEIVED]++;
    return;
  }
  if (f == OVL_GRO_FIND_ALL)
    gro_flush(w);
  else if (f >= 0)
    flush_flow(w, &t->flows[f]);
  tun_write(w, pkt, len);
}

/* One packet read with a virtio_net_hdr, at pkt (len bytes): finished, or cut, then
 * queued. A super-packet is cut without copying (ovl_gso_cut): segment 0 is rewritten in
 * place (its headers over the super-packet's, its payload right behind them), every
 * other segment is a header stub in w->stubs plus a slice of pkt. pkt must therefore stay
 * untouched until udp_flush (tun_burst reads the next packet behind it). */
static void outbound_vnet(struct worker *w, const struct ovl_rtable *t, const struct ovl_vnet_hdr *h, uint8_t *pkt,
                          size_t len) {
  if (h->gso_type == OVL_VNET_GSO_NONE) {
    if (len > w->e->slot) {
      w->acc[OVL_EC_DROP_TUN_OVERSIZE]++;
      return;
    }
    /* a partial checksum goes out as it is to a peer that takes them (the pseudo-header
     * sum the kernel left is what that peer recognises), else it is finished here */
    bool keep = ovl_vnet_csum_is_partial(pkt, len, h) && peer_takes_partial(w, t, pkt, len);
    if (!keep && ovl_vnet_csum_finish(pkt, len, h) != 0) {
      w->acc[OVL_EC_TUN_RX]++;
      w->acc[OVL_EC_DROP_MALFORMED]++;
      return;
    }
    struct dest d;
    if (outbound(w, t, pkt, len, &d) == OVL_EC_TX && keep) w->acc[OVL_EC_CSUM_PARTIAL_SENT]++;
    return;
  }
  struct ovl_gso_seg *sg = w->segs;
  /* UDP super-packets (gso_type UDP_L4, TUN_F_USO4/6) are cut by uso.c, TCP ones by offload.c */
  const bool uso = (h->gso_type & ~OVL_VNET_GSO_ECN) == OVL_VNET_GSO_UDP_L4;
  const unsigned cut = peer_takes_partial(w, t, pkt, len) ? OVL_CUT_PARTIAL_CSUM : 0;
  int n = (uso ? ovl_uso_cut : ovl_gso_cut)(pkt, len, h, w->stubs + w->stub_used, STUB_BYTES - w->stub_used, sg,
                                            OVL_GSO_SEGS_MAX, cut);
  if (n < 0) {
    w->acc[OVL_EC_TUN_RX]++;
    w->acc[n == -E2BIG || n == -ENOBUFS ? OVL_EC_DROP_TUN_OVERSIZE : OVL_EC_DROP_MALFORMED]++;
    return;
  }
  size_t len0 = sg[0].hdr_len + sg[0].payload_len;
  if (len0 > w->e->tun_mtu) { /* the first segment is the largest: a gso_size no TCP stack
                                 on this TUN picks; never send more than MTU */
    w->acc[OVL_EC_TUN_RX]++;
    w->acc[OVL_EC_DROP_TUN_OVERSIZE]++;
    return;
  }
  w->stub_used += (size_t)n * sg[0].hdr_len;
  w->acc[OVL_EC_TUN_GSO_READS]++;
  if (uso) w->acc[OVL_EC_TUN_USO_READS]++;
  /* segment 0 in one piece where it was read (the other stubs are already written from
   * the original headers), so that outbound() sees a whole packet */
  memcpy(pkt, sg[0].hdr, sg[0].hdr_len);
  /* validation, route lookup and the TTL rule once per super-packet: on its first segment */
  struct dest d = {0};
  verdict_t v = outbound(w, t, pkt, len0, &d);
  for (int i = 1; i < n; i++) outbound_same(w, &sg[i], v, &d);
  if (v == OVL_EC_TX && cut) w->acc[OVL_EC_CSUM_PARTIAL_SENT] += (uint64_t)n;
}

bool tun_burst(struct worker *w, const struct ovl_rtable *t) {
  const uint32_t slot = w->e->slot;
  const size_t need = w->vnet ? VNET_NEED : slot;
  size_t used = 0; /* arena bytes holding this burst's packets */
  uint32_t n = 0, reads = 0;
  w->t6 = NULL;
  bool full = false;
  assert(w->ntx == 0 && w->niov == 0); /* nothing queued points into the arenas: reused from the start */
  w->stub_used = 0;
  while (reads < BATCH) {
    if (used + need > w->tun_arena || !udp_tx_room(w) || w->stub_used + STUB_NEED > STUB_BYTES) {
      full = true;
      break;
    }
    uint8_t *buf = w->tun_buf + used;
    struct ovl_vnet_hdr h;
    struct iovec iov[2];
    if (w->vnet) {
      iov[0] = (struct iovec){.iov_base = &h, .iov_len = OVL_VNET_HDR_LEN};
      iov[1] = (struct iovec){.iov_base = buf, .iov_len = SUPER_MAX};
    } else {
      iov[0] = (struct iovec){.iov_base = buf, .iov_len = slot};
      iov[1] = (struct iovec){.iov_base = w->scratch, .iov_len = SCRATCH_BYTES};
    }
    ssize_t r = readv(w->tun_fd, iov, 2);
    reads++;
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      w->acc[OVL_EC_TUN_READ_ERRORS]++;
      if (ovl_io_error_is_fatal(err) || ++w->tun_errors_in_row >= ERRORS_IN_ROW_MAX) {
        set_fatal(w, err, "read(tun)");
        break;
      }
      continue;
    }
    if (r == 0) { /* EOF: a TUN never delivers an empty packet; a test's socketpair closed */
      set_fatal(w, ENOTCONN, "read(tun)");
      break;
    }
    w->tun_errors_in_row = 0;
    n++;
    if (w->vnet) {
      if ((size_t)r <= OVL_VNET_HDR_LEN) {
        w->acc[OVL_EC_TUN_RX]++;
        w->acc[OVL_EC_DROP_MALFORMED]++;
        continue;
      }
      size_t len = (size_t)r - OVL_VNET_HDR_LEN;
      used += len;
      outbound_vnet(w, t, &h, buf, len);
      continue;
    }
    if ((size_t)r > slot) {
      w->acc[OVL_EC_DROP_TUN_OVERSIZE]++;
      continue;
    }
    used += (size_t)r;
    struct dest d;
    (void)outbound(w, t, buf, (size_t)r, &d);
  }
  if (n) w->acc[OVL_EC_TUN_BURSTS]++;
  return (reads == BATCH || full) && w->fatal_err == 0;
}
