/**
 * Issue 15 defect 4: net.ipv4.ip_forward=0 on a node. overlayd turns it on at start and
 * says so (pods then reach the other node); where it cannot (read-only /proc/sys) it refuses
 * to start with a message naming the sysctl and leaves nothing behind.
 */
import t from 'tap';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { isRoot } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';

if (!isRoot) {
  t.skip('SKIP: e2e ip-forward test needs root (network namespaces, TUN devices)', () => undefined);
} else {
  t.test('ip_forward=0 on a node', async (t) => {
    const topo = new Topology({ nodes: 2, podsPerNode: 1 });
    t.teardown(() => topo.cleanup());
    const [n1, n2] = [topo.node(1), topo.node(2)];
    const daemons: DaemonHandle[] = [];
    t.teardown(async () => {
      for (const d of daemons) await stopDaemon(d);
    });
    const args = (k: number) => ['--iface', 'eth0', '--static-config', topo.staticConfig(k), '--subnet-file', path.join(topo.tmp, `n${k}.env`)];
    const ipForward = (ns: string) => topo.netns.exec(ns, 'sysctl', ['-n', 'net.ipv4.ip_forward']).trim();

    await t.test('it is turned on, logged, and pods reach the other node', async (t) => {
      topo.netns.exec(n1.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
      t.equal(ipForward(n1.ns), '0', 'precondition: off on node 1');
      const d1 = await startDaemon(n1.ns, args(1));
      daemons.push(d1);
      daemons.push(await startDaemon(n2.ns, args(2)));
      t.equal(ipForward(n1.ns), '1', 'turned on');
      const line = d1.output().split('\n').find((l) => l.includes('"sysctl":"net.ipv4.ip_forward"'));
      t.ok(line, 'a log line names the sysctl');
      t.match(line ?? '', /"level":"warn"/, 'as a warning');
      t.equal(topo.netns.tryExec(n1.ns, 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '3', '-I', '10.244.1.1', n2.pods[0]!.ip]).status, 0, 'node 1 reaches the pod on node 2');
      t.equal(topo.netns.tryExec(n1.pods[0]!.ns, 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '3', n2.pods[0]!.ip]).status, 0, 'pod on node 1 reaches the pod on node 2');
      const { code } = await stopDaemon(d1);
      t.equal(code, 0);
      daemons.splice(daemons.indexOf(d1), 1);
    });

    await t.test('it cannot be set (read-only /proc/sys): refuses, naming the sysctl, leaves nothing', async (t) => {
      topo.netns.exec(n1.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
      const script = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"';
      const r = topo.netns.tryExec(n1.ns, 'unshare', ['-m', 'sh', '-c', script, 'sh', OVERLAYD_BIN, ...args(1)], 30_000);
      t.equal(r.status, 1, 'exit 1');
      t.match(r.stderr, /net\.ipv4\.ip_forward is 0 and cannot be set .*sysctl -w net\.ipv4\.ip_forward=1/, 'the message names the sysctl and the fix');
      t.equal(ipForward(n1.ns), '0', 'still off');
      t.not(topo.netns.tryExec(n1.ns, 'ip', ['link', 'show', 'flannel0']).status, 0, 'no TUN created');
      t.equal(topo.netns.tryExec(n1.ns, process.execPath, [OVERLAYD_BIN, 'status']).status, 3, 'no daemon left');
    });

    await t.test('as under systemd (stdout and stderr the journal stream): reported once, with its priority', async (t) => {
      // the journal stand-in: one file for stdout and stderr, named by JOURNAL_STREAM as systemd does
      const file = path.join(topo.tmp, 'journal.out');
      const fd = openSync(file, 'w');
      const st = fstatSync(fd);
      const script = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"';
      const child = spawn('ip', ['netns', 'exec', n1.ns, 'unshare', '-m', 'sh', '-c', script, 'sh', OVERLAYD_BIN, ...args(1)],
        { stdio: ['ignore', fd, fd], env: { ...process.env, JOURNAL_STREAM: `${st.dev}:${st.ino}` } });
      closeSync(fd);
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
      clearTimeout(timer);
      t.equal(code, 1);
      const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
      const mentions = lines.filter((l) => l.includes('cannot be set'));
      t.equal(mentions.length, 1, 'the fatal error appears once', { lines });
      t.match(mentions[0] ?? '', /^<2>\{.*"level":"fatal"/, 'with priority <2> (crit)');
      t.ok(lines.every((l) => /^<[0-7]>\{/.test(l)), 'every line carries its priority');
      t.match(lines[0] ?? '', /^<6>\{.*"msg":"overlayd starting"/, 'the start line, info');
    });
  });
}
