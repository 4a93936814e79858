/**
 * Multi-homed hosts (root only): node 1's eth0 has a second address and its PublicIP is that
 * one. Peers accept datagrams only from a peer's PublicIP:port, so the UDP socket must be
 * bound to it (bound to 0.0.0.0 the kernel picks the primary address and node 2 drops every
 * datagram as an unknown peer). Both engines. A PublicIP that is not local (NAT) is said at
 * start.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { Topology, CLUSTER_NETWORK, PORT, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';
import { flatCounters, type StatusDoc } from '../../src/ops/status-types';
import { ENGINES } from '../helpers/engines';

const SECONDARY = '10.99.0.101';

if (!isRoot) {
  t.skip('e2e multi-homed tests need root (network namespaces, TUN devices)', () => undefined);
} else {
  for (const engine of ENGINES) {
    t.test(`engine ${engine}: PublicIP is the secondary address of eth0`, async (t) => {
      const topo = new Topology({ nodes: 2, podsPerNode: 1, tag: 'ovm' });
      t.teardown(() => topo.cleanup());
      const [n1, n2] = [topo.node(1), topo.node(2)];
      const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
      topo.netns.ip(n1.ns, 'addr', 'add', `${SECONDARY}/24`, 'dev', 'eth0');
      const file = (k: number, me: { Subnet: string; PublicIP: string }, peer: { Subnet: string; PublicIP: string }) => {
        const f = path.join(topo.tmp, `mh-n${k}.json`);
        writeFileSync(f, JSON.stringify({ Network: CLUSTER_NETWORK, SubnetLen: 24, Backend: { Type: 'udp', Port: PORT }, ...me, Peers: [peer] }));
        return f;
      };
      const me1 = { Subnet: n1.subnet, PublicIP: SECONDARY };
      const me2 = { Subnet: n2.subnet, PublicIP: n2.underlayIp };
      const daemons: DaemonHandle[] = [];
      t.teardown(async () => { for (const d of daemons) await stopDaemon(d); });
      const common = ['--engine', engine, '--iface', 'eth0', '--metrics-addr', '127.0.0.1:9285'];
      const d1 = await startDaemon(n1.ns, [...common, '--static-config', file(1, me1, me2), '--subnet-file', path.join(topo.tmp, 'n1.env')]);
      daemons.push(d1);
      daemons.push(await startDaemon(n2.ns, [...common, '--static-config', file(2, me2, me1), '--subnet-file', path.join(topo.tmp, 'n2.env')]));

      const sockets = topo.netns.exec(n1.ns, 'ss', ['-H', '-u', '-a', '-n', 'sport', '=', `:${PORT}`]);
      t.match(sockets, new RegExp(`${SECONDARY.replace(/\./g, '\\.')}:${PORT}`), 'the UDP socket is bound to the PublicIP');
      t.notMatch(d1.output(), /not an address of this host/, 'no NAT warning: the PublicIP is local');
      const ping = topo.netns.tryExec(p1.ns, 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', p2.ip], 15_000);
      t.equal(ping.status, 0, `pods reach each other across nodes: ${ping.stdout}`);
      const st = JSON.parse(topo.netns.exec(n2.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], 10_000)) as StatusDoc;
      t.equal(st.counters ? flatCounters(st.counters)['drops.unknown_peer'] : undefined, 0, 'node 2 dropped nothing as an unknown peer');
    });
  }

  t.test('a PublicIP that is not local (NAT): warned at start, bound to the underlay address', async (t) => {
    const topo = new Topology({ nodes: 1, podsPerNode: 0, tag: 'ovm' });
    t.teardown(() => topo.cleanup());
    const n1 = topo.node(1);
    const f = path.join(topo.tmp, 'nat.json');
    writeFileSync(f, JSON.stringify({ Network: CLUSTER_NETWORK, SubnetLen: 24, Backend: { Type: 'udp', Port: PORT }, Subnet: n1.subnet, PublicIP: '198.51.100.7', Peers: [] }));
    const d = await startDaemon(n1.ns, ['--engine', 'js', '--iface', 'eth0', '--static-config', f, '--subnet-file', path.join(topo.tmp, 'n1.env')]);
    t.teardown(() => stopDaemon(d));
    t.match(d.output(), /"publicIp":"198\.51\.100\.7".*"msg":"PublicIP is not an address of this host \(NAT\?\): binding the UDP socket to the underlay address"/);
    t.match(topo.netns.exec(n1.ns, 'ss', ['-H', '-u', '-a', '-n', 'sport', '=', `:${PORT}`]), new RegExp(`${n1.underlayIp.replace(/\./g, '\\.')}:${PORT}`));
  });
}
