/**
 * Resilience (root only), for each engine: a daemon killed with SIGKILL mid-transfer and
 * restarted gets the same subnet back and the transfer completes intact; a lossy underlay
 * (2% of arriving tunnel datagrams dropped by nftables on input) still carries TCP intact, with no drops of
 * the daemons' own.
 *
 * This kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set), so jitter and reordering
 * cannot be emulated here; loss is done with nftables `numgen random`.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { ENGINES } from '../helpers/engines';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle, type NodeInfo } from '../helpers/topology';
import { tcpTransfer } from '../helpers/transfer';
import { NsEtcd } from '../../src/lab/etcd-ns';
import { parseSubnetFile } from '../../src/control/subnet-file';
import { formatPrefix } from '../../src/net/addr';
import type { StatusDoc } from '../../src/ops/status-types';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** the engine's own drops by reason, plus tx_errors (the status counters, in the words of /metrics) */
function counters(topo: Topology, node: NodeInfo): Record<string, number> {
  const c = (JSON.parse(topo.netns.exec(node.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'])) as StatusDoc).counters;
  if (!c) throw new Error('status has no counters');
  return { ...c.drops, tx_errors: c.tx_errors };
}

if (!isRoot) {
  t.skip('e2e resilience tests need root', () => undefined);
} else {
  for (const engine of ENGINES) {
    t.test(`engine ${engine}: kill -9 mid-transfer and restart`, async (t) => {
      const topo = new Topology({ nodes: 2, podsPerNode: 1, podsNow: false });
      t.teardown(() => topo.cleanup());
      const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
      t.teardown(() => etcd.stop());
      await etcd.start();
      t.equal(etcd.ctl(['put', '/coreos.com/network/config', '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}']).status, 0);
      const daemons = new Map<number, DaemonHandle>();
      t.teardown(async () => { for (const d of daemons.values()) await stopDaemon(d); });
      const args = (k: number) => ['--engine', engine, '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint, '--subnet-file', path.join(topo.tmp, `n${k}.env`)];
      for (const k of [1, 2]) {
        daemons.set(k, await startDaemon(topo.node(k).ns, args(k)));
        const sf = parseSubnetFile(readFileSync(path.join(topo.tmp, `n${k}.env`), 'utf8'));
        topo.addPods(k, formatPrefix(sf.subnet));
      }
      const [n1, n2] = [topo.node(1), topo.node(2)];
      const subnetBefore = n1.subnet;

      const bytes = 16 * 1024 * 1024;
      let started!: () => void;
      const sending = new Promise<void>((r) => { started = r; });
      const xfer = tcpTransfer(n1.pods[0]!, n2.pods[0]!, 5003, bytes, 160_000, { rate: 2 * 1024 * 1024, onStart: started });
      // the kill lands mid-transfer: ~5 MB of the 16 MB sent (or the transfer failed to start)
      await Promise.race([sending, xfer]);
      await sleep(2500);
      const old = daemons.get(1)!;
      const killedAt = Date.now();
      old.child.kill('SIGKILL');
      await old.exited;
      daemons.delete(1);
      const fresh = await startDaemon(n1.ns, args(1), 60_000);
      daemons.set(1, fresh);
      const forwardingLine = fresh.output().split('\n').find((l) => l.includes('"msg":"forwarding"')) ?? '{}';
      const gapMs = (JSON.parse(forwardingLine) as { time?: number }).time! - killedAt;
      t.comment(`gap from SIGKILL to forwarding again: ${gapMs} ms (engine ${engine})`);
      t.ok(gapMs > 0, 'forwarding again after the kill'); // how soon is a diagnostic (above)
      t.notMatch(fresh.output(), /"level":"(warn|error|fatal)"/, 'no warnings or errors reconfiguring over the leftovers', { output: fresh.output() });
      const sf = parseSubnetFile(readFileSync(path.join(topo.tmp, 'n1.env'), 'utf8'));
      t.equal(formatPrefix(sf.subnet), subnetBefore, 'the same subnet came back');

      const r = await xfer;
      const why = { stderr: r.stderr, daemon1: fresh.output().slice(-3000), daemon2: daemons.get(2)?.output().slice(-3000) };
      t.equal(r.clientCode, 0, 'sender finished', why);
      t.equal(r.serverCode, 0, 'receiver finished', why);
      t.equal(r.got, r.sent, 'every byte arrived intact (bytes + sha256)');
      t.equal(Number(r.got.split(' ')[0]), bytes);
    });

    t.test(`engine ${engine}: 2% loss on the underlay`, async (t) => {
      const topo = new Topology({ nodes: 2, podsPerNode: 1 });
      t.teardown(() => topo.cleanup());
      const daemons: DaemonHandle[] = [];
      t.teardown(async () => { for (const d of daemons) await stopDaemon(d); });
      for (const k of [1, 2]) {
        daemons.push(await startDaemon(topo.node(k).ns, ['--engine', engine, '--iface', 'eth0', '--static-config', topo.staticConfig(k), '--subnet-file', path.join(topo.tmp, `n${k}.env`)]));
        topo.netns.exec(topo.node(k).ns, 'nft', ['add table inet lossy; add chain inet lossy in { type filter hook input priority 0; }; add rule inet lossy in udp dport 8285 numgen random mod 100 < 2 counter drop']);
      }
      const [n1, n2] = [topo.node(1), topo.node(2)];
      const before = [counters(topo, n1), counters(topo, n2)];
      const bytes = 16 * 1024 * 1024; // enough tunnel datagrams (even GSO/GRO-batched) that 2% of them is never 0
      const r = await tcpTransfer(n1.pods[0]!, n2.pods[0]!, 5004, bytes, 160_000);
      t.equal(r.clientCode, 0, 'sender finished', { stderr: r.stderr });
      t.equal(r.serverCode, 0, 'receiver finished', { stderr: r.stderr });
      t.equal(r.got, r.sent, 'intact under loss (bytes + sha256)');
      const after = [counters(topo, n1), counters(topo, n2)];
      for (const i of [0, 1]) {
        const own = Object.keys(after[i]!);
        const moved = own.filter((k) => after[i]![k] !== before[i]![k]);
        t.same(moved, [], `node ${i + 1}: no drops of its own`, { before: before[i], after: after[i] });
      }
      // node 2 receives the data direction (node 1 only ACKs, which offloads make few): sum both
      const listings = [n1, n2].map((n) => topo.netns.exec(n.ns, 'nft', ['list', 'table', 'inet', 'lossy']));
      const dropped = listings.reduce((sum, l) => sum + Number(/counter packets (\d+) bytes \d+ drop/.exec(l)?.[1] ?? 0), 0);
      t.ok(dropped > 0, `the loss rule dropped ${dropped} tunnel datagrams`, { listings });
    });
  }
}
