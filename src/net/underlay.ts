/**
 * Picks the underlay interface the way flanneld does (its ipmatch.LookupExtIface):
 *   1. each --iface in order (a name, or an IPv4 address of an interface): the first that exists;
 *   2. then each --iface-regex in order: the first interface with an IPv4 address the
 *      expression matches, else the first interface whose name it matches;
 *   3. then --iface-can-reach: the interface (and source address) of `ip route get ADDR`;
 *   4. none of them given: the interface of the IPv4 default route.
 * When something is given and nothing matches, a ConfigError lists what was tried.
 * All lookups go through ip(8) in this process's network namespace.
 */
import { ConfigError, errorMessage } from '../errors';
import type { UnderlaySelection } from '../config';
import { isIp } from './addr';
import { formatIp6, parseIp6 } from './addr6';
import { ip, type Underlay } from './link';

interface IpAddrInfo { family?: string; local?: string; scope?: string; deprecated?: boolean; tentative?: boolean; dadfailed?: boolean }
interface IpLink { ifname: string; mtu: number; addr_info?: IpAddrInfo[] }
interface IpRoute { dev?: string; prefsrc?: string }

/** Runs `ip args...` and resolves its stdout (link.ts's `ip`; a fake in unit tests). */
export type IpRunner = (args: readonly string[]) => Promise<string>;

function ipv4s(l: IpLink): string[] {
  return (l.addr_info ?? []).filter((a) => a.family === 'inet' && a.local !== undefined).map((a) => a.local as string);
}

function underlayOf(l: IpLink, address?: string): Underlay {
  return { name: l.ifname, mtu: l.mtu, address: address ?? ipv4s(l)[0] };
}

/** True when an interface of this network namespace holds the IPv4 address (else: NAT in front of us, or a wrong address). */
export async function isLocalAddress(addr: string, run: IpRunner = ip): Promise<boolean> {
  const all = JSON.parse(await run(['-j', 'addr', 'show'])) as IpLink[];
  return all.some((l) => ipv4s(l).includes(addr));
}

/** True when an interface of this network namespace holds the IPv6 address (compared as numbers, any text form). */
export async function isLocalAddress6(addr: bigint, run: IpRunner = ip): Promise<boolean> {
  const all = JSON.parse(await run(['-j', 'addr', 'show'])) as IpLink[];
  return all.some((l) => (l.addr_info ?? []).some((a) => a.family === 'inet6' && a.local !== undefined && parseIp6(a.local) === addr));
}

/**
 * The PublicIPv6 a dual-stack node uses without --public-ipv6 (flanneld takes its underlay
 * interface's IPv6 address too): the first scope-global IPv6 address of interface `name` that
 * is not deprecated, tentative or DAD-failed, in canonical text; undefined when it has none
 * (inner IPv6 then rides the IPv4 underlay).
 */
export async function underlayIpv6(name: string, run: IpRunner = ip): Promise<string | undefined> {
  const all = JSON.parse(await run(['-j', 'addr', 'show'])) as IpLink[];
  const link = all.find((l) => l.ifname === name);
  for (const a of link?.addr_info ?? []) {
    if (a.family !== 'inet6' || a.scope !== 'global' || a.local === undefined || a.deprecated || a.tentative || a.dadfailed) continue;
    const v = parseIp6(a.local);
    if (v !== undefined) return formatIp6(v);
  }
  return undefined;
}

/** The underlay interface chosen by `sel` (see the module comment). */
export async function selectUnderlay(sel: UnderlaySelection, run: IpRunner = ip): Promise<Underlay> {
  const all = JSON.parse(await run(['-j', 'addr', 'show'])) as IpLink[];
  const tried: string[] = [];

  for (const want of sel.iface) {
    if (isIp(want)) {
      const l = all.find((x) => ipv4s(x).includes(want));
      if (l) return underlayOf(l, want);
      tried.push(`--iface ${want} (no interface has this address)`);
    } else {
      const l = all.find((x) => x.ifname === want);
      if (l) return underlayOf(l);
      tried.push(`--iface ${want} (no such interface)`);
    }
  }

  for (const source of sel.ifaceRegex) {
    const re = new RegExp(source);
    for (const l of all) {
      const addr = ipv4s(l).find((a) => re.test(a));
      if (addr !== undefined) return underlayOf(l, addr);
    }
    const byName = all.find((l) => re.test(l.ifname));
    if (byName) return underlayOf(byName);
    tried.push(`--iface-regex ${source} (matches no interface address or name)`);
  }

  if (sel.ifaceCanReach !== undefined) {
    let routes: IpRoute[] = [];
    try {
      routes = JSON.parse(await run(['-j', '-4', 'route', 'get', sel.ifaceCanReach])) as IpRoute[];
    } catch (err) {
      tried.push(`--iface-can-reach ${sel.ifaceCanReach} (${errorMessage(err).trim()})`);
    }
    const route = routes.find((r) => r.dev !== undefined);
    const l = route && all.find((x) => x.ifname === route.dev);
    if (l) return underlayOf(l, route?.prefsrc);
    if (routes.length > 0) tried.push(`--iface-can-reach ${sel.ifaceCanReach} (the route has no interface)`);
  }

  if (tried.length > 0) {
    const present = all.map((l) => `${l.ifname}${ipv4s(l).length ? ` ${ipv4s(l).join(',')}` : ''}`).join('; ');
    throw new ConfigError(`no underlay interface matches: ${tried.join(', ')}; interfaces here: ${present}`);
  }

  const routes = JSON.parse(await run(['-j', '-4', 'route', 'show', 'default'])) as IpRoute[];
  const dev = routes.find((r) => r.dev !== undefined)?.dev;
  if (dev === undefined) throw new ConfigError('no IPv4 default route to take the underlay interface from; give --iface');
  const l = all.find((x) => x.ifname === dev);
  if (!l) throw new ConfigError(`the default route's interface ${dev} is not listed by ip addr; give --iface`);
  return underlayOf(l);
}
