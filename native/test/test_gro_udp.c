/* UDP runs in the GRO table (offload.c): datagrams of one flow written into the TUN as one
 * UDP super-packet (gso_type UDP_L4). The property: cutting the super-packet that
 * coalescing made (ovl_uso_segment with the virtio header ovl_gro_finish returned) gives
 * back exactly the datagrams that were coalesced, byte for byte, for IPv4 with and without
 * DF and for IPv6, with full or partial checksums; plus every refusal (ids out of order
 * without DF, other ports or addresses, a larger datagram after the first, anything after
 * a short one, checksum 0, a bad checksum, a wrong UDP length, a fragment) and the flow
 * table telling UDP runs from TCP ones. */
#include "overlayd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "tap.h"
#include "testpkt.h"

static uint8_t super[70000], dgrams[140000], joined[70000], again[140000];
static uint32_t lens[OVL_GSO_SEGS_MAX], lens2[OVL_GSO_SEGS_MAX];

/* A UDP super-packet of `payload` bytes at super: IPv4 (DF or not, id 0xfff0 so that ids
 * wrap) or IPv6, lengths consistent. Returns its length. */
static size_t make_super(int v6, int df, size_t payload) {
  size_t iphl = v6 ? 40 : 20, len = iphl + 8 + payload;
  if (v6) {
    for (size_t i = 0; i < len; i++) super[i] = (uint8_t)rnd();
    super[0] = 0x60;
    wr16(super + 4, (uint32_t)(len - 40));
    super[6] = 17;
    super[7] = 64;
  } else {
    make_pkt(super, len, 5, 17, 64, 0x0af40102, 0x0af40202);
    wr16(super + 4, 0xfff0);
    wr16(super + 6, df ? 0x4000 : 0);
    wr16(super + 10, ref_header_checksum(super, 20));
  }
  wr16(super + iphl + 4, (uint32_t)(len - iphl));
  return len;
}

static struct ovl_vnet_hdr uso_hdr(int v6, unsigned gso) {
  uint16_t iphl = (uint16_t)(v6 ? 40 : 20);
  return (struct ovl_vnet_hdr){.flags = OVL_VNET_F_NEEDS_CSUM, .gso_type = OVL_VNET_GSO_UDP_L4, .hdr_len = (uint16_t)(iphl + 8),
                               .gso_size = (uint16_t)gso, .csum_start = iphl, .csum_offset = 6};
}

/* Sets datagram s's UDP checksum to its pseudo-header sum (what a peer that leaves it
 * partial sends), via ovl_csum_partial's own rule checked against a reference below. */
static void make_partial(uint8_t *s, size_t len, int v6) {
  size_t iphl = v6 ? 40 : 20;
  uint8_t ps[40];
  size_t n = tp_pseudo_header(ps, s, len, iphl, v6, 17);
  wr16(s + iphl + 6, ref_sum(ps, n));
}

/* cut -> coalesce -> cut: the datagrams come back unchanged. */
static void round_trip(int v6, int df, size_t payload, unsigned gso, int partial) {
  size_t len = make_super(v6, df, payload);
  struct ovl_vnet_hdr h = uso_hdr(v6, gso);
  int n = ovl_uso_segment(super, len, &h, dgrams, sizeof(dgrams), lens, OVL_GSO_SEGS_MAX);
  const char *fam = v6 ? "IPv6" : df ? "IPv4 DF" : "IPv4 no DF";
  if (n <= 0) {
    tap_ok(0, "%s: ovl_uso_segment of %zu bytes gso %u: %d", fam, payload, gso, n);
    return;
  }
  static uint8_t orig[140000];
  size_t total = 0;
  for (int i = 0; i < n; i++) total += lens[i];
  if (partial)
    for (int i = 0, o = 0; i < n; o += (int)lens[i], i++) make_partial(dgrams + o, lens[i], v6);
  memcpy(orig, dgrams, total);
  struct ovl_gro g;
  ovl_gro_init(&g);
  int ok = 1, want = partial ? OVL_GRO_PARTIAL : OVL_GRO_VERIFIED;
  size_t o = 0;
  for (int i = 0; i < n; o += lens[i], i++) {
    ok &= ovl_gro_check(dgrams + o, lens[i]) == want;
    ok &= ovl_gro_add(&g, dgrams + o, lens[i]);
  }
  if (!ok || (int)g.nseg != n) {
    tap_ok(0, "%s %zu bytes gso %u%s: every datagram taken (%u of %d)", fam, payload, gso, partial ? " partial" : "", g.nseg, n);
    return;
  }
  struct ovl_vnet_hdr fh;
  struct iovec iov[OVL_GRO_SEGS_MAX];
  uint32_t cnt;
  size_t slen = ovl_gro_finish(&g, &fh, iov, &cnt);
  size_t j = 0;
  for (uint32_t i = 0; i < cnt; i++) {
    memcpy(joined + j, iov[i].iov_base, iov[i].iov_len);
    j += iov[i].iov_len;
  }
  ok &= j == slen && slen == total - (size_t)(n - 1) * (v6 ? 48u : 28u);
  if (n > 1) {
    ok &= fh.gso_type == OVL_VNET_GSO_UDP_L4 && fh.flags == OVL_VNET_F_NEEDS_CSUM && fh.gso_size == gso &&
          fh.csum_start == (v6 ? 40 : 20) && fh.csum_offset == 6 && fh.hdr_len == (v6 ? 48 : 28);
    int m = ovl_uso_segment(joined, slen, &fh, again, sizeof(again), lens2, OVL_GSO_SEGS_MAX);
    ok &= m == n && memcmp(lens, lens2, (size_t)n * sizeof(lens[0])) == 0;
    /* partial inputs come back with full checksums (the kernel finishes them the same way):
     * compare with the full cut of the original super-packet */
    static uint8_t full[140000];
    int m0 = ovl_uso_segment(super, len, &h, full, sizeof(full), lens2, OVL_GSO_SEGS_MAX);
    ok &= m0 == n && memcmp(again, full, total) == 0 && (partial || memcmp(full, orig, total) == 0);
  } else {
    ok &= fh.gso_type == 0 && fh.flags == 0 && memcmp(joined, orig, total) == 0;
  }
  ovl_gro_restore(&g);
  ok &= memcmp(g.segs[0], orig, lens[0]) == 0; /* restore puts the first datagram back as received */
  tap_ok(ok, "%s, %zu payload bytes, gso_size %u%s: %d datagrams -> one UDP_L4 super-packet of %zu bytes -> cut again = the same datagrams",
         fam, payload, gso, partial ? ", checksums partial" : "", n, slen);
}

/* A valid datagram: IPv4 (df) or IPv6, ports sp/dp, id, payload bytes; full checksum. */
static size_t dgram(uint8_t *s, int v6, int df, uint16_t id, uint16_t sp, uint16_t dp, size_t payload) {
  size_t len = make_super(v6, df, payload), iphl = v6 ? 40 : 20;
  if (!v6) {
    super[1] = 0; /* TOS (make_pkt leaves it random): the same in every datagram of a flow */
    wr16(super + 4, id);
    wr16(super + 10, ref_header_checksum(super, 20));
  }
  wr16(super + iphl, sp);
  wr16(super + iphl + 2, dp);
  memcpy(s, super, len);
  /* full checksum by the reference: partial value + the sum over the UDP part */
  make_partial(s, len, v6);
  uint32_t ps = rd16(s + iphl + 6);
  wr16(s + iphl + 6, 0);
  uint64_t sum = ps + ref_sum(s + iphl, len - iphl);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  uint16_t c = (uint16_t)~sum;
  wr16(s + iphl + 6, c ? c : 0xffff);
  return len;
}

static void refusals(void) {
  static uint8_t a[2000], b[2000], c[2000];
  struct ovl_gro g;
  size_t la = dgram(a, 0, 1, 100, 5000, 6000, 1000), lb;
  tap_ok(ovl_gro_check(a, la) == OVL_GRO_VERIFIED, "a valid IPv4 DF datagram: verified");
  /* ids without DF */
  la = dgram(a, 0, 0, 100, 5000, 6000, 1000);
  lb = dgram(b, 0, 0, 102, 5000, 6000, 1000);
  ovl_gro_init(&g);
  tap_ok(ovl_gro_check(a, la) == OVL_GRO_VERIFIED && ovl_gro_add(&g, a, la) && !ovl_gro_add(&g, b, lb),
         "no DF: id 102 after 100 does not join (ids must be consecutive)");
  lb = dgram(b, 0, 0, 101, 5000, 6000, 1000);
  tap_ok(ovl_gro_add(&g, b, lb) && g.nseg == 2, "no DF: id 101 after 100 joins");
  /* ports, size, short closes */
  ovl_gro_init(&g);
  la = dgram(a, 0, 1, 1, 5000, 6000, 1000);
  lb = dgram(b, 0, 1, 2, 5001, 6000, 1000);
  tap_ok(ovl_gro_add(&g, a, la) && !ovl_gro_add(&g, b, lb), "another source port: not the same run");
  lb = dgram(b, 0, 1, 2, 5000, 6000, 1001);
  tap_ok(!ovl_gro_add(&g, b, lb), "a datagram larger than the first: refused (the cut is at the first one's size)");
  lb = dgram(b, 0, 1, 2, 5000, 6000, 999);
  size_t lc = dgram(c, 0, 1, 3, 5000, 6000, 999);
  tap_ok(ovl_gro_add(&g, b, lb) && !ovl_gro_add(&g, c, lc), "a shorter datagram joins and ends the run");
  /* checksums */
  la = dgram(a, 0, 1, 1, 5000, 6000, 1000);
  wr16(a + 26, 0);
  tap_ok(ovl_gro_check(a, la) == 0, "checksum 0 (none): not taken");
  la = dgram(a, 0, 1, 1, 5000, 6000, 1000);
  a[500] ^= 1;
  tap_ok(ovl_gro_check(a, la) == 0, "one payload bit flipped: the checksum fails, not taken");
  la = dgram(a, 0, 1, 1, 5000, 6000, 1000);
  make_partial(a, la, 0);
  tap_ok(ovl_gro_check(a, la) == OVL_GRO_PARTIAL, "field = pseudo-header sum: taken as partial");
  la = dgram(a, 0, 1, 1, 5000, 6000, 1000);
  wr16(a + 24, (uint32_t)(la - 20 - 1));
  tap_ok(ovl_gro_check(a, la) == 0, "UDP length one short of the packet: not taken");
  la = dgram(a, 0, 1, 1, 5000, 6000, 1000);
  wr16(a + 6, 0x6000); /* DF + MF */
  wr16(a + 10, ref_header_checksum(a, 20));
  tap_ok(ovl_gro_check(a, la) == 0, "a first fragment (MF): not taken");
  la = dgram(a, 1, 1, 0, 5000, 6000, 1000);
  tap_ok(ovl_gro_check(a, la) == OVL_GRO_VERIFIED, "IPv6: verified");
  wr16(a + 4, (uint32_t)(la - 40 + 1));
  tap_ok(ovl_gro_check(a, la) == 0, "IPv6 payload length not the packet's: not taken");
  /* the table: a UDP run and a TCP flow on the same addresses and ports are different flows */
  static struct ovl_gro_table t;
  t.used = 0;
  ovl_gro_table_init(&t);
  la = dgram(a, 0, 1, 1, 5000, 6000, 1000);
  uint32_t s = ovl_gro_table_slot(&t);
  tap_ok(ovl_gro_add(&t.flows[s], a, la) && ovl_gro_table_find(&t, a, la) == (int)s, "the table finds the UDP run of the datagram's flow");
  memcpy(b, a, la);
  b[9] = 6; /* TCP, same addresses and ports */
  tap_ok(ovl_gro_table_find(&t, b, la) == OVL_GRO_FIND_NONE, "a TCP packet of the same addresses and ports: not the UDP run");
  memcpy(b, a, la);
  wr16(b + 6, 0x0010); /* a later fragment */
  tap_ok(ovl_gro_table_find(&t, b, la) == OVL_GRO_FIND_NONE, "a later UDP fragment (no ports): no run, written as it came");
}

int main(void) {
  static const unsigned gsos[] = {1, 8, 100, 1232, 1400, 1452};
  for (int v6 = 0; v6 <= 1; v6++)
    for (int df = 1; df >= (v6 ? 1 : 0); df--)
      for (size_t k = 0; k < sizeof(gsos) / sizeof(gsos[0]); k++)
        for (int partial = 0; partial <= 1; partial++) {
          unsigned gso = gsos[k];
          size_t max = (size_t)gso * (gso < 100 ? 60 : 40);
          size_t payload = gso + rnd() % (max > 60000 ? 60000 - gso : max - gso);
          round_trip(v6, df, payload, gso, partial);
        }
  round_trip(0, 1, 1400, 1400, 0);     /* exactly one datagram: written as it came */
  round_trip(0, 1, 1400 * 46, 1400, 1); /* 46 full datagrams, no short one */
  refusals();
  return tap_done();
}
