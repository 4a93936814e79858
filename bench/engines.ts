/** Which forwarding setups the two-node benchmark can run, and why not when it cannot. */
import { parseDaemonArgs } from '../src/config';

export const ALL_SETUPS = ['vxlan', 'vxlan6', 'direct-routing', 'native', 'native-pc', 'native-q2', 'native-nooff', 'js'] as const;
export type Setup = (typeof ALL_SETUPS)[number];
/** the in-kernel references: VXLAN over the IPv4 underlay, and over the IPv6 underlay (dual-stack runs) */
export type KernelSetup = 'vxlan' | 'vxlan6';
export type DaemonSetup = Exclude<Setup, KernelSetup>;
export const isKernelSetup = (s: Setup): s is KernelSetup => s === 'vxlan' || s === 'vxlan6';

/** The offload switches of the daemon, all off (issue 7). */
export const OFFLOADS_OFF = ['--tun-offload', 'false', '--udp-gso', 'false', '--udp-gro', 'false'] as const;

/**
 * The daemon flags of an overlayd setup: native = the native engine as configured by
 * default (offloads on), native-pc = the same with --partial-checksums on both nodes (each
 * advertised to the other in the static config), native-q2 = the same as native with --queues 2 (two forwarding threads, two
 * TUN queues, two sockets), native-nooff = the native engine with every offload off, js;
 * direct-routing = the native engine with Backend.DirectRouting in the static config (the
 * two nodes share a link: pod traffic takes kernel routes, the daemon only installs them).
 */
export function daemonArgs(setup: DaemonSetup): string[] {
  switch (setup) {
    case 'native': return ['--engine', 'native'];
    case 'native-pc': return ['--engine', 'native', '--partial-checksums'];
    case 'native-q2': return ['--engine', 'native', '--queues', '2'];
    case 'direct-routing': return ['--engine', 'native'];
    case 'native-nooff': return ['--engine', 'native', ...OFFLOADS_OFF];
    case 'js': return ['--engine', 'js'];
  }
}

export interface Availability {
  readonly available: boolean;
  /** why not, when not available */
  readonly reason?: string;
}

/**
 * vxlan needs only the kernel (checked when the device is created); vxlan6 also an IPv6
 * underlay, which only a dual-stack run (`ipv6`) has. An overlayd engine is
 * available when the daemon's own flag parser accepts `--engine NAME` (the same code path
 * as `overlayd --engine NAME ...`, with an empty environment so OVERLAYD_* cannot interfere).
 */
export function probeSetup(setup: Setup, ipv6 = false): Availability {
  if (setup === 'vxlan') return { available: true };
  if (setup === 'vxlan6') return ipv6 ? { available: true } : { available: false, reason: 'needs the dual-stack run (--ipv6 on): the nodes have no IPv6 underlay' };
  try {
    const args = daemonArgs(setup);
    const parsed = parseDaemonArgs([...args, '--static-config', '/nonexistent-bench-probe.json'], {});
    if (parsed.kind !== 'daemon' || parsed.config.engine !== args[1]) return { available: false, reason: `overlayd did not take ${args.join(' ')}` };
    return { available: true };
  } catch (err) {
    return { available: false, reason: `overlayd rejects ${daemonArgs(setup).join(' ')}: ${(err as Error).message}` };
  }
}

export function parseSetups(list: string): Setup[] {
  const names = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const n of names) {
    if (!(ALL_SETUPS as readonly string[]).includes(n)) throw new Error(`--engines: "${n}" is not one of ${ALL_SETUPS.join(', ')}`);
  }
  // always in the order: the kernel reference first, then native, then js
  return ALL_SETUPS.filter((s) => names.includes(s));
}
