#!/usr/bin/env python3
"""Writes the seed corpus: real packets as they arrive from a peer and from the TUN (an ICMP
echo, a TCP SYN, a UDP datagram, a fragment, a packet with options; TCP and UDP with
checksums left partial, on queues with and without a virtio_net_hdr, toward peers with and
without OVL_ROUTE_PARTIAL_CSUM), each behind the fuzzer's mode byte. Usage: mkseeds.py DIR"""
import os, struct, sys

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def ip(src, dst, proto, payload, ttl=64, options=b'', frag=0):
    ihl = 5 + len(options) // 4
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, ihl * 4 + len(payload), 0x1234, frag, ttl, proto, 0,
                    bytes(src), bytes(dst)) + options
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload

peer, own, other = [10, 244, 200, 7], [10, 244, 2, 5], [10, 244, 1, 9]
echo = struct.pack('!BBHHH', 8, 0, 0, 1, 1) + b'abcdefgh' * 7
echo = echo[:2] + struct.pack('!H', csum(echo)) + echo[4:]
syn = struct.pack('!HHIIBBHHH', 40000, 80, 1, 0, 0x50, 0x02, 64240, 0, 0)
udp = struct.pack('!HHHH', 5000, 53, 8 + 12, 0) + b'hello, pod!!'
seeds = {
    'in-icmp-echo': b'\0' + ip(peer, own, 1, echo),
    'in-tcp-syn': b'\0' + ip(peer, own, 6, syn),
    'in-udp': b'\0' + ip(peer, own, 17, udp),
    'in-fragment': b'\0' + ip(peer, own, 17, udp, frag=0x2000),
    'in-options': b'\0' + ip(peer, own, 17, udp, options=b'\x01\x01\x01\x00'),
    'in-ttl1': b'\0' + ip(peer, own, 1, echo, ttl=1),
    'in-nonpeer': b'\2' + ip(peer, own, 17, udp),
    'out-icmp-echo': b'\3' + ip(own, peer, 1, echo),
    'out-no-route': b'\3' + ip(own, [10, 244, 77, 1], 6, syn),
    'out-ttl1': b'\3' + ip(own, other, 17, udp, ttl=1),
}
# IPv6 inner packets (byte 0 bit 2: the datagram came over the IPv6 underlay)
def ip6(src, dst, nh, payload, hl=64, plen=None):
    return struct.pack('!IHBB16s16s', 0x60000000, len(payload) if plen is None else plen, nh, hl, bytes(src), bytes(dst)) + payload

def ext(nh, body_len=6, kind='opts', frag_off=0, more=False):
    """one extension header whose next header is nh: options (8 + n*8 bytes) or a fragment"""
    if kind == 'frag':
        return struct.pack('!BBHI', nh, 0, (frag_off << 3) | (1 if more else 0), 0x1234)
    n = (body_len + 2 + 7) // 8 - 1
    return bytes([nh, n]) + b'\0' * (8 * (n + 1) - 2)  # Pad1 options

peer6 = [0xfd, 0, 0, 0x10, 2, 0x44, 2, 0, 0, 0, 0, 0, 0, 0, 0, 7]
own6 = [0xfd, 0, 0, 0x10, 2, 0x44, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5]
other6 = [0xfd, 0, 0, 0x10, 2, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]
nowhere6 = [0xfd, 0, 0, 0x10, 2, 0x44, 0x77, 1] + [0] * 7 + [1]
echo6 = struct.pack('!BBHHH', 128, 0, 0, 1, 1) + b'abcdefgh' * 7
err6 = struct.pack('!BBHI', 1, 0, 0, 0) + ip6(own6, nowhere6, 17, udp)
chain = ext(43) + ext(60) + ext(17, kind='frag')
seeds.update({
    'in6-udp-over6': b'\4' + ip6(peer6, own6, 17, udp),
    'in6-udp-over4': b'\0' + ip6(peer6, own6, 17, udp),
    'in6-echo': b'\4' + ip6(peer6, own6, 58, echo6),
    'in6-chain': b'\4' + ip6(peer6, own6, 0, ext(43) + chain + udp),
    'in6-fragment-later': b'\4' + ip6(peer6, own6, 44, ext(17, kind='frag', frag_off=100) + udp),
    'in6-truncated-ext': b'\4' + ip6(peer6, own6, 60, ext(17, body_len=300)[:16]),
    'in6-hop1': b'\4' + ip6(peer6, own6, 17, udp, hl=1),
    'in6-too-big': b'\4' + ip6(peer6, own6, 17, udp + b'x' * 1460),
    'in6-spoofed': b'\4' + ip6(other6, own6, 17, udp),
    'in6-nonpeer': b'\6' + ip6(peer6, own6, 17, udp),
    'in4-over6': b'\4' + ip(peer, own, 17, udp),
    'out6-udp': b'\3' + ip6(own6, peer6, 17, udp),
    'out6-no-route': b'\3' + ip6(own6, nowhere6, 6, syn),
    'out6-hop1': b'\3' + ip6(own6, other6, 17, udp, hl=1),
    'out6-icmp6-error': b'\3' + ip6(own6, nowhere6, 58, err6),
    'out6-chain': b'\3' + ip6(own6, peer6, 0, ext(43) + chain + udp),
    'out6-too-big': b'\3' + ip6(own6, peer6, 17, udp + b'y' * 1460),
    'out6-bad-length': b'\3' + ip6(own6, peer6, 17, udp, plen=7),
})
# Partial checksums (byte 0 bit 3: 10.99.0.200 takes them; bit 4: the TCP/UDP checksum
# field set to the pseudo-header sum; bit 5: a TUN queue with a virtio_net_hdr)
ack = struct.pack('!HHIIBBHHH', 40000, 80, 1, 1, 0x50, 0x10, 502, 0, 0) + b'data' * 100
for name, pkt in [('in-udp', ip(peer, own, 17, udp)), ('in-tcp', ip(peer, own, 6, ack)),
                  ('in6-udp', ip6(peer6, own6, 17, udp)), ('in6-tcp', ip6(peer6, own6, 6, ack))]:
    seeds['partial-' + name] = bytes([0x10]) + pkt
    seeds['partial-' + name + '-vnet'] = bytes([0x30]) + pkt
opts20 = b'\x01' * 19 + b'\x00'  # a 40-byte IPv4 header, as long as IPv6's
seeds['partial-in-ihl10-vnet'] = bytes([0x30]) + ip(peer, own, 17, udp, options=opts20)
seeds['partial-in-ihl10'] = bytes([0x10]) + ip(peer, own, 6, ack, options=opts20)
for name, pkt in [('out-ihl10', ip(own, peer, 17, udp, options=opts20)), ('out-udp', ip(own, peer, 17, udp)), ('out-tcp', ip(own, peer, 6, ack)),
                  ('out-tcp-245', ip(own, [10, 245, 3, 3], 6, ack)), ('out-to-1', ip(own, other, 6, ack)),
                  ('out6-udp', ip6(own6, peer6, 17, udp)), ('out6-tcp-to-1', ip6(own6, other6, 6, ack))]:
    seeds['partial-' + name + '-routes'] = bytes([0x3b]) + pkt
    seeds['partial-' + name + '-no-routes'] = bytes([0x33]) + pkt
os.makedirs(sys.argv[1], exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], name), 'wb') as f:
        f.write(data)
