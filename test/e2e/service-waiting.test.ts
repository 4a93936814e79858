/**
 * Issue 15 defect 2: while the daemon waits for etcd, then for the network config, it is
 * visible: /healthz answers 503 with the reason and the phase, `overlayd status` answers
 * (exit 1, shows the phase) over the status socket even with --metrics-addr '', and systemd
 * gets STATUS= for each phase. Once the config appears it forwards: 200, exit 0, READY=1.
 */
import t from 'tap';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { Topology, spawnDaemon, waitForLog, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';
import { NotifyReceiver } from '../helpers/notify';
import { NsEtcd } from '../../src/lab/etcd-ns';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const PREFIX = '/coreos.com/network';

interface Status {
  phase: string;
  healthy: boolean;
  reason?: string;
}

if (!isRoot) {
  t.skip('SKIP: e2e service-waiting test needs root (network namespaces, TUN devices)', () => undefined);
} else {
  t.test('waiting for etcd, then for the config: visible in /healthz, status and STATUS=', async (t) => {
    const topo = new Topology({ nodes: 2, podsPerNode: 0 });
    t.teardown(() => topo.cleanup());
    const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
    t.teardown(() => etcd.stop());
    const notify = new NotifyReceiver(path.join(topo.tmp, 'notify.sock'));
    await notify.start();
    t.teardown(() => notify.stop());
    const [n1, n2] = [topo.node(1), topo.node(2)];
    const env = { ...process.env, NOTIFY_SOCKET: notify.socketPath };
    const daemons: DaemonHandle[] = [];
    t.teardown(async () => {
      for (const d of daemons) await stopDaemon(d);
    });
    const common = ['--engine', 'js', '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint];
    // node 1 with the metrics endpoint, node 2 without (status socket only)
    const d1 = spawnDaemon(n1.ns, [...common, '--subnet-file', path.join(topo.tmp, 'n1.env')], env);
    daemons.push(d1);
    const d2 = spawnDaemon(n2.ns, [...common, '--subnet-file', path.join(topo.tmp, 'n2.env'), '--metrics-addr', ''], process.env);
    daemons.push(d2);

    const healthz = () => {
      const r = topo.netns.tryExec(n1.ns, process.execPath, [path.join(FIXTURES, 'http-get.js'), 'http://127.0.0.1:9285/healthz'], 10_000);
      const nl = r.stdout.indexOf('\n');
      return { ok: r.status === 0, status: Number(r.stdout.slice(0, nl)), body: r.stdout.slice(nl + 1) };
    };
    const status = (ns: string, json: boolean) => topo.netns.tryExec(ns, process.execPath, [OVERLAYD_BIN, 'status', ...(json ? ['--json'] : [])], 10_000);
    /** polls `overlayd status --json` (bounded: 40 x 250 ms) until the phase matches */
    const phaseOf = async (ns: string, want: string): Promise<Status | undefined> => {
      let last: Status | undefined;
      for (let i = 0; i < 40; i++) {
        const r = status(ns, true);
        if (r.stdout !== '') last = JSON.parse(r.stdout) as Status;
        if (last?.phase === want) return last;
        await new Promise((res) => setTimeout(res, 250));
      }
      return last;
    };

    const waitingEtcd = `waiting for etcd at ${etcd.endpoint}`;
    await t.test('etcd down: 503 with reason and phase, status exit 1, STATUS=', async (t) => {
      for (const [ns, name] of [[n1.ns, 'node 1'], [n2.ns, 'node 2 (--metrics-addr \'\')']] as const) {
        const s = await phaseOf(ns, waitingEtcd);
        t.equal(s?.phase, waitingEtcd, `${name}: status --json phase`);
        t.equal(s?.healthy, false, `${name}: not healthy`);
        const human = status(ns, false);
        t.equal(human.status, 1, `${name}: overlayd status exits 1 while waiting`);
        t.match(human.stdout, new RegExp(`phase:\\s+${waitingEtcd.replace(/[./]/g, '\\$&')}`), `${name}: human status shows the phase`);
      }
      const h = healthz();
      t.ok(h.ok, '/healthz answers while waiting');
      t.equal(h.status, 503);
      t.same(JSON.parse(h.body), { ok: false, reason: waitingEtcd, phase: waitingEtcd });
      t.ok(await notify.waitFor((m) => m.startsWith(`STATUS=${waitingEtcd}`), 10_000), 'STATUS= names the etcd endpoints');
      t.ok(await notify.waitFor((m) => new RegExp(`^STATUS=${waitingEtcd.replace(/[./]/g, '\\$&')} \\(\\d+s\\)$`).test(m), 20_000), 're-sent while waiting, with the time waited');
      t.notOk(notify.messages().some((m) => /READY=1/.test(m.text)), 'not READY');
      t.equal(d1.child.exitCode, null, 'still running');
    });

    await etcd.start();
    const waitingConfig = `waiting for ${PREFIX}/config`;
    await t.test('etcd up, no config: waiting for <prefix>/config', async (t) => {
      const s = await phaseOf(n1.ns, waitingConfig);
      t.equal(s?.phase, waitingConfig);
      t.equal(s?.reason, waitingConfig);
      const h = healthz();
      t.equal(h.status, 503);
      t.same(JSON.parse(h.body), { ok: false, reason: waitingConfig, phase: waitingConfig });
      t.equal(status(n1.ns, false).status, 1);
      t.ok(await notify.waitFor((m) => m === `STATUS=${waitingConfig}`, 10_000), 'STATUS= names the config key');
    });

    t.equal(etcd.ctl(['put', `${PREFIX}/config`, '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}']).status, 0);
    await t.test('config written: forwarding, 200, status exit 0, READY=1', async (t) => {
      await waitForLog(d1, /"msg":"forwarding"/, 60_000);
      await waitForLog(d2, /"msg":"forwarding"/, 60_000);
      t.equal(healthz().status, 200);
      const r = status(n2.ns, true);
      t.equal(r.status, 0, 'status exit 0 when healthy');
      t.equal((JSON.parse(r.stdout) as Status).phase, 'forwarding');
      t.ok(await notify.waitFor((m) => /^READY=1\n/.test(m), 10_000), 'READY=1 sent');
      const texts = notify.messages().map((m) => m.text);
      const iEtcd = texts.findIndex((m) => m.startsWith(`STATUS=${waitingEtcd}`));
      const iConfig = texts.indexOf(`STATUS=${waitingConfig}`);
      const iReady = texts.findIndex((m) => m.startsWith('READY=1'));
      t.ok(iEtcd >= 0 && iEtcd < iConfig && iConfig < iReady, `phases in order: ${JSON.stringify(texts)}`);
    });
  });
}
