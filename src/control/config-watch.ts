/**
 * The network config (`<prefix>/config`) while running. A change that invalidates what this
 * node built on it (Network, SubnetLen, Backend.Port, Backend.Type, Backend.DirectRouting (read
 * once at start), or SubnetMin/SubnetMax no longer containing our subnet) is fatal: the daemon exits 1 and the service manager
 * restarts it against the new config (re-leasing, re-creating the TUN). Anything else
 * (whitespace, unknown fields, SubnetMin/SubnetMax still containing our subnet) is logged and
 * ignored. Dual-stack fields the same way: EnableIPv6 turned on or off, IPv6Network or
 * IPv6SubnetLen changed is fatal; IPv6SubnetMin/IPv6SubnetMax are fatal only when they no longer
 * contain this node's IPv6 subnet. A config that no longer parses, or a deleted one, is logged as an error and the
 * config in force is kept: a restart could not start against it either.
 */
import { ConfigError } from '../errors';
import { formatIp, formatPrefix, prefixEquals, type Prefix } from '../net/addr';
import { formatIp6, formatPrefix6, prefix6Equals, type Prefix6 } from '../net/addr6';
import type { Logger } from '../ops/log';
import { isSubnet6InRange, isSubnetInRange } from './allocator';
import { NetworkConfigError, describeNetworkConfig, parseNetworkConfig } from './network-config';
import type { NetworkConfig } from './source';
import type { KvEntry, MirrorConsumer } from './watch';

export type ConfigChange =
  | { readonly kind: 'same' }
  /** differs, but nothing this node built depends on the difference */
  | { readonly kind: 'harmless'; readonly what: string }
  /** this node must restart against the new config */
  | { readonly kind: 'fatal'; readonly message: string }
  /** the new text is not a usable config (kept running on the old one) */
  | { readonly kind: 'invalid'; readonly message: string }
  | { readonly kind: 'deleted' };

/**
 * What a new config text (undefined: the key was deleted) means for a node running on
 * `running` with the lease `ownSubnet`. Pure.
 */
export function classifyConfigChange(running: NetworkConfig, ownSubnet: Prefix, key: string, text: string | undefined, ownSubnet6?: Prefix6): ConfigChange {
  if (text === undefined) return { kind: 'deleted' };
  let next: NetworkConfig;
  try {
    next = parseNetworkConfig(text, key);
  } catch (err) {
    if (err instanceof NetworkConfigError && err.field === 'Backend.Type') {
      return { kind: 'fatal', message: `${key}: Backend.Type changed from "udp": ${err.message}` };
    }
    return { kind: 'invalid', message: err instanceof Error ? err.message : String(err) };
  }
  const changed: string[] = [];
  if (!prefixEquals(next.network, running.network)) changed.push(`Network ${formatPrefix(running.network)} -> ${formatPrefix(next.network)}`);
  if (next.subnetLen !== running.subnetLen) changed.push(`SubnetLen ${running.subnetLen} -> ${next.subnetLen}`);
  if (next.port !== running.port) changed.push(`Backend.Port ${running.port} -> ${next.port}`);
  if (next.backendType !== running.backendType) changed.push(`Backend.Type ${running.backendType} -> ${next.backendType}`);
  if (next.directRouting !== running.directRouting) changed.push(`Backend.DirectRouting ${running.directRouting} -> ${next.directRouting}`);
  const r6 = running.ipv6;
  const n6 = next.ipv6;
  if (!r6 !== !n6) changed.push(`EnableIPv6 ${r6 !== undefined} -> ${n6 !== undefined}`);
  if (r6 && n6) {
    if (!prefix6Equals(n6.network, r6.network)) changed.push(`IPv6Network ${formatPrefix6(r6.network)} -> ${formatPrefix6(n6.network)}`);
    if (n6.subnetLen !== r6.subnetLen) changed.push(`IPv6SubnetLen ${r6.subnetLen} -> ${n6.subnetLen}`);
  }
  const range = (c: NetworkConfig) => `[${formatIp(c.subnetMin)}..${formatIp(c.subnetMax)}]`;
  const rangeChanged = next.subnetMin !== running.subnetMin || next.subnetMax !== running.subnetMax;
  if (changed.length === 0 && rangeChanged && !isSubnetInRange(next, ownSubnet)) {
    changed.push(`SubnetMin/SubnetMax ${range(running)} -> ${range(next)}, which no longer contains this node's subnet ${formatPrefix(ownSubnet)}`);
  }
  const range6 = (c: NonNullable<NetworkConfig['ipv6']>) => `[${formatIp6(c.subnetMin)}..${formatIp6(c.subnetMax)}]`;
  const range6Changed = r6 !== undefined && n6 !== undefined && (n6.subnetMin !== r6.subnetMin || n6.subnetMax !== r6.subnetMax);
  if (changed.length === 0 && range6Changed && n6 && r6 && ownSubnet6 && !isSubnet6InRange(n6, ownSubnet6)) {
    changed.push(`IPv6SubnetMin/IPv6SubnetMax ${range6(r6)} -> ${range6(n6)}, which no longer contains this node's IPv6 subnet ${formatPrefix6(ownSubnet6)}`);
  }
  if (changed.length > 0) {
    return {
      kind: 'fatal',
      message: `the network config in etcd key ${key} changed while running (${changed.join('; ')}); ` +
        `was ${describeNetworkConfig(running)}, now ${describeNetworkConfig(next)}: exiting so that a restart applies it`,
    };
  }
  if (rangeChanged) return { kind: 'harmless', what: `SubnetMin/SubnetMax ${range(running)} -> ${range(next)} (still contains ${formatPrefix(ownSubnet)})` };
  if (range6Changed && r6 && n6) {
    return { kind: 'harmless', what: `IPv6SubnetMin/IPv6SubnetMax ${range6(r6)} -> ${range6(n6)}${ownSubnet6 ? ` (still contains ${formatPrefix6(ownSubnet6)})` : ''}` };
  }
  return { kind: 'same' };
}

export interface ConfigWatchOptions {
  readonly key: string;
  readonly running: NetworkConfig;
  readonly ownSubnet: Prefix;
  /** this node's IPv6 subnet (dual-stack) */
  readonly ownSubnet6?: Prefix6;
  readonly logger: Logger;
  /** called once, with a ConfigError naming the old and new values */
  readonly onFatal: (err: ConfigError) => void;
}

/** A RangeMirror consumer for the config key (the mirrored range may hold other keys: skipped). */
export class ConfigWatch implements MirrorConsumer {
  private lastText: string | undefined;
  private done = false;

  constructor(private readonly o: ConfigWatchOptions) {}

  snapshot(entries: ReadonlyMap<string, KvEntry>): void {
    this.consider(entries.get(this.o.key)?.value);
  }

  put(entry: KvEntry): void {
    if (entry.key === this.o.key) this.consider(entry.value);
  }

  delete(key: string): void {
    if (key === this.o.key) this.consider(undefined);
  }

  private consider(text: string | undefined): void {
    if (this.done || (text !== undefined && text === this.lastText)) return;
    const first = this.lastText === undefined && text !== undefined;
    this.lastText = text;
    const c = classifyConfigChange(this.o.running, this.o.ownSubnet, this.o.key, text, this.o.ownSubnet6);
    const log = this.o.logger;
    switch (c.kind) {
      case 'same':
        if (!first) log.info({ key: this.o.key }, 'network config rewritten without a change that matters; ignored');
        return;
      case 'harmless':
        log.info({ key: this.o.key, change: c.what }, 'network config changed in a way this node does not depend on; ignored');
        return;
      case 'invalid':
        log.error({ key: this.o.key, err: c.message }, 'network config in etcd is now invalid; running on the config in force (a restart would fail)');
        return;
      case 'deleted':
        log.error({ key: this.o.key }, 'network config deleted from etcd; running on the config in force (a restart would wait for it)');
        return;
      case 'fatal':
        this.done = true;
        log.error({ key: this.o.key, err: c.message }, 'network config changed');
        this.o.onFatal(new ConfigError(c.message));
    }
  }
}
