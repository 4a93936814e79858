/**
 * Offloads of the native engine (root only): TUN super-packets cut in C and TCP segments
 * coalesced into TUN writes (--tun-offload), UDP_SEGMENT sends (--udp-gso) and UDP_GRO
 * receives (--udp-gro). The wire format does not change (one inner packet per datagram),
 * so every combination must carry traffic intact: offloads on both nodes, on one node
 * only, off on both, against a node running the js engine, and on both with 1% of the
 * tunnel datagrams dropped each way (nftables; tc netem is not in every kernel). Each case: ICMP (small and MTU-sized), 20 MB of TCP each
 * way and TCP request/response compared by sha256, UDP of mixed sizes (fragmented ones
 * too) echoed and compared; and the status/metrics show what is on and that it was used.
 */
import t from 'tap';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { Topology, PORT } from '../helpers/topology';
import { OFFLOADS_OFF as OFF, checkNoNamespacesLeft, nodePair, startListening, startNodeDaemons, statusOf } from '../helpers/node-pair';

const FIXTURES = path.resolve(__dirname, 'fixtures');

interface Case {
  readonly name: string;
  readonly node1: readonly string[];
  readonly node2: readonly string[];
  /** offloads expected in force on node 1 / node 2 */
  readonly on1: boolean;
  readonly on2: boolean;
  /** share of node 1's tunnel datagrams dropped (sent and received), percent */
  readonly lossPercent?: number;
  /** --partial-checksums: which nodes send inner checksums partial (to a peer that advertises them) */
  readonly partialSenders?: readonly (1 | 2)[];
}

const PC = '--partial-checksums';

const CASES: readonly Case[] = [
  { name: 'offloads on both nodes (the default)', node1: [], node2: [], on1: true, on2: true },
  { name: 'offloads on node 1 only', node1: [], node2: OFF, on1: true, on2: false },
  { name: 'offloads off on both nodes', node1: OFF, node2: OFF, on1: false, on2: false },
  { name: 'node 1 native with offloads, node 2 --engine js', node1: [], node2: ['--engine', 'js'], on1: true, on2: false },
  { name: 'offloads on both, 1% of the tunnel datagrams lost each way', node1: [], node2: [], on1: true, on2: true, lossPercent: 1 },
  // partial inner checksums (--partial-checksums): every mixed pairing
  { name: 'partial checksums on both nodes', node1: [PC], node2: [PC], on1: true, on2: true, partialSenders: [1, 2] },
  { name: 'partial checksums on node 1 only: node 2 (like a flannel peer) advertises nothing and gets full ones', node1: [PC], node2: [], on1: true, on2: true, partialSenders: [] },
  { name: 'partial checksums on both, node 2 without offloads (finishes them in software)', node1: [PC], node2: [PC, ...OFF], on1: true, on2: false, partialSenders: [1] },
  { name: 'partial checksums on node 1, node 2 --engine js (always full checksums)', node1: [PC], node2: ['--engine', 'js'], on1: true, on2: false, partialSenders: [] },
];

const prefixes: string[] = [];

function metricsOf(topo: Topology, ns: string): string {
  return topo.netns.exec(ns, process.execPath, ['-e', "fetch('http://127.0.0.1:9285/metrics').then((r) => r.text()).then((s) => process.stdout.write(s))"], 10_000);
}

/** Starts a node fixture server in ns and waits (bounded) until it says it listens. */
function serve(ns: string, args: string[]): ReturnType<typeof startListening> {
  return startListening(ns, [process.execPath, ...args]);
}

if (!isRoot) {
  t.skip('e2e offload tests need root (network namespaces, TUN devices)', () => undefined);
} else {
  let port = 5100;
  for (const c of CASES) {
    t.test(c.name, async (t) => {
      const topo = nodePair(t, prefixes);
      const [n1, n2] = [topo.node(1), topo.node(2)];
      const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
      if (c.lossPercent !== undefined) {
        // tc netem is not built into every kernel (this VM's has none): nftables drops a
        // random share of node 1's tunnel datagrams, sent and received
        const rules = [
          'add table inet ovl_loss',
          'add chain inet ovl_loss out { type filter hook output priority 0; }',
          'add chain inet ovl_loss in { type filter hook input priority 0; }',
          `add rule inet ovl_loss out udp dport ${PORT} numgen random mod 1000 < ${c.lossPercent * 10} counter drop`,
          `add rule inet ovl_loss in udp sport ${PORT} numgen random mod 1000 < ${c.lossPercent * 10} counter drop`,
        ].join('\n');
        topo.netns.exec(n1.ns, 'sh', ['-c', `printf '%s\\n' "${rules}" | nft -f -`]);
      }
      const common = ['--iface', 'eth0', '--log-level', 'info'];
      await startNodeDaemons(t, topo, [[...common, ...c.node1], [...common, ...c.node2]]);

      t.test('status and /metrics show which offloads are on', async (t) => {
        for (const [ns, on] of [[n1.ns, c.on1], [n2.ns, c.on2]] as const) {
          const o = statusOf(topo, ns).offloads;
          t.ok(o !== null, 'status has offloads');
          t.same([o?.tun, o?.udp_gso, o?.udp_gro], [on, on, on], `${ns}: tun, udp_gso, udp_gro all ${on}`);
          const m = metricsOf(topo, ns);
          for (const name of ['tun', 'udp_gso', 'udp_gro']) t.match(m, new RegExp(`overlayd_offload_enabled\\{offload="${name}"\\} ${on ? 1 : 0}\\b`), `metrics: ${name} ${on ? 1 : 0}`);
        }
      });

      t.test('ICMP: small and MTU-sized pings both ways', async (t) => {
        for (const [from, to] of [[p1, p2], [p2, p1]] as const) {
          for (const size of ['56', String(1472 - 28)]) {
            const r = topo.netns.tryExec(from.ns, 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', '-M', 'do', '-s', size, to.ip], 15_000);
            t.equal(r.status, 0, `${from.ip} -> ${to.ip} -s ${size}: ${r.stdout}${r.stderr}`);
          }
        }
      });

      /** One TCP transfer from -> to; what the two ends saw. */
      const xfer = async (from: typeof p1, to: typeof p1, bytes: number) => {
        const p = port++;
        const server = await serve(to.ns, [path.join(FIXTURES, 'tcp-xfer.js'), 'serve', String(p), '120000']);
        const client = topo.netns.tryExec(from.ns, process.execPath, [path.join(FIXTURES, 'tcp-xfer.js'), 'send', to.ip, String(p), String(bytes), '120000'], 130_000);
        const serverCode = await server.done;
        const [sentN, sentHash] = client.stdout.trim().split(' ');
        const [gotN, gotHash] = server.out().trim().split(' ');
        return { ok: client.status === 0 && serverCode === 0 && Number(sentN) === bytes && Number(gotN) === bytes && gotHash === sentHash, client, serverCode, sentN, gotN, sentHash, gotHash };
      };

      t.test('TCP bulk: 20 MB each way, sha256 compared', async (t) => {
        for (const [from, to] of [[p1, p2], [p2, p1]] as const) {
          const r = await xfer(from, to, 20 * 1024 * 1024);
          t.equal(r.client.status, 0, r.client.stderr);
          t.equal(r.serverCode, 0, 'server exits 0');
          t.equal(Number(r.gotN), 20 * 1024 * 1024, `${from.ip} -> ${to.ip}: every byte arrived`);
          t.equal(r.gotHash, r.sentHash, `${from.ip} -> ${to.ip}: sha256 of received bytes equals sent`);
        }
      });

      t.test('TCP short connections of mixed sizes (around the MSS and 64 KB) both ways, sha256 compared', async (t) => {
        const sizes = [1, 100, 1431, 1432, 1433, 2864, 9000, 65535, 65536, 200_000];
        for (let i = 0; i < 2 * sizes.length; i++) {
          const size = sizes[i >> 1] as number;
          const r = await xfer(i % 2 ? p2 : p1, i % 2 ? p1 : p2, size);
          t.ok(r.ok, `${size} bytes ${i % 2 ? '2 -> 1' : '1 -> 2'} intact`, { client: r.client.stderr, serverCode: r.serverCode, sentN: r.sentN, gotN: r.gotN });
        }
      });

      t.test('UDP of mixed sizes (fragmented ones too) echoed intact', async (t) => {
        const p = port++;
        const server = await serve(p2.ns, [path.join(FIXTURES, 'udp-echo.js'), 'serve', String(p), '60000']);
        // with loss, no datagram of dozens of fragments: each try would lose one too often
        const sizes = c.lossPercent ? [1, 64, 500, 1400, 1443, 1444, 1445, 3000] : [1, 64, 500, 1400, 1443, 1444, 1445, 3000, 8972, 30000, 65507];
        const r = topo.netns.tryExec(p1.ns, process.execPath, [path.join(FIXTURES, 'udp-echo.js'), 'ping', p2.ip, String(p), sizes.join(','), '5', '50000'], 60_000);
        t.equal(r.status, 0, r.stderr);
        t.match(r.stdout, new RegExp(`^${5 * sizes.length} \\d+ [0-9a-f]{64}`), `${5 * sizes.length} datagrams came back intact`);
        void server.done;
      });

      t.test('counters: nothing malformed or lost inside the engines; offloads used where on', async (t) => {
        const [s1, s2] = [statusOf(topo, n1.ns), statusOf(topo, n2.ns)];
        for (const [name, s] of [['node 1', s1], ['node 2', s2]] as const) {
          t.equal(s.counters?.drops['malformed'], 0, `${name}: drops malformed 0`);
          // nftables' drops fail the send (EPERM) on node 1: counted as tx_error, as they should be
          if (c.lossPercent === undefined || name === 'node 2') t.equal(s.counters?.tx_errors, 0, `${name}: tx_errors 0`);
          t.same(s.offloads?.fallbacks, { udp_gso: 0, tun_gro: 0 }, `${name}: no fallback`);
        }
        const a1 = s1.offloads?.activity;
        const a2 = s2.offloads?.activity;
        if (c.on1) {
          t.ok((a1?.tun_gso_reads ?? 0) > 0, `node 1 cut super-packets read from its TUN (${a1?.tun_gso_reads})`);
          t.ok((a1?.udp_gso_sends ?? 0) > 0, `node 1 sent UDP_SEGMENT messages (${a1?.udp_gso_sends})`);
          t.ok((a1?.tun_gro_writes ?? 0) > 0, `node 1 wrote coalesced super-packets (${a1?.tun_gro_writes})`);
        } else {
          t.same(a1, { tun_gso_reads: 0, tun_uso_reads: 0, tun_gro_writes: 0, udp_gso_sends: 0, udp_gro_recvs: 0 }, 'node 1 used no offload');
        }
        if (c.on1 && c.on2) {
          t.ok((a2?.udp_gro_recvs ?? 0) > 0, `node 2 received several datagrams per receive (${a2?.udp_gro_recvs})`);
          t.ok((a1?.udp_gro_recvs ?? 0) > 0, `node 1 received several datagrams per receive (${a1?.udp_gro_recvs})`);
        }
        if (!c.on2) t.same(a2, { tun_gso_reads: 0, tun_uso_reads: 0, tun_gro_writes: 0, udp_gso_sends: 0, udp_gro_recvs: 0 }, 'node 2 used no offload');
        // partial checksums: sent only where both ends run with the flag (and the sender's TUN hands it partial
        // ones: offloads on); each one sent arrives as one received partial (the counts can differ by chance:
        // a full checksum equal to its pseudo-header sum, 1 in 65535, also counts as received partial)
        const senders = c.partialSenders ?? [];
        for (const [k, s, peer] of [[1, s1, s2], [2, s2, s1]] as const) {
          const pc = s.offloads?.partial_checksums;
          const nodeHasFlag = (k === 1 ? c.node1 : c.node2).includes(PC);
          if (s.engine === 'native') t.equal(pc?.enabled, nodeHasFlag, `node ${k}: partial checksums ${nodeHasFlag ? 'on' : 'off'} in its status`);
          if (senders.includes(k)) {
            t.ok((pc?.sent ?? 0) > 1000, `node ${k} sent datagrams with partial checksums (${pc?.sent})`);
            t.ok((peer.offloads?.partial_checksums.received ?? 0) > 1000, `its peer received them partial and had them finished (${peer.offloads?.partial_checksums.received})`);
          } else {
            t.equal(pc?.sent ?? 0, 0, `node ${k} sent no partial checksum`);
          }
        }
      });
    });
  }
  checkNoNamespacesLeft(prefixes);
}
