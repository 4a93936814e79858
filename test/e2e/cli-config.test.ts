/**
 * Config mistakes met by the real daemon at start, in a namespace created here (per-run
 * prefix, always deleted): a misspelled key in the static file stops it with one line and
 * exit 1 before anything is built; a misspelled OVERLAYD_* variable is logged as a warning
 * naming the nearest variable.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { isRoot, run } from '../helpers/exec';
import { NetnsSet } from '../helpers/netns';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'overlayd');

if (!isRoot) {
  t.skip('SKIP: e2e cli-config test needs root (network namespace)', () => undefined);
} else {
  const netns = new NetnsSet('ovtc');

  t.test('a static file with "Peer" for "Peers" and OVERLAYD_ETCD_ENDPOINT for OVERLAYD_ETCD_ENDPOINTS', async (t) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'overlayd-cli-'));
    t.teardown(() => {
      netns.cleanup();
      rmSync(dir, { recursive: true, force: true });
    });
    const ns = netns.add('node');
    netns.ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p');
    netns.ip(ns, 'link', 'set', 'eth0', 'up');
    netns.ip(ns, 'addr', 'add', '10.99.0.1/24', 'dev', 'eth0');
    const file = path.join(dir, 'cluster.json');
    writeFileSync(file, JSON.stringify({
      Network: '10.244.0.0/16', Backend: { Type: 'udp', Port: 8285 }, Subnet: '10.244.1.0/24', PublicIP: '10.99.0.1',
      Peer: [{ Subnet: '10.244.2.0/24', PublicIP: '10.99.0.2' }],
    }));
    const subnetFile = path.join(dir, 'subnet.env');
    const r = run('ip', ['netns', 'exec', ns, process.execPath, BIN, '-iface', 'eth0', '-static-config', file, '-subnet-file', subnetFile, '--metrics-addr='], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', OVERLAYD_ETCD_ENDPOINT: 'http://10.99.0.9:2379' },
      timeoutMs: 60_000,
    });
    t.equal(r.status, 1, 'exit 1: it cannot start');
    t.same(r.stderr.split('\n').filter((l) => l !== ''), [`overlayd: unknown key "Peer" in ${file}: did you mean "Peers"?`], 'one line on stderr');
    const logs = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: string; msg: string });
    t.ok(logs.some((l) => l.level === 'warn' && l.msg === 'environment variable OVERLAYD_ETCD_ENDPOINT is not one overlayd reads; ignored: did you mean OVERLAYD_ETCD_ENDPOINTS?'), 'the misspelled variable is warned about', { stdout: r.stdout });
    t.same(netns.ip(ns, '-o', 'link', 'show').split('\n').filter((l) => l !== '').map((l) => l.split(': ')[1]?.split('@')[0]), ['lo', 'eth0p', 'eth0'], 'no TUN left behind');
    t.equal(run('test', ['-e', subnetFile]).status, 1, 'no subnet file written');
  });
}
