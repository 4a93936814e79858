/**
 * The README's first command, end to end (root only): `npm run demo` builds a 3-node cluster
 * with etcd, shows leases, reachability, throughput and status, and tears everything down;
 * `npm run demo -- --ipv6` does the same dual-stack.
 */
import t from 'tap';
import * as path from 'node:path';
import { isRoot, run } from '../helpers/exec';

const DEMO = path.resolve(__dirname, '..', '..', 'src', 'lab', 'demo.js');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

if (!isRoot) {
  t.skip('the demo needs root', () => undefined);
} else {
  t.test('demo runs end to end and leaves nothing behind', async (t) => {
    const r = run(process.execPath, [DEMO], { timeoutMs: 240_000 });
    const out = r.stdout + r.stderr;
    t.equal(r.status, 0, 'the demo exits 0', { output: out.slice(-3000) });
    const prefix = /namespaces: (ovdemo[0-9a-f]{6})-ul/.exec(out)?.[1];
    t.ok(prefix, 'printed its namespace prefix');
    for (let k = 1; k <= 3; k++) t.match(out, new RegExp(`node ${k} \\(10\\.99\\.0\\.${k}\\): lease 10\\.244\\.\\d+\\.0/24, FLANNEL_MTU=1472`));
    t.match(out, /\{"PublicIP":"10\.99\.0\.1","PublicIPv6":null\}/, 'leases in flannel form');
    t.match(out, /node 1: 2 routes/);
    t.match(out, /all 30 pairs reach each other/);
    t.match(out, /-> 10\.244\.\d+\.\d+: \d+\.\d+ Gbit\/s/);
    t.match(out, /health:\s+ok\n/, 'status: healthy');
    t.match(out, /daemon:\s+pid \d+, overlayd [0-9.]+, up \d+s, engine \w+, route source etcd/);
    t.match(out, /nothing left behind/);
    const pids = [...out.matchAll(/\[pid (\d+)\]/g)].map((m) => Number(m[1]));
    t.equal(pids.length, 3);
    t.same(pids.filter(alive), [], 'no overlayd process left');
    const names = run('ip', ['netns', 'list']).stdout;
    t.notMatch(names, new RegExp(`^${prefix ?? 'none'}-`, 'm'), 'no namespace left');
  });

  t.test('demo --ipv6 runs dual-stack: v6 leases and pods, ping -6 between every pair', async (t) => {
    const r = run(process.execPath, [DEMO, '--ipv6'], { timeoutMs: 240_000 });
    const out = r.stdout + r.stderr;
    t.equal(r.status, 0, 'the demo exits 0', { output: out.slice(-3000) });
    const prefix = /namespaces: (ovdemo[0-9a-f]{6})-ul/.exec(out)?.[1];
    for (let k = 1; k <= 3; k++) {
      t.match(out, new RegExp(`node ${k} \\(10\\.99\\.0\\.${k}\\): lease 10\\.244\\.\\d+\\.0/24 and fd00:10:244:[0-9a-f:]*/64 \\(PublicIPv6 fd99::${k}\\), FLANNEL_MTU=1452`));
    }
    t.match(out, /subnets\/10\.244\.\d+\.0-24&fd00:10:244:[0-9a-f:]*-64\n\s*\{"PublicIP":"10\.99\.0\.1","PublicIPv6":"fd99::1"\}/, 'dual-stack lease in flannel form');
    t.match(out, /all 60 pairs reach each other in both families/);
    t.match(out, /nothing left behind/);
    const pids = [...out.matchAll(/\[pid (\d+)\]/g)].map((m) => Number(m[1]));
    t.same(pids.filter(alive), [], 'no overlayd process left');
    t.notMatch(run('ip', ['netns', 'list']).stdout, new RegExp(`^${prefix ?? 'none'}-`, 'm'), 'no namespace left');
  });
}
