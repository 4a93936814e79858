#!/usr/bin/env python3
"""Large-datagram UDP, as QUIC stacks send it: UDP_SEGMENT (USO) writes.

  udp-gso.py sink PORT SECONDS
      binds PORT (so that datagrams are not answered with port unreachable) and never reads
      it: the benchmark measures what crosses the tunnel into the pod (the pod's eth0
      counters), not how fast a Python reader drains a socket. Says "listening" on stderr,
      exits after SECONDS.
  udp-gso.py blast DST PORT GSO_SIZE SECONDS
      sends GSO_SIZE-byte datagrams, 46 per send() with setsockopt(SOL_UDP, UDP_SEGMENT),
      as fast as the socket takes them for SECONDS; prints "BYTES DATAGRAMS SECONDS"
      (sends the kernel refused with ENOBUFS/EAGAIN/ECONNREFUSED are not counted).
"""
import errno, socket, sys, time

UDP_SEGMENT = 103
PER_WRITE = 46  # 46 x 1400 = 64400 bytes: under the 65507-byte UDP limit


def sink(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', port))
    sys.stderr.write('listening\n')
    sys.stderr.flush()
    time.sleep(seconds)
    return 0


def blast(dst, port, gso, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, gso)
    s.connect((dst, port))
    buf = (bytes(range(256)) * (gso * PER_WRITE // 256 + 1))[:gso * PER_WRITE]
    nbytes = ndgrams = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        for _ in range(64):
            try:
                s.send(buf)
                nbytes += len(buf)
                ndgrams += PER_WRITE
            except OSError as e:  # a full queue, or an ICMP error of an earlier datagram
                if e.errno not in (errno.ECONNREFUSED, errno.ENOBUFS, errno.EAGAIN):
                    raise
    print(nbytes, ndgrams, f'{time.monotonic() - t0:.3f}', flush=True)
    return 0


if __name__ == '__main__':
    a = sys.argv[1:]
    if a[:1] == ['sink'] and len(a) == 3:
        sys.exit(sink(int(a[1]), float(a[2])))
    if a[:1] == ['blast'] and len(a) == 5:
        sys.exit(blast(a[1], int(a[2]), int(a[3]), float(a[4])))
    sys.stderr.write(__doc__)
    sys.exit(2)
