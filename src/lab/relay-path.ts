/**
 * Puts the impairment relay (src/lab/relay.ts) on the underlay path of a lab Topology,
 * without netem, nfqueue, IP_TRANSPARENT or conntrack:
 *
 *   node A: route B/32 via 10.99.0.254 (the underlay namespace), so A's tunnel datagrams to
 *           B reach the underlay namespace's IP stack instead of only crossing its bridge
 *   ul prerouting (stateless nftables rewrite): A:P -> B:P  becomes  A:P -> 10.99.0.254:L(A->B)
 *           (the source is kept, so the relay sees the real sender)
 *   relay:  receives on 10.99.0.254:L(A->B), impairs, sends to B:P from that same socket
 *   ul postrouting: 10.99.0.254:L(A->B) -> B:P  becomes  A:P -> B:P
 *
 * B thus receives datagrams from A's PublicIP:P, exactly what its peer check expects, and
 * the return direction is the mirror image on its own relay port. nftables updates the IP
 * and UDP checksums of the rewritten fields. Every change lives in the Topology's own
 * namespaces and goes with them; the relay process is stopped by pid (stop()).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { PORT, UNDERLAY_NET, type Topology } from './topology';
import type { ImpairRules } from './impair';
import type { LinkCounts, RelayConfig, RelayLink } from './relay';

export const RELAY_IP = `${UNDERLAY_NET}.254`;
const RELAY_JS = path.join(__dirname, 'relay.js');
const NFT_TABLE = 'ovl_relay';

export interface RelayReport { readonly links: Record<string, LinkCounts> }

export interface ImpairedUnderlay {
  readonly config: RelayConfig;
  readonly pid: number;
  /** the counts so far (SIGUSR2 to the relay by pid; bounded wait for its answer) */
  snapshot(timeoutMs?: number): Promise<RelayReport>;
  /** SIGTERM to the relay (by pid), bounded wait; resolves its final counts per link ("1->2", "2->1") */
  stop(timeoutMs?: number): Promise<RelayReport>;
}

export interface ImpairOptions {
  readonly seed: number;
  readonly rules: ImpairRules;
  /** node indexes whose tunnel traffic between each other goes through the relay (default [1, 2]) */
  readonly nodes?: readonly number[];
  /** first relay port; one per ordered pair of nodes (default 9400) */
  readonly basePort?: number;
  /** tunnel port P (default the lab's 8285) */
  readonly port?: number;
}

/** Installs the path and starts the relay in the underlay namespace; resolves once it listens (bounded 30 s). */
export async function impairUnderlay(topo: Topology, opts: ImpairOptions): Promise<ImpairedUnderlay> {
  const nodes = (opts.nodes ?? [1, 2]).map((k) => topo.node(k));
  const port = opts.port ?? PORT;
  let next = opts.basePort ?? 9400;
  const links: RelayLink[] = [];
  const rules = [
    `add table ip ${NFT_TABLE}`,
    `add chain ip ${NFT_TABLE} pre { type filter hook prerouting priority -300; }`,
    `add chain ip ${NFT_TABLE} post { type filter hook postrouting priority 300; }`,
  ];
  for (const a of nodes) {
    for (const b of nodes) {
      if (a === b) continue;
      const l = next++;
      links.push({ name: `${a.index}->${b.index}`, listen: { host: RELAY_IP, port: l }, to: { host: b.underlayIp, port } });
      rules.push(`add rule ip ${NFT_TABLE} pre ip saddr ${a.underlayIp} ip daddr ${b.underlayIp} udp dport ${port} ip daddr set ${RELAY_IP} udp dport set ${l} counter`);
      rules.push(`add rule ip ${NFT_TABLE} post ip saddr ${RELAY_IP} udp sport ${l} ip saddr set ${a.underlayIp} udp sport set ${port} counter`);
    }
  }
  const ul = topo.underlayNs;
  // the relay is the only thing forwarding here: no ICMP redirect may send a node around it
  topo.netns.exec(ul, 'sysctl', ['-qw', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.br0.send_redirects=0']);
  topo.netns.exec(ul, 'nft', [rules.join('\n')]);
  for (const a of nodes) {
    topo.netns.exec(a.ns, 'sysctl', ['-qw', 'net.ipv4.conf.all.accept_redirects=0', 'net.ipv4.conf.eth0.accept_redirects=0']);
    for (const b of nodes) if (a !== b) topo.netns.ip(a.ns, 'route', 'add', `${b.underlayIp}/32`, 'via', RELAY_IP, 'dev', 'eth0');
  }

  const config: RelayConfig = { seed: opts.seed, rules: opts.rules, links };
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ul, process.execPath, RELAY_JS, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`relay did not listen within 30 s: ${err}`)); }, 30_000);
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening')) { clearTimeout(timer); resolve(); }
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`relay exited (${code}) before listening: ${err}`)); });
  });
  /** the last complete JSON line printed after `from` (character offset into out) */
  const lineAfter = (from: number): RelayReport | undefined => {
    const lines = out.slice(from).split('\n').filter((l) => l.startsWith('{'));
    return lines.length > 0 && out.endsWith('\n') ? JSON.parse(lines[lines.length - 1]!) as RelayReport : undefined;
  };
  let stopped: Promise<RelayReport> | undefined;
  return {
    config,
    pid: child.pid ?? -1,
    snapshot: async (timeoutMs = 10_000) => {
      const from = out.length;
      child.kill('SIGUSR2');
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const r = lineAfter(from);
        if (r) return r;
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`relay did not report its counts within ${timeoutMs} ms: ${err}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    stop: (timeoutMs = 10_000) => {
      stopped ??= (async () => {
        const from = out.length;
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        const code = await exited;
        clearTimeout(timer);
        const r = lineAfter(from);
        if (code !== 0 || !r) throw new Error(`relay exited ${code}: ${err}`);
        return r;
      })();
      return stopped;
    },
  };
}

/** The nftables counters of the rewrite rules (datagrams that took the relay's path), as text. */
export function relayRules(topo: Topology): string {
  return topo.netns.exec(topo.underlayNs, 'nft', ['list', 'table', 'ip', NFT_TABLE]);
}
