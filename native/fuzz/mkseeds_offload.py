#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_offload (see the record format in fuzz_offload.c): sequences
of receives from a peer (single datagrams and UDP GRO receives of several), ends of bursts and
TUN reads with virtio_net_hdr fields. Covers maximal TCP options (40 bytes: timestamps + 3
SACK blocks; 24: timestamps + 1 SACK block), IPv4 options, 1-byte payloads, sequence
wrap-around, the 64-segment GRO limit, super-packets of 64 KB, TTL 1 and no route, too
small a gso_size, a UDP datagram whose checksum computes to 0, USO super-packets (UDP,
IPv4 and IPv6, gso_type 5), and more ICMP errors than
the rate limit's burst, 4 interleaved flows (IPv4; IPv6 and mixed handed straight to
deliver()), partial checksums both ways (received, read from the TUN, routes with and
without OVL_ROUTE_PARTIAL_CSUM). Every record asks for its lengths and checksums to be repaired
(flags 7) so that mutations still reach the offload code. Usage: mkseeds_offload.py DIR"""
import os, struct, sys

PEER_POD, OWN_POD, OTHER = bytes([10, 244, 200, 7]), bytes([10, 244, 2, 5]), bytes([10, 244, 77, 1])

def csum_sum(b, s=0):
    if len(b) % 2: b += b'\0'
    s += sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    return s

def ip(src, dst, proto, l4, ttl=64, options=b'', ident=1, df=True):
    ihl = 5 + len(options) // 4
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, ihl * 4 + len(l4), ident, 0x4000 if df else 0, ttl, proto, 0, src, dst) + options
    h = h[:10] + struct.pack('!H', (~csum_sum(h)) & 0xffff) + h[12:]
    return h + l4

def l4_csum(src, dst, proto, l4, off):
    ph = src + dst + struct.pack('!BBH', 0, proto, len(l4))
    c = (~csum_sum(l4, csum_sum(ph))) & 0xffff
    return l4[:off] + struct.pack('!H', c) + l4[off + 2:]

def tcp_opts(n):
    """n option bytes: NOP NOP TS, then NOP NOP SACK with as many blocks as fit, NOP padding."""
    o = b''
    if n >= 12: o = b'\x01\x01\x08\x0a' + struct.pack('!II', 777, 99)
    if n >= 24:
        k = (n - 14) // 8
        o += b'\x01\x01\x05' + bytes([2 + 8 * k]) + b''.join(struct.pack('!II', 1000 * i, 1000 * i + 500) for i in range(k))
    return o + b'\x01' * (n - len(o))

def tcp(src, dst, seq, payload, flags=0x10, optlen=12, ttl=64, ipopts=b'', ident=1, partial=False, sport=40000):
    opts = tcp_opts(optlen)
    h = struct.pack('!HHIIBBHHH', sport, 5001, seq & 0xffffffff, 0x01020304, (5 + len(opts) // 4) << 4, flags, 502, 0, 0) + opts
    seg = h + payload
    if partial:  # as a TSO stack leaves it: the field holds the pseudo-header sum
        ph = src + dst + struct.pack('!BBH', 0, 6, len(seg))
        seg = seg[:16] + struct.pack('!H', csum_sum(ph)) + seg[18:]
    else:
        seg = l4_csum(src, dst, 6, seg, 16)
    return ip(src, dst, 6, seg, ttl=ttl, options=ipopts, ident=ident)

PEER6, OWN6 = bytes.fromhex('fd000af400000007') + bytes(7) + b'\x07', bytes.fromhex('fd000af400000002') + bytes(7) + b'\x05'

def tcp6(seq, payload, flags=0x10, optlen=12, sport=40000, label=0x12345):
    opts = tcp_opts(optlen)
    seg = struct.pack('!HHIIBBHHH', sport, 5001, seq & 0xffffffff, 0x01020304, (5 + len(opts) // 4) << 4, flags, 502, 0, 0) + opts + payload
    ph = PEER6 + OWN6 + struct.pack('!IxxxB', len(seg), 6)
    seg = seg[:16] + struct.pack('!H', (~csum_sum(seg, csum_sum(ph))) & 0xffff) + seg[18:]
    return struct.pack('!IHBB', 6 << 28 | label, len(seg), 6, 63) + PEER6 + OWN6 + seg

def rec(kind, data, arg=0, flags=7):
    return struct.pack('<BBHH', kind, flags, arg, len(data)) + data

def vnet(gso_type=1, hdr_len=0, gso_size=0, csum_start=20, csum_offset=16, flags=1):
    return struct.pack('=BBHHHH', flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)

def pay(n, seed=0):
    return bytes((i * 7 + seed) & 0xff for i in range(n))

def inbound_run(n, mss, optlen=12, seq0=1000, last_flags=0x18, ipopts=b''):
    return [tcp(PEER_POD, OWN_POD, seq0 + i * mss, pay(mss, i), flags=last_flags if i == n - 1 else 0x10,
                optlen=optlen, ipopts=ipopts, ident=i) for i in range(n)]

def one_by_one(pkts):
    return b''.join(rec(0, p) for p in pkts) + rec(1, b'')

def continued(first, payloads):
    """first, then each payload as its next segment (flag 8: the harness copies the headers)"""
    return rec(0, first) + b''.join(rec(0, p, flags=7 | 8) for p in payloads) + rec(1, b'')

def gro_receive(pkts):
    return rec(0, b''.join(pkts), arg=len(pkts[0])) + rec(1, b'')

def super_packet(payload_len, mss, optlen=12, ttl=64, dst=PEER_POD, ipopts=b'', seq=5000):
    p = tcp(OWN_POD, dst, seq, pay(payload_len), optlen=optlen, ttl=ttl, ipopts=ipopts, partial=True)
    ihl = 20 + len(ipopts)
    return rec(2, vnet(1, ihl + 20 + optlen, mss, ihl, 16) + p, flags=3)

udp_payload = bytearray(pay(333))
u = struct.pack('!HHHH', 5000, 53, 8 + len(udp_payload), 0) + bytes(udp_payload)
ph = OWN_POD + PEER_POD + struct.pack('!BBH', 0, 17, len(u))
# make the datagram sum to 0xffff (checksum 0 -> stored 0xffff): adjust payload word 0
u = u[:6] + struct.pack('!H', csum_sum(ph)) + u[8:]
u = u[:8] + b'\0\0' + u[10:]
u = u[:8] + struct.pack('!H', 0xffff - csum_sum(u)) + u[10:]
udp_zero = ip(OWN_POD, PEER_POD, 17, u)

def interleaved(firsts, n, mss, direct=False):
    """each first packet in its own flow slot, then n next segments of every flow in turn
    (flag 8 + slot in bits 6-7); direct: sender 3 (past the inbound policy, as IPv6 is)"""
    who = 0x30 if direct else 0
    out = b''.join(rec(0, f, flags=7 | who | (k << 6)) for k, f in enumerate(firsts))
    for i in range(n):
        out += b''.join(rec(0, pay(mss, i * 4 + k), flags=7 | 8 | who | (k << 6)) for k in range(len(firsts)))
    return out + rec(1, b'')

seeds = {
    'gro-interleaved-4': interleaved([tcp(PEER_POD, OWN_POD, 1000 * k, pay(1000, k), sport=40000 + k) for k in range(4)], 5, 1000),
    'gro-v6-interleaved-4': interleaved([tcp6(1000 * k, pay(1200, k), sport=40000 + k) for k in range(4)], 5, 1200, direct=True),
    'gro-v4-v6-direct': interleaved([tcp6(7, pay(900), sport=41000), tcp(PEER_POD, OWN_POD, 7, pay(900), sport=41000),
                                     tcp6(9, pay(900), sport=41001, optlen=40)], 4, 900, direct=True),
    'gro-v6-udp-gro-receive': rec(0, b''.join(tcp6(5000 + 1100 * i, pay(1100, i)) for i in range(12)), arg=1100 + 72,
                                  flags=7 | 0x30) + rec(1, b''),
    'gro-max-options': one_by_one(inbound_run(4, 1000, optlen=40)),
    'gro-ts-sack': one_by_one(inbound_run(3, 1200, optlen=24)),
    'gro-udp-gro-receive': gro_receive(inbound_run(10, 1000, last_flags=0x10)),
    'gro-udp-gro-max-options': gro_receive(inbound_run(8, 1392, optlen=40, last_flags=0x10)),
    'gro-1-byte': gro_receive(inbound_run(20, 1, last_flags=0x10)),
    'gro-64-limit': gro_receive(inbound_run(70, 1, optlen=0, last_flags=0x10)),
    'gro-seq-wrap': one_by_one(inbound_run(5, 1000, seq0=0xffffffff - 2500)),
    'gro-ipv4-options': one_by_one(inbound_run(3, 1000, ipopts=b'\x01\x01\x01\x00')),
    'gro-continued': continued(inbound_run(1, 1000, last_flags=0x10)[0], [pay(1000, i) for i in range(6)] + [pay(10)]),
    'gro-continued-shorter': continued(inbound_run(1, 1400, last_flags=0x10)[0], [pay(1300, i) for i in range(6)]),
    'gro-continued-no-options': continued(inbound_run(1, 1400, optlen=0, last_flags=0x10)[0], [pay(1400, i) for i in range(40)]),
    'gro-two-flows': one_by_one([p for pair in zip(inbound_run(3, 800), inbound_run(3, 800, seq0=9)) for p in pair]),
    'gro-ttl1-in-flow': one_by_one(inbound_run(2, 1000) + [tcp(PEER_POD, OWN_POD, 3000, pay(1000), ttl=1)]),
    'gso-64k': super_packet(65525 - 52, 1420),
    'gso-64k-max-options': super_packet(65525 - 80, 1392, optlen=40),
    'gso-ipv4-options': super_packet(20000, 1400, ipopts=b'\x01\x01\x01\x00'),
    'gso-1-byte-mss': super_packet(300, 1),
    'gso-ttl1': super_packet(60000, 1420, ttl=1),
    'gso-no-route': super_packet(60000, 1420, dst=OTHER),
    'gso-mss-above-mtu': super_packet(5000, 1460),
    'gso-seq-wrap': super_packet(10000, 1000, seq=0xffffffff - 3000),
    'csum-udp-zero': rec(2, vnet(0, 0, 0, 20, 6) + udp_zero, flags=0),
    # the ICMP rate limit (burst 50, 1000/s on the harness's fake clock): 60 no-route reads
    # (10 suppressed), 5 ms later 8 more (5 sent, 3 suppressed)
    'icmp-ratelimit': b''.join(rec(3, tcp(OWN_POD, OTHER, i, pay(10)), flags=3) for i in range(60))
                      + rec(1, b'', arg=5) + b''.join(rec(3, tcp(OWN_POD, OTHER, i, pay(10)), flags=3) for i in range(8)),
    # the TUN refuses a super-packet write (EINVAL): the segments go plainly, GRO is off for
    # 1 s (plain writes), then back on (coalesced again)
    'gro-refused-backoff': rec(1, b'', flags=0x40) + one_by_one(inbound_run(4, 1000, seq0=1000, last_flags=0x10))
                           + one_by_one(inbound_run(4, 1000, seq0=5000, last_flags=0x10))
                           + rec(1, b'', arg=1000) + one_by_one(inbound_run(4, 1000, seq0=9000)),
    'mixed': one_by_one(inbound_run(3, 500)) + super_packet(3000, 1000) + rec(3, udp_zero, flags=3)
             + gro_receive(inbound_run(4, 700, optlen=40, last_flags=0x10)),
}
# IPv6: inner packets of the dual-stack engine (routes as in fuzz_offload.c)
PEER6 = bytes([0xfd, 0, 0, 0x10, 2, 0x44, 2, 0] + [0] * 7 + [7])
OWN6 = bytes([0xfd, 0, 0, 0x10, 2, 0x44, 0, 2] + [0] * 7 + [5])
NOWHERE6 = bytes([0xfd, 0, 0, 0x10, 2, 0x44, 0x77, 1] + [0] * 7 + [1])

def ip6(src, dst, nh, l4, hl=64):
    return struct.pack('!IHBB16s16s', 0x60000000, len(l4), nh, hl, src, dst) + l4

def tcp6(src, dst, seq, payload, flags=0x10, optlen=12, hl=64, partial=False):
    opts = tcp_opts(optlen)
    seg = struct.pack('!HHIIBBHHH', 40000, 5001, seq & 0xffffffff, 0x01020304, (5 + len(opts) // 4) << 4, flags, 502, 0, 0) + opts + payload
    ph = src + dst + struct.pack('!IxxxB', len(seg), 6)
    c = csum_sum(ph) if partial else (~csum_sum(seg, csum_sum(ph))) & 0xffff
    return ip6(src, dst, 6, seg[:16] + struct.pack('!H', c) + seg[18:], hl=hl)

def super6(payload_len, mss, optlen=12, hl=64, dst=PEER6):
    p = tcp6(OWN6, dst, 7000, pay(payload_len), optlen=optlen, hl=hl, partial=True)
    return rec(2, vnet(4, 40 + 20 + optlen, mss, 40, 16) + p, flags=1)

FROM6 = 7 | (3 << 4)  # repairs + sender 3: the peer over the IPv6 underlay
run6 = [tcp6(PEER6, OWN6, 100 + i * 1000, pay(1000, i)) for i in range(4)]
seeds.update({
    'tso6-64k': super6(65535 - 10 - 40 - 32, 1428),
    'tso6-max-options': super6(30000, 1388, optlen=40),
    'tso6-1-byte-mss': super6(200, 1),
    'tso6-hop1': super6(20000, 1400, hl=1),
    'tso6-no-route': super6(20000, 1400, dst=NOWHERE6),
    'tso6-mss-above-mtu': super6(5000, 1460),
    'tso6-ext-header': rec(2, vnet(4, 68, 1000, 40, 16) + ip6(OWN6, PEER6, 60, b'\x06\x00' + b'\0' * 6 + tcp6(OWN6, PEER6, 1, pay(3000))[40:]), flags=0),
    'in6-tcp-over6': b''.join(rec(0, p, flags=FROM6) for p in run6) + rec(1, b''),
    'in6-tcp-over4': b''.join(rec(0, p) for p in run6) + rec(1, b''),
    'in6-udp-gro-receive': rec(0, b''.join(run6), arg=len(run6[0]), flags=FROM6) + rec(1, b''),
    'in6-too-big': rec(0, tcp6(PEER6, OWN6, 5, pay(1500)), flags=FROM6) + rec(1, b''),
    'in6-hop1': rec(0, tcp6(PEER6, OWN6, 5, pay(100), hl=1), flags=FROM6) + rec(1, b''),
    'mixed6': one_by_one(inbound_run(3, 500)) + super6(3000, 1000) + rec(0, run6[0], flags=FROM6) + super_packet(3000, 1000)
              + rec(3, ip6(OWN6, PEER6, 17, struct.pack('!HHHH', 1, 2, 12, 0) + b'abcd'), flags=3),
})
# USO: UDP super-packets (gso_type 5) as a pod's UDP_SEGMENT socket makes them (the UDP
# checksum field holds the pseudo-header sum; NEEDS_CSUM at the UDP header)
def uso4(payload_len, gso, ttl=64, dst=PEER_POD, ipopts=b'', ident=7):
    u = struct.pack('!HHHH', 4433, 443, 8 + payload_len, 0) + pay(payload_len, 3)
    u = u[:6] + struct.pack('!H', csum_sum(OWN_POD + dst + struct.pack('!BBH', 0, 17, len(u)))) + u[8:]
    ihl = 20 + len(ipopts)
    return rec(2, vnet(5, ihl + 8, gso, ihl, 6) + ip(OWN_POD, dst, 17, u, ttl=ttl, options=ipopts, ident=ident), flags=7)

def uso6(payload_len, gso, hl=64, dst=PEER6):
    u = struct.pack('!HHHH', 4433, 443, 8 + payload_len, 0) + pay(payload_len, 5)
    u = u[:6] + struct.pack('!H', csum_sum(OWN6 + dst + struct.pack('!IxxxB', len(u), 17))) + u[8:]
    return rec(2, vnet(5, 48, gso, 40, 6) + ip6(OWN6, dst, 17, u, hl=hl), flags=7)

seeds.update({
    'uso4-64k': uso4(65525 - 28, 1400),
    'uso4-short-last': uso4(10000, 1200),
    'uso4-ipv4-options': uso4(5000, 1000, ipopts=b'\x01\x01\x01\x00'),
    'uso4-1-byte': uso4(200, 1),
    'uso4-too-many': uso4(300, 1),
    'uso4-above-mtu': uso4(5000, 1460),
    'uso4-ttl1': uso4(3000, 1000, ttl=1),
    'uso4-no-route': uso4(3000, 1000, dst=OTHER),
    'uso6-64k': uso6(65525 - 48, 1400),
    'uso6-short-last': uso6(7777, 1232),
    'uso6-hop1': uso6(3000, 1000, hl=1),
    'uso-mixed': uso4(4000, 1300) + uso6(4000, 1300) + super_packet(3000, 1000) + one_by_one(inbound_run(3, 500)),
})
# Partial checksums between overlayd peers: bit 15 of a receive's argument leaves the
# repaired TCP/UDP checksums at the pseudo-header sum; a type 2 read with flags bit 3 is
# NEEDS_CSUM with the field at the pseudo-header sum; type 1 flags bit 0 sets which peers
# take partial checksums (bit 1: 10.99.0.200, bit 2: 10.99.0.1; a run starts with 10.99.0.200)
P = 0x8000
POD_1 = bytes([10, 244, 1, 9])  # routed to 10.99.0.1
udp_in = ip(PEER_POD, OWN_POD, 17, struct.pack('!HHHH', 53, 5000, 108, 0) + pay(100))
udp_out = ip(OWN_POD, PEER_POD, 17, struct.pack('!HHHH', 5000, 53, 108, 0) + pay(100))
gro_pkts = inbound_run(10, 1000, last_flags=0x10)
seeds.update({
    'partial-in-run': b''.join(rec(0, p, arg=P) for p in inbound_run(4, 1000)) + rec(1, b''),
    'partial-in-mixed': b''.join(rec(0, p, arg=P if i % 2 else 0) for i, p in enumerate(inbound_run(6, 1000))) + rec(1, b''),
    'partial-in-udp-gro-receive': rec(0, b''.join(gro_pkts), arg=len(gro_pkts[0]) | P) + rec(1, b''),
    'partial-in-udp': rec(0, udp_in, arg=P) + rec(1, b''),
    'partial-in6': b''.join(rec(0, p, arg=P, flags=FROM6) for p in run6) + rec(1, b''),
    'partial-in-single': rec(0, tcp(PEER_POD, OWN_POD, 1, pay(10), flags=0x18), arg=P) + rec(1, b''),
    'partial-in-refused-gro': rec(1, b'', flags=0x40) + b''.join(rec(0, p, arg=P) for p in inbound_run(4, 1000)) + rec(1, b''),
    'partial-read-udp': rec(2, vnet(0, 0, 0, 20, 6) + udp_out, flags=3 | 8),
    'partial-read-tcp6': rec(2, vnet(0, 0, 0, 40, 16) + tcp6(OWN6, PEER6, 1, pay(500)), flags=1 | 8),
    'partial-read-to-1': rec(2, vnet(0, 0, 0, 20, 16) + tcp(OWN_POD, POD_1, 1, pay(300)), flags=3 | 8),
    'full-routes': rec(1, b'', flags=1) + super_packet(20000, 1400) + uso4(5000, 1000) + rec(2, vnet(0, 0, 0, 20, 6) + udp_out, flags=3 | 8)
                   + super6(5000, 1200),
    # an IPv4 TSO super-packet with fragment bits: cut with full checksums (a receiver
    # never takes a fragment's checksum as partial)
    'partial-tso-fragment': b''.join(rec(2, vnet(1, 52, 1000, 20, 16) + p[:6] + frag + p[8:], flags=3)
                                     for p in [tcp(OWN_POD, PEER_POD, 5, pay(3000), partial=True)]
                                     for frag in [b'\x41\x00', b'\x20\x00']),
    # IPv4 with 20 bytes of options: a 40-byte header, as long as IPv6's
    'partial-in-ihl10': rec(0, ip(PEER_POD, OWN_POD, 17, struct.pack('!HHHH', 53, 5000, 108, 0) + pay(100),
                                  options=b'\x01' * 19 + b'\x00'), arg=P) + rec(1, b''),
    'partial-read-ihl10': rec(2, vnet(0, 0, 0, 40, 6) + ip(OWN_POD, PEER_POD, 17, struct.pack('!HHHH', 5000, 53, 108, 0)
                                                            + pay(100), options=b'\x01' * 19 + b'\x00'), flags=3 | 8),
    'partial-both-peers': rec(1, b'', flags=1 | 2 | 4) + super_packet(20000, 1400, dst=POD_1) + uso4(5000, 1000, dst=POD_1)
                          + rec(2, vnet(0, 0, 0, 20, 16) + tcp(OWN_POD, POD_1, 1, pay(300)), flags=3 | 8),
})
os.makedirs(sys.argv[1], exist_ok=True)
def udp4(payload, ident, df=True, sport=4433, partial=False):
    u = struct.pack('!HHHH', sport, 443, 8 + len(payload), 0) + payload
    if partial:
        ph = PEER_POD + OWN_POD + struct.pack('!BBH', 0, 17, len(u))
        u = u[:6] + struct.pack('!H', csum_sum(ph)) + u[8:]
    else:
        u = l4_csum(PEER_POD, OWN_POD, 17, u, 6)
    return ip(PEER_POD, OWN_POD, 17, u, ident=ident, df=df)

def udp_run(n, size, df=True, partial=False, short_last=0):
    # the first datagram, then its next ones (flag 8: the harness copies the headers, id + 1)
    first = udp4(pay(size, 0), ident=100, df=df, partial=partial)
    out = rec(0, first, arg=0x8000 if partial else 0)
    for i in range(1, n):
        out += rec(0, pay(size - (short_last if i == n - 1 else 0), i), arg=0x8000 if partial else 0, flags=7 | 8)
    return out + rec(1, b'')

seeds.update({
    'udp-run-df': udp_run(8, 1200),
    'udp-run-nodf': udp_run(8, 1200, df=False),
    'udp-run-partial': udp_run(6, 1000, partial=True, short_last=300),
    'udp-run-gro-receive': gro_receive([udp4(pay(1000, i), ident=200 + i) for i in range(10)]),
})

for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], name), 'wb') as f:
        f.write(data)
