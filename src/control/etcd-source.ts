/**
 * The etcd route source (overlayd's normal mode): flannel's schema, flannel's allocation.
 *
 * start(): connect, read and validate `<prefix>/config` (waiting while it is missing),
 * acquire this node's subnet lease, start keeping it, list the leases and start watching.
 * sync(sink): hand every peer route to the sink, then keep it in sync.
 * close(): stop watching and renewing; the lease stays in etcd so a restart reuses it.
 */
import type { Etcd3 } from 'etcd3';
import type { Ipv6UnderlayMode } from '../config';
import type { RouteSink } from '../dataplane/types';
import { ConfigError, EtcdError, LeaseError, OverlaydError, errorMessage } from '../errors';
import { formatIp, formatPrefix, parseIp, type Prefix } from '../net/addr';
import { formatIp6, formatPrefix6, parseIp6, type Prefix6 } from '../net/addr6';
import { collectGarbage } from '../ops/gc';
import type { Logger } from '../ops/log';
import type { Phase } from '../ops/status-types';
import { Backoff, Stopper, type BackoffOptions } from './backoff';
import { createEtcdClient, etcdErrorText, explainEtcdError, isTransientEtcdError, type EtcdOptions } from './etcd-client';
import { ConfigWatch } from './config-watch';
import { configKey, normalizePrefix, subnetsPrefix } from './etcd-schema';
import { acquireLease, LeaseKeeper, type AcquireResult } from './lease';
import { describeNetworkConfig, networkConfigWarnings, parseNetworkConfig } from './network-config';
import { RouteSync } from './route-sync';
import type { AcquiredLease, NetworkConfig, RouteSource, SourceStats } from './source';
import { readSubnetFile } from './subnet-file';
import { RangeMirror, type KvEntry, type MirrorConsumer } from './watch';

export type { EtcdOptions } from './etcd-client';

export interface EtcdSourceOptions {
  etcd: EtcdOptions;
  /** this node's underlay IPv4 (PublicIP in the lease value) */
  publicIp: string;
  /** --public-ipv6: this node's underlay IPv6 (PublicIPv6 in the value of a dual-stack lease) */
  publicIpv6?: string;
  /** --ipv6-underlay (default auto): whether inner IPv6 may ride the IPv6 underlay */
  ipv6Underlay?: Ipv6UnderlayMode;
  /** --partial-checksums: advertised in the lease's BackendData */
  partialChecksums?: boolean;
  /** previous subnet file to read for reuse (the daemon writes the new one) */
  subnetFile: string;
  /** --subnet-lease-ttl, default 86400 */
  leaseTtlSeconds: number;
  logger: Logger;

  // Optional tuning; the defaults are for production. Tests shorten them.
  /** how long start() keeps retrying an unreachable etcd before failing, ms (default 60000) */
  startTimeoutMs?: number;
  /** deadline of each etcd call, ms (default 5000) */
  callTimeoutMs?: number;
  /** lease renewal interval, ms (default TTL/3) */
  renewIntervalMs?: number;
  /** longest pause between polls while the config key is missing, ms (default 2000) */
  configPollMaxMs?: number;
  /** periodic full re-list of the leases (and the config), ms (default 3 min; 0: never) */
  resyncIntervalMs?: number;
  /** backoff of re-lists after a broken watch (default 250 ms .. 5 s) */
  resyncBackoff?: BackoffOptions;
  /** bound on create attempts lost to other nodes (default 20) */
  maxAcquireAttempts?: number;
  /** [0,1) random source for the subnet pick */
  random?: () => number;
  /** told what start() waits for, on each change (status, health and sd_notify STATUS=) */
  onPhase?: (phase: Phase) => void;
  /** test seams (see RangeMirrorOptions.beforeWatch); never set in production */
  testHooks?: { beforeWatch?: (listRevision: number) => Promise<void> };
}

export const DEFAULT_START_TIMEOUT_MS = 60_000;
/** --etcd-resync-interval's default: a full re-list every 3 minutes */
export const DEFAULT_RESYNC_INTERVAL_MS = 3 * 60_000;

export class EtcdRouteSource implements RouteSource {
  readonly kind = 'etcd' as const;
  private readonly o: EtcdSourceOptions;
  private readonly log: Logger;
  private readonly prefix: string;
  private readonly stopper = new Stopper();
  private client: Etcd3 | undefined;
  private keeper: LeaseKeeper | undefined;
  private mirror: RangeMirror | undefined;
  private configMirror: RangeMirror | undefined;
  private routeSync: RouteSync | undefined;
  private acquired: AcquireResult | undefined;
  private fatalHandler: ((err: Error) => void) | undefined;
  private fatalError: Error | undefined;
  private startDeadline = 0;
  private closed = false;
  private phase: Phase = 'starting';

  constructor(opts: EtcdSourceOptions) {
    this.o = opts;
    this.log = opts.logger.child({ component: 'etcd' });
    this.prefix = normalizePrefix(opts.etcd.prefix);
  }

  onFatal(handler: (err: Error) => void): void {
    this.fatalHandler = handler;
    const pending = this.fatalError;
    if (pending) queueMicrotask(() => handler(pending));
  }

  private fatal(err: Error): void {
    if (this.fatalError) return;
    this.fatalError = err;
    this.fatalHandler?.(err);
  }

  /** The etcd key of this node's lease (after start). */
  get leaseKey(): string | undefined {
    return this.acquired?.key;
  }

  /** The etcd lease id currently keeping this node's key (after start). */
  get etcdLeaseId(): string | undefined {
    return this.keeper?.currentLeaseId;
  }

  /** How the subnet was chosen at start: reused by PublicIP, from the subnet file, or new. */
  get acquiredHow(): AcquireResult['how'] | undefined {
    return this.acquired?.how;
  }

  /** Re-lists done after broken watches since start. */
  get resyncs(): number {
    return this.mirror?.resyncs ?? 0;
  }

  private setPhase(phase: Phase): void {
    if (phase === this.phase) return;
    this.phase = phase;
    this.o.onPhase?.(phase);
  }

  private checkOpen(): void {
    if (this.closed) throw new EtcdError('etcd route source closed during start-up');
  }

  /**
   * Runs an etcd operation during start-up, retrying while etcd is unreachable (bounded by
   * startTimeoutMs overall). Errors that will not go away by waiting (TLS, auth) fail at once
   * with an explanation; ConfigError/LeaseError pass through.
   */
  private async retrying<T>(action: string, fn: () => Promise<T>): Promise<T> {
    const backoff = new Backoff({ initialMs: 250, maxMs: 5000 });
    let warned = false;
    const phaseBefore = this.phase;
    for (;;) {
      this.checkOpen();
      try {
        const result = await fn();
        this.setPhase(phaseBefore);
        return result;
      } catch (err) {
        if (err instanceof OverlaydError && !(err instanceof EtcdError)) throw err;
        if (!isTransientEtcdError(err) || Date.now() >= this.startDeadline) {
          throw explainEtcdError(err, this.o.etcd, action);
        }
        this.setPhase(`waiting for etcd at ${this.o.etcd.endpoints.join(',')}`);
        if (!warned) {
          this.log.warn({ err: etcdErrorText(err), endpoints: this.o.etcd.endpoints }, `etcd unreachable while ${action}; retrying`);
          warned = true;
        }
        const wait = Math.min(backoff.next(), Math.max(0, this.startDeadline - Date.now()));
        await this.stopper.sleep(wait);
      }
    }
  }

  async start(): Promise<{ config: NetworkConfig; lease: AcquiredLease }> {
    if (this.client) throw new Error('EtcdRouteSource.start() called twice');
    const publicIp = parseIp(this.o.publicIp);
    if (publicIp === undefined) throw new ConfigError(`--public-ip: ${JSON.stringify(this.o.publicIp)} is not an IPv4 address`);
    const publicIpv6 = this.o.publicIpv6 === undefined ? undefined : parseIp6(this.o.publicIpv6);
    if (this.o.publicIpv6 !== undefined && publicIpv6 === undefined) throw new ConfigError(`--public-ipv6: ${JSON.stringify(this.o.publicIpv6)} is not an IPv6 address`);
    const ttl = this.o.leaseTtlSeconds;
    if (!Number.isInteger(ttl) || ttl < 1) throw new ConfigError(`--subnet-lease-ttl: ${ttl} s is not a positive whole number of seconds`);
    this.startDeadline = Date.now() + (this.o.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);

    const client = await createEtcdClient(this.o.etcd, this.o.callTimeoutMs !== undefined ? { callTimeoutMs: this.o.callTimeoutMs } : {});
    this.client = client;
    this.log.info({ endpoints: this.o.etcd.endpoints, prefix: this.prefix, publicIp: this.o.publicIp }, 'connecting to etcd');

    // 1. the network config
    this.setPhase(`waiting for etcd at ${this.o.etcd.endpoints.join(',')}`);
    const config = await this.waitForConfig(client);
    this.setPhase('acquiring the subnet lease');

    // 2. the lease
    const { subnet: previousSubnet, subnet6: previousSubnet6 } = await this.previousSubnets();
    // PublicIPv6 goes into the value only in a dual-stack network (else null, as before)
    const leaseIpv6 = config.ipv6 ? publicIpv6 : undefined;
    // BackendData only with --partial-checksums: without it the value is flannel's udp backend's, byte for byte
    const backend = this.o.partialChecksums === true ? { partialChecksums: true } : undefined;
    const acquired = await this.retrying('acquiring the subnet lease', () =>
      acquireLease({
        client,
        prefix: this.prefix,
        config,
        publicIp,
        ...(leaseIpv6 !== undefined ? { publicIpv6: leaseIpv6 } : {}),
        ...(backend ? { backend } : {}),
        ...(previousSubnet6 ? { previousSubnet6 } : {}),
        ttlSeconds: ttl,
        logger: this.log,
        stopper: this.stopper,
        ...(previousSubnet ? { previousSubnet } : {}),
        ...(this.o.maxAcquireAttempts !== undefined ? { maxAttempts: this.o.maxAcquireAttempts } : {}),
        ...(this.o.random ? { random: this.o.random } : {}),
      }),
    );
    this.acquired = acquired;
    this.checkOpen();
    collectGarbage(); // the acquisition's list of every lease, before the mirror lists them again

    const keeper = new LeaseKeeper({
      client,
      prefix: this.prefix,
      subnet: acquired.subnet,
      ...(acquired.subnet6 ? { subnet6: acquired.subnet6 } : {}),
      publicIp,
      ...(leaseIpv6 !== undefined ? { publicIpv6: leaseIpv6 } : {}),
      ...(backend ? { backend } : {}),
      ttlSeconds: ttl,
      leaseId: acquired.leaseId,
      logger: this.log,
      onFatal: (err: LeaseError) => this.fatal(err),
      ...(this.o.renewIntervalMs !== undefined ? { renewIntervalMs: this.o.renewIntervalMs } : {}),
      ...(this.o.callTimeoutMs !== undefined ? { callTimeoutMs: this.o.callTimeoutMs } : {}),
    });
    this.keeper = keeper;
    keeper.start();

    // 3. the leases of the other nodes: list now, watch from there
    const routeSync = new RouteSync({
      prefix: this.prefix,
      network: config.network,
      ownSubnet: acquired.subnet,
      ownPublicIp: publicIp,
      logger: this.log,
      ...(config.ipv6 && acquired.subnet6
        ? { ipv6: { network: config.ipv6.network, ownSubnet: acquired.subnet6, ipv6Underlay: (this.o.ipv6Underlay ?? 'auto') === 'auto' && leaseIpv6 !== undefined } }
        : {}),
    });
    this.routeSync = routeSync;
    const ownKey = acquired.key;
    const consumer: MirrorConsumer = {
      snapshot: (entries: ReadonlyMap<string, KvEntry>, revision: number, initial: boolean) => {
        routeSync.snapshot(entries, revision, initial);
        keeper.observe(entries.get(ownKey));
      },
      put: (e: KvEntry) => {
        routeSync.put(e);
        if (e.key === ownKey) keeper.observe(e);
      },
      delete: (key: string) => {
        routeSync.delete(key);
        if (key === ownKey) keeper.observe(undefined);
      },
    };
    const resyncIntervalMs = this.o.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS;
    const mirror = new RangeMirror({
      client,
      prefix: subnetsPrefix(this.prefix),
      consumer,
      logger: this.log,
      resyncIntervalMs,
      ...(this.o.resyncBackoff ? { backoff: this.o.resyncBackoff } : {}),
      ...(this.o.testHooks?.beforeWatch ? { beforeWatch: this.o.testHooks.beforeWatch } : {}),
    });
    this.mirror = mirror;
    await this.retrying('listing the subnet leases', () => mirror.start());
    this.checkOpen();

    // 4. the network config, while running (config-watch.ts: a change that matters is fatal)
    const cfgKey = configKey(this.prefix);
    const configMirror = new RangeMirror({
      client,
      prefix: cfgKey,
      consumer: new ConfigWatch({
        key: cfgKey, running: config, ownSubnet: acquired.subnet, ...(acquired.subnet6 ? { ownSubnet6: acquired.subnet6 } : {}),
        logger: this.log, onFatal: (err) => this.fatal(err),
      }),
      logger: this.log,
      resyncIntervalMs,
      ...(this.o.resyncBackoff ? { backoff: this.o.resyncBackoff } : {}),
    });
    this.configMirror = configMirror;
    await this.retrying('watching the network config', () => configMirror.start());
    this.checkOpen();

    const lease: AcquiredLease = {
      subnet: acquired.subnet, publicIp, ...(acquired.expiresAt ? { expiresAt: acquired.expiresAt } : {}),
      ...(acquired.subnet6 ? { subnet6: acquired.subnet6 } : {}), ...(acquired.subnet6 && leaseIpv6 !== undefined ? { publicIpv6: leaseIpv6 } : {}),
    };
    return { config, lease };
  }

  private async waitForConfig(client: Etcd3): Promise<NetworkConfig> {
    const key = configKey(this.prefix);
    const poll = new Backoff({ initialMs: 250, maxMs: this.o.configPollMaxMs ?? 2000 });
    let warned = false;
    for (;;) {
      const text = await this.retrying('reading the network config', () => client.get(key).string());
      if (text !== null) {
        for (const warning of networkConfigWarnings(text, key)) this.log.warn({ key }, warning);
        const config = parseNetworkConfig(text, key);
        this.log.info({ key, config: describeNetworkConfig(config) }, 'network config read');
        return config;
      }
      this.setPhase(`waiting for ${this.prefix}/config`);
      if (!warned) {
        this.log.warn({ key }, 'network config not found in etcd; waiting for it to be created');
        warned = true;
      }
      await this.stopper.sleep(poll.next());
      this.checkOpen();
    }
  }

  /** The subnets of the previous subnet file (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET); none when absent or unreadable (warned). */
  private async previousSubnets(): Promise<{ subnet?: Prefix; subnet6?: Prefix6 }> {
    try {
      const prev = await readSubnetFile(this.o.subnetFile);
      if (!prev) return {};
      const subnet6 = prev.ipv6?.subnet;
      this.log.info({ file: this.o.subnetFile, subnet: formatPrefix(prev.subnet), ...(subnet6 ? { subnet6: formatPrefix6(subnet6) } : {}) }, 'previous subnet file found');
      return { subnet: prev.subnet, ...(subnet6 ? { subnet6 } : {}) };
    } catch (err) {
      this.log.warn({ file: this.o.subnetFile, err: errorMessage(err) }, 'ignoring an unreadable previous subnet file');
      return {};
    }
  }

  async sync(sink: RouteSink): Promise<void> {
    if (!this.routeSync || !this.mirror) throw new Error('EtcdRouteSource.sync() before start()');
    this.routeSync.attach(sink);
  }

  stats(): SourceStats {
    const keeper = this.keeper;
    const mirror = this.mirror;
    const connected = !this.closed && (mirror?.healthy ?? false) && !(keeper?.renewalFailing ?? false);
    const lastResyncAt = mirror?.lastResyncAt;
    return {
      connected,
      leader: (mirror?.leader ?? true) && (this.configMirror?.leader ?? true),
      ...(lastResyncAt ? { lastResyncAt } : {}),
      resyncs: mirror?.resyncs ?? 0,
      ...(keeper?.expiresAt ? { leaseExpiresAt: keeper.expiresAt } : {}),
      leaseValid: keeper?.valid ?? false,
    };
  }

  /** The routes currently given to the sink. */
  routes(): { subnet: string; publicIp: string }[] {
    return (this.routeSync?.routes() ?? []).map((r) => ({ subnet: formatPrefix(r.subnet), publicIp: formatIp(r.publicIp) }));
  }

  /** The IPv6 routes currently given to the sink (publicIpv6 set: over the IPv6 underlay). */
  routes6(): { subnet: string; publicIp: string; publicIpv6?: string }[] {
    return (this.routeSync?.routes6() ?? []).map((r) => ({
      subnet: formatPrefix6(r.subnet), publicIp: formatIp(r.publicIp), ...(r.publicIpv6 !== undefined ? { publicIpv6: formatIp6(r.publicIpv6) } : {}),
    }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopper.stop();
    this.keeper?.close();
    await Promise.all([this.mirror?.close(), this.configMirror?.close()]);
    this.client?.close();
    if (this.acquired) {
      this.log.info({ key: this.acquired.key }, 'etcd route source closed; lease kept for a restart');
    }
  }
}
