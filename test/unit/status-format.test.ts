import t from 'tap';
import { formatStatus, type StatusDoc } from '../../src/ops/status-types';

const base: StatusDoc = {
  version: '0.1.0', pid: 42, uptimeSeconds: 7, phase: 'forwarding', healthy: true, ready: true, source: 'etcd',
  network: { network: '10.244.0.0/16', port: 8285 },
  lease: { subnet: '10.244.3.0/24', publicIp: '10.99.0.3', expiresAt: '2026-11-30T15:00:00.000Z', valid: true },
  etcd: { endpoints: ['http://10.99.0.254:2379'], connected: true, resyncs: 2 },
  tun: { name: 'flannel0', address: '10.244.3.0', mtu: 1472 },
  engine: 'native',
  offloads: { tun: true, udp_gso: true, udp_gro: false, fallbacks: { udp_gso: 0, tun_gro: 1 }, reenables: { udp_gso: 0, tun_gro: 1 }, activity: { tun_gso_reads: 0, tun_uso_reads: 0, tun_gro_writes: 0, udp_gso_sends: 0, udp_gro_recvs: 0 }, partial_checksums: { enabled: true, sent: 12, received: 3 } },
  routes: [{ subnet: '10.244.4.0/24', publicIp: '10.99.0.4', ageSeconds: 5 }],
  counters: { packets: { tun_read: 1, udp_sent: 2 }, bytes: { udp_sent: 300 }, drops: { no_route: 4 }, icmp_errors_sent: 5, tx_errors: 6 },
  memory: { rss: 1, heapTotal: 1, heapUsed: 1, external: 1, arrayBuffers: 1 },
};

t.test('healthy: health, phase, lease expiry, etcd, resyncs, offloads, counters in the words of /metrics', async (t) => {
  const s = formatStatus(base);
  t.match(s, /^health:\s+ok$/m);
  t.match(s, /^phase:\s+forwarding$/m);
  t.match(s, /^lease:\s+10\.244\.3\.0\/24 -> 10\.99\.0\.3\s+valid, expires 2026-11-30T15:00:00\.000Z$/m);
  t.match(s, /^etcd:\s+connected \(http:\/\/10\.99\.0\.254:2379\), resyncs 2$/m);
  const cut = formatStatus({ ...base, etcd: { endpoints: ['http://10.99.0.254:2379'], connected: true, leader: false, resyncs: 3, lastResync: '2026-11-29T15:00:00.000Z' } });
  t.match(cut, /^etcd:\s+connected, MEMBER HAS NO LEADER \(http:\/\/10\.99\.0\.254:2379\), resyncs 3, last re-list 2026-11-29T15:00:00\.000Z$/m, 'a member cut off from its cluster is shown');
  t.match(s, /^offloads:\s+tun yes, udp_gso yes, udp_gro no; fallbacks udp_gso 0, tun_gro 1; reenables udp_gso 0, tun_gro 1$/m);
  t.match(s, /^csum:\s+partial yes; sent 12, received 3$/m);
  t.match(s, /^packets:\s+tun_read 1, udp_sent 2$/m);
  t.match(s, /^drops:\s+no_route 4$/m);
  t.match(s, /^errors:\s+icmp_errors_sent 5, tx_errors 6$/m);
  t.match(s, /^ {2}10\.244\.4\.0\/24\s+via 10\.99\.0\.4\s+age 5s$/m);
});

t.test('waiting: unhealthy with the reason, parts not known yet left out', async (t) => {
  const waiting: StatusDoc = {
    ...base, phase: 'waiting for etcd at http://10.99.0.254:2379', healthy: false, reason: 'waiting for etcd at http://10.99.0.254:2379', ready: false,
    network: null, lease: null, tun: null, offloads: null, routes: [], counters: null,
    etcd: { endpoints: ['http://10.99.0.254:2379'], connected: false, resyncs: 0 },
  };
  const s = formatStatus(waiting);
  t.match(s, /^health:\s+UNHEALTHY: waiting for etcd at http:\/\/10\.99\.0\.254:2379$/m);
  t.match(s, /^etcd:\s+NOT CONNECTED/m);
  t.notMatch(s, /^(lease|tun|offloads|packets):/m);
  t.match(s, /^routes:\s+0$/m);
});

t.test('static config: the lease never expires, no etcd line', async (t) => {
  const s = formatStatus({ ...base, source: 'static', etcd: null, lease: { ...base.lease!, expiresAt: null } });
  t.match(s, /never expires/);
  t.notMatch(s, /^etcd:/m);
});

t.test('dual-stack: network6, lease6 and the IPv6 routes with their underlay; none of it for IPv4-only', async (t) => {
  const dual: StatusDoc = {
    ...base,
    network: { ...base.network!, network6: 'fd00:10:244::/56' },
    lease: { ...base.lease!, subnet6: 'fd00:10:244:3::/64', publicIpv6: '2001:db8::3' },
    routes6: [
      { subnet: 'fd00:10:244:4::/64', publicIp: '10.99.0.4', publicIpv6: '2001:db8::4', underlay: 'ipv6', ageSeconds: 5 },
      { subnet: 'fd00:10:244:5::/64', publicIp: '10.99.0.5', publicIpv6: null, underlay: 'ipv4', ageSeconds: null },
    ],
  };
  const s = formatStatus(dual);
  t.match(s, /^network6:\s+fd00:10:244::\/56$/m);
  t.match(s, /^lease6:\s+fd00:10:244:3::\/64 -> 2001:db8::3$/m);
  t.match(s, /^routes6:\s+2$/m);
  t.match(s, /^ {2}fd00:10:244:4::\/64\s+via 2001:db8::4\s+\(ipv6 underlay\) age 5s$/m);
  t.match(s, /^ {2}fd00:10:244:5::\/64\s+via 10\.99\.0\.5\s+\(ipv4 underlay\) age \?s$/m);
  const noV6 = formatStatus({ ...dual, lease: { ...dual.lease!, publicIpv6: null } });
  t.match(noV6, /^lease6:\s+fd00:10:244:3::\/64 -> 10\.99\.0\.3 \(no PublicIPv6\)$/m);
  const v4 = formatStatus(base);
  t.notMatch(v4, /network6|lease6|routes6/, 'IPv4-only: no IPv6 lines');
});
