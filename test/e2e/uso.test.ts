/**
 * USO (root only): a pod that sends large UDP the way QUIC stacks do, with UDP_SEGMENT on
 * its socket (fixtures/uso-udp.py), hands node 1's TUN UDP super-packets (gso_type
 * UDP_L4); the native engine cuts them into one inner datagram each (uso.c). 8 MB go from
 * a pod on node 1 to a pod on node 2, the receiver puts them back in sequence order and
 * the sha256 must match; node 1's offloads.activity.tun_uso_reads shows super-packets were
 * read and cut, and nothing was malformed. Then the same (1 MB) with --tun-offload false
 * on node 1: the kernel cuts them before the TUN, and tun_uso_reads stays 0. In both,
 * node 2 writes runs of same-flow datagrams into its TUN as UDP super-packets
 * (tun_gro_writes), which the kernel cuts again before the pod's socket.
 */
import t from 'tap';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { checkNoNamespacesLeft, nodePair, startListening, startNodeDaemons, statusOf } from '../helpers/node-pair';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const USO_UDP = path.join(ROOT, 'test', 'e2e', 'fixtures', 'uso-udp.py');
const GSO_SIZE = 1400; /* + 28 bytes of headers: under the TUN MTU (1472) */

/** Starts the receiver in ns and waits (bounded) until it says it listens. */
function receiver(ns: string, port: number, bytes: number): ReturnType<typeof startListening> {
  return startListening(ns, ['python3', USO_UDP, 'recv', String(port), String(bytes), '120']);
}

const CASES = [
  { name: 'USO on (the default): 8 MB of UDP_SEGMENT writes cut by the engine', node1: [] as string[], bytes: 8 << 20, uso: true },
  { name: 'node 1 --tun-offload false: 1 MB, the kernel cuts them', node1: ['--tun-offload', 'false'], bytes: 1 << 20, uso: false },
];

const prefixes: string[] = [];
if (!isRoot) {
  t.skip('SKIP: e2e USO test needs root (network namespaces, TUN devices)', () => undefined);
} else {
  let port = 5300;
  for (const c of CASES) {
    t.test(c.name, async (t) => {
      const topo = nodePair(t, prefixes);
      const [n1, n2] = [topo.node(1), topo.node(2)];
      const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
      const common = ['--iface', 'eth0', '--log-level', 'info'];
      await startNodeDaemons(t, topo, [[...common, ...c.node1], common]);
      t.equal(statusOf(topo, n1.ns).offloads?.tun, c.uso, `node 1: TUN offloads ${c.uso ? 'on' : 'off'}`);

      const p = port++;
      const rx = await receiver(p2.ns, p, c.bytes);
      const tx = topo.netns.tryExec(p1.ns, 'python3', [USO_UDP, 'send', p2.ip, String(p), String(c.bytes), String(GSO_SIZE), '90'], 130_000);
      const rxCode = await rx.done;
      t.equal(tx.status, 0, `sender exits 0: ${tx.stderr}`);
      t.equal(rxCode, 0, 'receiver exits 0');
      const [sentN, nDgrams, sentHash, writes, resent] = tx.stdout.trim().split(' ');
      const [gotN, gotDgrams, gotHash] = rx.out().trim().split(' ');
      t.equal(Number(gotN), c.bytes, `every byte arrived (${gotN} of ${sentN}; ${gotDgrams} datagrams received for ${nDgrams}, ${writes} UDP_SEGMENT writes, ${resent} resent)`);
      t.ok(Number(gotDgrams) >= Number(nDgrams), 'at least one datagram per sequence number received');
      t.equal(gotHash, sentHash, 'sha256 of the received data (in sequence order) equals the sent');

      const s1 = statusOf(topo, n1.ns);
      const s2 = statusOf(topo, n2.ns);
      t.equal(s1.counters?.drops['malformed'], 0, 'node 1: drops malformed 0');
      t.equal(s2.counters?.drops['malformed'], 0, 'node 2: drops malformed 0');
      const uso = s1.offloads?.activity.tun_uso_reads ?? -1;
      const gso = s1.offloads?.activity.tun_gso_reads ?? -1;
      if (c.uso) {
        t.ok(uso > 0, `node 1 read and cut UDP super-packets from its TUN (tun_uso_reads ${uso})`);
        t.ok(gso >= uso, `tun_gso_reads (${gso}) counts them too`);
      } else {
        t.equal(uso, 0, 'node 1 read no UDP super-packet (TUN offloads off)');
      }
      // node 2 (offloads on in every case) wrote runs of the datagrams into its TUN as UDP
      // super-packets (gso_type UDP_L4): fewer TUN writes than datagrams
      const groWrites = s2.offloads?.activity.tun_gro_writes ?? 0;
      const written = s2.counters?.packets['tun_written'] ?? 0;
      t.ok(groWrites > 0, `node 2 coalesced datagrams into UDP super-packets (tun_gro_writes ${groWrites}, tun_written ${written})`);
      t.same(s2.offloads?.fallbacks, { udp_gso: 0, tun_gro: 0 }, 'node 2: no TUN write refused');
    });
  }
  checkNoNamespacesLeft(prefixes);
}
