#!/usr/bin/env python3
"""Writes the seed corpus: real packets as they arrive from a peer and from the TUN (an ICMP
echo, a TCP SYN, a UDP datagram, a fragment, a packet with options), each behind the
fuzzer's mode byte. Usage: mkseeds.py DIR"""
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
os.makedirs(sys.argv[1], exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], name), 'wb') as f:
        f.write(data)
