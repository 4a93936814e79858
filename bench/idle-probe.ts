/**
 * Idle-CPU probe (root): one overlayd daemon (real etcd in the lab's underlay namespace, or
 * --static-config) in a two-node lab topology, no traffic; after a settle time, CPU over a
 * window from /proc: self (utime+stime), children (cutime+cstime), per thread.
 *   node dist/bench/idle-probe.js [--seconds 30] [--settle 5] [--static] [-- extra daemon flags]
 */
import * as path from 'node:path';
import { Topology, startDaemon, stopDaemon, type DaemonHandle } from '../src/lab/topology';
import { NsEtcd } from '../src/lab/etcd-ns';
import { idleCpu, threadTicks, formatIdle } from './idle';

const NETWORK_CONFIG = JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'udp', Port: 8285 } });

async function main(argv: string[]): Promise<number> {
  const sep = argv.indexOf('--');
  const extra = sep >= 0 ? argv.slice(sep + 1) : [];
  const own = sep >= 0 ? argv.slice(0, sep) : argv;
  const num = (name: string, dflt: number) => { const i = own.indexOf(name); return i >= 0 ? Number(own[i + 1]) : dflt; };
  const seconds = num('--seconds', 30);
  const settle = num('--settle', 5);
  const isStatic = own.includes('--static');
  const topo = new Topology({ nodes: 2, podsPerNode: 1, tag: 'ovidle' });
  const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
  const daemons: DaemonHandle[] = [];
  let torn: Promise<void> | undefined;
  const teardown = () => (torn ??= (async () => {
    for (const d of daemons) await stopDaemon(d);
    await etcd.stop();
    topo.cleanup();
  })());
  // a closed stdout (`| head`) or a signal must not skip the teardown: daemons, etcd and namespaces by pid/name
  process.stdout.on('error', () => undefined);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void teardown().then(() => process.exit(130)); });
  try {
    const src: string[][] = [];
    if (isStatic) {
      for (const n of topo.nodes) src.push(['--static-config', topo.staticConfig(n.index)]);
    } else {
      await etcd.start();
      const put = etcd.ctl(['put', '/coreos.com/network/config', NETWORK_CONFIG]);
      if (put.status !== 0) throw new Error(`etcdctl put: ${put.stderr}`);
      for (const _ of topo.nodes) src.push(['--etcd-endpoints', etcd.endpoint]);
    }
    // --forward-drop: FORWARD policy drop through iptables-nft, as Docker leaves a host
    if (own.includes('--forward-drop')) for (const n of topo.nodes) topo.netns.exec(n.ns, 'iptables-nft', ['-P', 'FORWARD', 'DROP']);
    for (const n of topo.nodes) {
      daemons.push(await startDaemon(n.ns, ['--engine', 'native', '--iface', 'eth0', ...src[n.index - 1]!,
        '--subnet-file', path.join(topo.tmp, `n${n.index}.env`), ...extra]));
    }
    await new Promise((r) => setTimeout(r, settle * 1000));
    const pid = daemons[0]!.pid;
    const t0 = threadTicks(pid);
    const r = await idleCpu(pid, seconds);
    const t1 = threadTicks(pid);
    process.stdout.write(`${formatIdle(r)}\n`);
    for (const [tid, a] of t1) {
      const b = t0.get(tid);
      process.stdout.write(`  thread ${tid} ${a.name.padEnd(16)} ${b === undefined ? 'new' : `${a.utime - b.utime} utime + ${a.stime - b.stime} stime ticks`}\n`);
    }
    if (own.includes('--strace')) {
      // every thread's system calls over --strace-seconds (default 11), timestamps
      const { spawnSync } = await import('node:child_process');
      const r = spawnSync('timeout', ['-s', 'INT', String(num('--strace-seconds', 11)), 'strace', '-f', '-tt', '-e', 'trace=!futex,mprotect,mmap,munmap,rt_sigprocmask,madvise', '-p', String(pid)], { encoding: 'utf8' });
      process.stdout.write(r.stderr + '\n');
    }
    return 0;
  } finally {
    await teardown();
  }
}

main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e) => { process.stderr.write(`${(e as Error).stack}\n`); process.exitCode = 1; });
