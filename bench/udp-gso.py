#!/usr/bin/env python3
"""Large-datagram UDP throughput, as QUIC stacks send it: UDP_SEGMENT (USO) writes.

  udp-gso.py count PORT TIMEOUT_S
      counts datagrams (UDP_GRO on: one receive may carry several) until 1 s passes
      without one after the first, or TIMEOUT_S; says "listening" on stderr once bound;
      prints "BYTES DATAGRAMS SECONDS" (payload bytes, from the first to the last receive).
  udp-gso.py blast DST PORT GSO_SIZE SECONDS
      sends GSO_SIZE-byte datagrams, 46 per send() with setsockopt(SOL_UDP, UDP_SEGMENT),
      as fast as the socket takes them for SECONDS; prints "BYTES DATAGRAMS SECONDS".
"""
import errno, socket, struct, sys, time

UDP_SEGMENT, UDP_GRO = 103, 104
PER_WRITE = 46


def count(port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (root)
    s.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    s.bind(('0.0.0.0', port))
    sys.stderr.write('listening\n')
    sys.stderr.flush()
    end = time.monotonic() + timeout
    nbytes = ndgrams = 0
    first = last = None
    while time.monotonic() < end:
        s.settimeout(1.0 if first is not None else max(0.05, end - time.monotonic()))
        try:
            d, anc, _, _ = s.recvmsg(65536, 64)
        except socket.timeout:
            if first is not None:
                break
            continue
        now = time.monotonic()
        first = now if first is None else first
        last = now
        seg = len(d)
        for level, typ, data in anc:
            if level == socket.SOL_UDP and typ == UDP_GRO:
                seg = struct.unpack('=i', data[:4])[0] or len(d)
        nbytes += len(d)
        ndgrams += (len(d) + seg - 1) // seg if seg > 0 else 1
    print(nbytes, ndgrams, f'{(last - first) if first is not None else 0:.3f}', flush=True)
    return 0


def blast(dst, port, gso, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, gso)
    s.connect((dst, port))
    buf = bytes(range(256)) * (gso * PER_WRITE // 256 + 1)
    buf = buf[:gso * PER_WRITE]
    nbytes = ndgrams = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        for _ in range(64):
            try:
                s.send(buf)
                nbytes += len(buf)
                ndgrams += PER_WRITE
            except OSError as e:  # not counted as sent: a full queue or no receiver yet
                if e.errno not in (errno.ECONNREFUSED, errno.ENOBUFS, errno.EAGAIN):
                    raise
        if time.monotonic() >= end:
            break
    print(nbytes, ndgrams, f'{time.monotonic() - t0:.3f}', flush=True)
    return 0


if __name__ == '__main__':
    a = sys.argv[1:]
    if a[:1] == ['count'] and len(a) == 3:
        sys.exit(count(int(a[1]), float(a[2])))
    if a[:1] == ['blast'] and len(a) == 5:
        sys.exit(blast(a[1], int(a[2]), int(a[3]), float(a[4])))
    sys.stderr.write(__doc__)
    sys.exit(2)
