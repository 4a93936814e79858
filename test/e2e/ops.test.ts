/**
 * Operating overlayd (root only): the systemd notify protocol against a real unix datagram
 * socket, the single-instance rule, /metrics and /healthz, `overlayd status --json`, and
 * --ip-masq with nftables. Two nodes in network namespaces with a static route source.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { isRoot, run } from '../helpers/exec';
import { udpWho } from '../helpers/udp-who';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A stand-in for systemd's notify socket: prints "<ms> <json message>" per datagram, ms = the
 * kernel's timestamp of the send (SO_TIMESTAMPNS), so a receiver that a loaded machine
 * stalls does not bunch up or spread the messages' times.
 */
const NOTIFY_RECEIVER = `
import json, socket, struct, sys
SO_TIMESTAMPNS = 35
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.settimeout(120)
print("bound", flush=True)
while True:
    data, anc, _flags, _addr = s.recvmsg(4096, 1024)
    ts = [struct.unpack("qq", d[:16]) for (lvl, typ, d) in anc if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS]
    print("%.3f" % (ts[0][0] * 1000 + ts[0][1] / 1e6), json.dumps(data.decode()), flush=True)
`;

function httpGet(topo: Topology, ns: string, url: string): { status: number; body: string } {
  const out = topo.netns.exec(ns, process.execPath, [path.join(FIXTURES, 'http-get.js'), url], 10_000);
  const nl = out.indexOf('\n');
  return { status: Number(out.slice(0, nl)), body: out.slice(nl + 1) };
}

function metricValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  const fam = parsePrometheusTextFormat(text).find((f) => f.name === name);
  const sample = fam?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample?.value === undefined ? undefined : Number(sample.value);
}

if (!isRoot) {
  t.skip('e2e ops tests need root (network namespaces, TUN devices, nftables)', () => undefined);
} else {
  t.test('operations', async (t) => {
    const topo = new Topology({ nodes: 2, podsPerNode: 1 });
    t.teardown(() => topo.cleanup());
    const [n1, n2] = [topo.node(1), topo.node(2)];
    const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
    const daemons: DaemonHandle[] = [];
    const children: ChildProcess[] = [];
    t.teardown(async () => {
      for (const c of children) if (c.exitCode === null) c.kill();
      for (const d of daemons) await stopDaemon(d);
    });
    const args = (k: number, extra: string[] = []) => ['--engine', 'js', '--iface', 'eth0', '--static-config', topo.staticConfig(k), '--subnet-file', path.join(topo.tmp, `n${k}.env`), ...extra];

    // systemd stand-in
    const sock = path.join(topo.tmp, 'notify.sock');
    const receiver = spawn('python3', ['-c', NOTIFY_RECEIVER, sock], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(receiver);
    let notes = '';
    receiver.stdout.on('data', (d: Buffer) => { notes += d.toString(); });
    for (const t0 = Date.now(); !notes.includes('bound') && Date.now() - t0 < 30_000;) await sleep(50);
    t.ok(notes.includes('bound'), 'the notify socket stand-in is bound');
    const messages = () => notes.split('\n').slice(1).filter((l) => l !== '').map((l) => {
      const sp = l.indexOf(' ');
      return { ms: Number(l.slice(0, sp)), text: JSON.parse(l.slice(sp + 1)) as string };
    });

    const env = { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: '300000' };
    const d1 = await startDaemon(n1.ns, args(1, ['--ip-masq']), 20_000, env);
    daemons.push(d1);
    const d2 = await startDaemon(n2.ns, args(2));
    daemons.push(d2);

    t.test('sd_notify: STATUS= phases, then READY=1 once routes are in; then WATCHDOG=1 at half the interval', async (t) => {
      const WANT = 21; // 20 gaps
      for (const t0 = Date.now(); messages().filter((m) => m.text === 'WATCHDOG=1').length < WANT && Date.now() - t0 < 60_000;) await sleep(100);
      const msgs = messages();
      t.ok(msgs.length > 0, 'messages arrived');
      const iReady = msgs.findIndex((m) => /^READY=1\n/.test(m.text));
      t.ok(iReady >= 0, 'READY=1 sent');
      t.ok(msgs.slice(0, iReady).every((m) => m.text.startsWith('STATUS=')), `before READY=1 only STATUS= (the phases): ${JSON.stringify(msgs.slice(0, iReady).map((m) => m.text))}`);
      const first = msgs[iReady]?.text ?? '';
      t.match(first, new RegExp(`\\nMAINPID=${d1.pid}(\\n|$)`), 'MAINPID is the daemon');
      t.match(first, /STATUS=forwarding for 10\.244\.1\.0\/24, 1 routes/, 'routes were in when READY was sent');
      const wd = msgs.filter((m) => m.text === 'WATCHDOG=1').slice(0, WANT);
      t.equal(wd.length, WANT, `WATCHDOG=1 x${wd.length}`);
      // WATCHDOG_USEC=300000: every 150 ms. A timer never fires early, so 20 gaps average >= ~150
      // (not a quarter interval, not a unit mistake); a stalled loop only lengthens gaps, so the
      // shortest of 20 shows the configured interval (half, not the full 300 ms) unless every
      // one of them was stalled by 140 ms
      const gaps = wd.slice(1).map((m, i) => m.ms - wd[i]!.ms);
      const mean = (wd[wd.length - 1]!.ms - wd[0]!.ms) / gaps.length;
      t.comment(`watchdog gaps (ms, kernel send times): ${gaps.map((g) => g.toFixed(0)).join(',')}`);
      t.ok(mean >= 140, `mean gap ${mean.toFixed(1)} ms >= 140: not faster than half the interval`);
      t.ok(Math.min(...gaps) < 290, `shortest gap ${Math.min(...gaps).toFixed(1)} ms < 290: half the interval, not the whole`);
      t.equal(msgs.filter((m) => /READY=1/.test(m.text)).length, 1, 'READY only once');
    });

    t.test('a second instance in the same namespace refuses to start', async (t) => {
      const r = topo.netns.tryExec(n1.ns, process.execPath, [OVERLAYD_BIN, ...args(1, ['--tun-name', 'other0', '--metrics-addr', '127.0.0.1:9299'])], 20_000);
      t.not(r.status, 0);
      t.match(r.stderr, /another overlayd instance is already running in this network namespace/);
      t.equal(run('ip', ['-n', n1.ns, 'link', 'show', 'other0']).status, 1, 'it created nothing');
      t.equal(httpGet(topo, n1.ns, 'http://127.0.0.1:9285/healthz').status, 200, 'the first keeps running');
    });

    t.test('/metrics in Prometheus text format, counters move with traffic', async (t) => {
      const before = httpGet(topo, n1.ns, 'http://127.0.0.1:9285/metrics');
      t.equal(before.status, 200);
      const sel = { engine: 'js', queue: '0', direction: 'udp_sent' };
      const sent0 = metricValue(before.body, 'overlayd_packets_total', sel);
      t.type(sent0, 'number');
      t.equal(metricValue(before.body, 'overlayd_routes', {}), 1);
      t.ok(metricValue(before.body, 'overlayd_drops_total', { reason: 'spoofed', engine: 'js' }) !== undefined, 'drops by reason');
      t.equal(topo.netns.tryExec(p1.ns, 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', p2.ip]).status, 0);
      const after = httpGet(topo, n1.ns, 'http://127.0.0.1:9285/metrics').body;
      t.ok((metricValue(after, 'overlayd_packets_total', sel) ?? 0) >= (sent0 ?? 0) + 3, 'udp_sent moved by the 3 pings');
      t.ok((metricValue(after, 'overlayd_bytes_total', sel) ?? 0) > 0);
    });

    t.test('/healthz and status --json', async (t) => {
      const h = httpGet(topo, n1.ns, 'http://127.0.0.1:9285/healthz');
      t.equal(h.status, 200);
      const s = JSON.parse(topo.netns.exec(n1.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'])) as { routes: { subnet: string; publicIp: string }[]; lease: { subnet: string }; engine: string };
      t.same(s.routes.map((r) => `${r.subnet}>${r.publicIp}`), [`${n2.subnet}>${n2.underlayIp}`]);
      t.equal(s.lease.subnet, n1.subnet);
      t.equal(s.engine, 'js');
      const human = topo.netns.exec(n1.ns, process.execPath, [OVERLAYD_BIN, 'status']);
      t.match(human, new RegExp(`${n2.subnet.replace(/\./g, '\\.')}\\s+via ${n2.underlayIp.replace(/\./g, '\\.')}`));
      const none = topo.netns.tryExec(topo.underlayNs, process.execPath, [OVERLAYD_BIN, 'status']);
      t.equal(none.status, 3, 'no daemon in the underlay namespace');
      t.match(none.stderr, /no overlayd daemon answers/);
    });

    t.test('--ip-masq: out of the Network via the node address, inside it the pod keeps its source', async (t) => {
      t.match(readFileSync(path.join(topo.tmp, 'n1.env'), 'utf8'), /^FLANNEL_IPMASQ=true$/m);
      t.match(readFileSync(path.join(topo.tmp, 'n2.env'), 'utf8'), /^FLANNEL_IPMASQ=false$/m);
      t.match(topo.netns.exec(n1.ns, 'nft', ['list', 'table', 'ip', 'overlayd']), /masquerade/);
      const send = (ns: string, dst: string, port: number) =>
        topo.netns.exec(ns, process.execPath, [path.join(FIXTURES, 'udp-send.js'), '0.0.0.0', '0', dst, String(port), '68656c6c6f']);
      // outside the Network: the underlay bridge address
      let who = await udpWho(topo.underlayNs, '10.99.0.254', 7001);
      send(p1.ns, '10.99.0.254', 7001);
      t.equal(await who.sender, n1.underlayIp, 'pod on the masquerading node leaves as the node');
      who = await udpWho(topo.underlayNs, '10.99.0.254', 7002);
      send(p2.ns, '10.99.0.254', 7002);
      t.equal(await who.sender, p2.ip, 'node 2 runs without --ip-masq: source kept');
      // inside the Network
      who = await udpWho(p2.ns, p2.ip, 7003);
      send(p1.ns, p2.ip, 7003);
      t.equal(await who.sender, p1.ip, 'pod-to-pod keeps the pod source');
    });

    t.test('SIGTERM: STOPPING=1 last, masquerade table removed; restart after kill -9 restores it', async (t) => {
      const { code } = await stopDaemon(d1, 30_000);
      t.equal(code, 0);
      daemons.splice(daemons.indexOf(d1), 1);
      for (const t0 = Date.now(); !messages().some((m) => m.text === 'STOPPING=1') && Date.now() - t0 < 30_000;) await sleep(50);
      const msgs = messages();
      t.equal(msgs[msgs.length - 1]?.text, 'STOPPING=1', 'STOPPING=1 is the last message');
      t.not(topo.netns.tryExec(n1.ns, 'nft', ['list', 'table', 'ip', 'overlayd']).status, 0, 'table gone');
      const again = await startDaemon(n1.ns, args(1, ['--ip-masq']));
      again.child.kill('SIGKILL');
      await again.exited;
      t.equal(topo.netns.tryExec(n1.ns, 'nft', ['list', 'table', 'ip', 'overlayd']).status, 0, 'kill -9 leaves the table');
      const third = await startDaemon(n1.ns, args(1, ['--ip-masq']));
      daemons.push(third);
      const rules = topo.netns.exec(n1.ns, 'nft', ['list', 'table', 'ip', 'overlayd']);
      t.equal(rules.match(/masquerade/g)?.length, 2, 'restored once, not duplicated (flanneld\'s two masquerade rules)');
      t.equal(topo.netns.tryExec(p1.ns, 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '2', p2.ip]).status, 0, 'forwarding again');
    });
  });
}
