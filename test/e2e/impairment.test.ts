/**
 * Reordering, duplication, delay and loss on the underlay (root only). This kernel has no
 * netem: the lab's impairment relay (src/lab/relay.ts, put on the path by
 * src/lab/relay-path.ts) carries every tunnel datagram between node 1 and node 2 and, by
 * seeded rules, drops, duplicates, delays (fixed + jitter) and reorders them, while node 2
 * still sees node 1's PublicIP:8285 as the sender (and back). For the native engine with
 * offloads on and off, and for the js engine: TCP transfers each way arrive intact (sha256
 * compared), every rule fired, and the daemons counted no datagram as malformed, spoofed or
 * from an unknown peer. Prints a transfer table. OVERLAYD_TEST_SEED overrides the seed.
 *
 * With offloads on, the senders' UDP_SEGMENT sends, TUN super-packet cuts and TUN GRO writes
 * all run under impairment. UDP GRO receive batches do not form behind the relay (it sends
 * one datagram per syscall, and each reaches the node on its own), so that path is left to
 * offloads.test.ts and the fuzz target.
 */
import t from 'tap';
import { isRoot } from '../helpers/exec';
import { OFFLOADS_OFF as OFF, checkNoNamespacesLeft, nodePair, startNodeDaemons, statusOf } from '../helpers/node-pair';
import { flatCounters } from '../../src/ops/status-types';
import { tcpTransfer, type TransferResult } from '../helpers/transfer';
import { impairUnderlay, relayRules, type RelayReport } from '../../src/lab/relay-path';
import type { LinkCounts } from '../../src/lab/relay';
import { decide, type ImpairRules } from '../../src/lab/impair';

const SEED = Number(process.env['OVERLAYD_TEST_SEED'] || 10) >>> 0;
const RULES: ImpairRules = { drop: 0.005, duplicate: 0.01, reorder: 0.02, reorderDepth: 3, reorderHoldMs: 20, delayMs: 1, jitterMs: 2 };
const BYTES = 12 * 1024 * 1024;

interface Case { readonly name: string; readonly args: readonly string[]; readonly offloads: boolean }
const CASES: readonly Case[] = [
  { name: 'native, offloads on', args: ['--engine', 'native'], offloads: true },
  { name: 'native, offloads off', args: ['--engine', 'native', ...OFF], offloads: false },
  { name: 'js engine', args: ['--engine', 'js'], offloads: false },
];


/** The index of the first datagram of a direction for which the seeded rules decide `what`. */
function firstIndex(direction: number, what: (d: ReturnType<typeof decide>) => boolean): number {
  for (let i = 0; i < 1_000_000; i++) if (what(decide(RULES, SEED, direction, i))) return i;
  return Infinity;
}

const rulesText = `drop ${RULES.drop * 100}%, dup ${RULES.duplicate * 100}%, reorder ${RULES.reorder * 100}% depth ${RULES.reorderDepth}, delay ${RULES.delayMs}+${RULES.jitterMs} ms`;
const table: string[] = [];
const prefixes: string[] = [];

if (!isRoot) {
  t.skip('e2e impairment test needs root (network namespaces, TUN devices, nftables)', () => undefined);
} else {
  t.comment(`seed ${SEED}; rules: ${rulesText}`);
  // what the seed decides for direction 0 (1->2): a datagram count past these makes each rule fire
  t.comment(`first datagram of 1->2 dropped #${firstIndex(0, (d) => d.drop)}, duplicated #${firstIndex(0, (d) => !d.drop && d.copies === 2)}, held for reordering #${firstIndex(0, (d) => !d.drop && d.reorder)}`);
  let port = 5300;
  for (const c of CASES) {
    t.test(c.name, async (t) => {
      const topo = nodePair(t, prefixes);
      const relay = await impairUnderlay(topo, { seed: SEED, rules: RULES });
      t.teardown(async () => { await relay.stop().catch(() => undefined); });
      const args = [...c.args, '--iface', 'eth0'];
      await startNodeDaemons(t, topo, [args, args]);
      const [n1, n2] = [topo.node(1), topo.node(2)];
      const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];

      /** what the relay did during one transfer: data = its direction, acks = the other */
      const results: { dir: string; r: TransferResult; data: LinkCounts; acks: LinkCounts }[] = [];
      const minus = (a: LinkCounts, b: LinkCounts): LinkCounts => {
        const d = { ...a };
        for (const k of Object.keys(d) as (keyof LinkCounts)[]) if (k !== 'maxDelayMs') d[k] = a[k] - b[k];
        return d;
      };
      for (const [from, to, dir, back] of [[p1, p2, '1->2', '2->1'], [p2, p1, '2->1', '1->2']] as const) {
        const before = await relay.snapshot();
        const r = await tcpTransfer(from, to, port++, BYTES, 150_000);
        const after = await relay.snapshot();
        results.push({ dir, r, data: minus(after.links[dir]!, before.links[dir]!), acks: minus(after.links[back]!, before.links[back]!) });
        t.equal(r.clientCode, 0, `${dir}: sender exits 0`, { stderr: r.stderr });
        t.equal(r.serverCode, 0, `${dir}: receiver exits 0`, { stderr: r.stderr });
        t.equal(r.got.split(' ')[0], String(BYTES), `${dir}: every byte arrived`);
        t.equal(r.got, r.sent, `${dir}: intact (sha256 of received bytes equals sent)`);
        const d = results[results.length - 1]!.data;
        t.ok(d.dropped > 0 && d.duplicated > 0 && d.reordered > 0 && d.delayed > 0,
          `${dir}: every rule fired on the data (${d.received} datagrams: ${d.dropped} dropped, ${d.duplicated} duplicated, ${d.reordered} reordered, ${d.delayed} delayed)`);
      }

      const [s1, s2] = [statusOf(topo, n1.ns, 30_000), statusOf(topo, n2.ns, 30_000)];
      const nft = relayRules(topo);
      const report: RelayReport = await relay.stop();
      const [l12, l21] = [report.links['1->2']!, report.links['2->1']!];
      const sum = (k: keyof typeof l12) => l12[k] + l21[k];

      // the relay was on the path and every rule fired
      t.ok(l12.received > 0 && l21.received > 0, `the relay carried both directions (${l12.received} / ${l21.received} datagrams)`, { nft });
      t.equal(l12.sendErrors + l21.sendErrors, 0, 'the relay sent every datagram it decided to send');
      t.equal(sum('sent'), sum('received') - sum('dropped') + sum('duplicated'), 'sent = received - dropped + duplicated');
      t.ok(sum('dropped') > 0, `dropped ${sum('dropped')}`);
      t.ok(sum('duplicated') > 0, `duplicated ${sum('duplicated')}`);
      t.ok(sum('delayed') > 0, `delayed ${sum('delayed')}`);
      t.ok(sum('reordered') > 0, `reordered ${sum('reordered')} (overtaken by later datagrams)`);

      // the relay's datagrams look like the peer's own: nothing rejected or mangled
      for (const [name, s] of [['node 1', s1], ['node 2', s2]] as const) {
        const flat = s.counters ? flatCounters(s.counters) : {};
        for (const k of ['drops.unknown_peer', 'drops.spoofed', 'drops.malformed']) t.equal(flat[k], 0, `${name}: ${k} 0`);
      }
      const a1 = s1.offloads?.activity;
      const a2 = s2.offloads?.activity;
      if (c.offloads) {
        t.ok((a1?.udp_gso_sends ?? 0) > 0 && (a2?.udp_gso_sends ?? 0) > 0, `both nodes sent UDP_SEGMENT messages into the relay (${a1?.udp_gso_sends} / ${a2?.udp_gso_sends})`);
        t.ok((a1?.tun_gro_writes ?? 0) > 0 && (a2?.tun_gro_writes ?? 0) > 0, `both nodes coalesced TCP segments into their TUN (${a1?.tun_gro_writes} / ${a2?.tun_gro_writes})`);
      } else if (a1 && a2) {
        t.same([a1, a2].map((a) => a.udp_gso_sends + a.tun_gso_reads + a.tun_gro_writes + a.udp_gro_recvs), [0, 0], 'no offload used');
      }
      t.comment(`offload activity node 1 ${JSON.stringify(a1 ?? null)}, node 2 ${JSON.stringify(a2 ?? null)}`);

      for (const { dir, r, data: l, acks } of results) {
        const mbps = r.ms > 0 ? ((BYTES * 8) / r.ms / 1000).toFixed(1) : '-';
        table.push([c.name.padEnd(20), dir, String(BYTES).padStart(8),
          `${String(l.received).padStart(6)} ${String(l.reordered).padStart(4)} ${String(l.duplicated).padStart(4)} ${String(l.dropped).padStart(4)} ${String(l.delayed).padStart(6)}`,
          `${String(acks.received).padStart(6)} ${String(acks.reordered).padStart(4)} ${String(acks.duplicated).padStart(4)} ${String(acks.dropped).padStart(4)}`,
          `${(r.ms / 1000).toFixed(1).padStart(5)} s ${mbps.padStart(5)} Mbit/s`, r.ok ? 'intact' : 'FAILED'].join(' | '));
      }
    });
  }

  t.test('transfer table', async (t) => {
    t.comment(`rules (seed ${SEED}): ${rulesText}; relay counts per datagram; data = the direction of the transfer's data, acks = the other`);
    t.comment(['setup               ', 'dir ', '   bytes', 'data: rcvd reor  dup drop delayd', 'acks: rcvd reor  dup drop', 'time, rate (diagnostic)', 'result'].join(' | '));
    for (const line of table) t.comment(line);
    t.equal(table.length, 2 * CASES.length, 'a row per transfer');
    t.notOk(table.some((l) => l.endsWith('FAILED')), 'every transfer intact');
  });

  checkNoNamespacesLeft(prefixes);
}
