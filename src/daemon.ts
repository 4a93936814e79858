/**
 * The daemon: wires a route source (static file or etcd) to a forwarding engine, configures
 * the TUN link, serves status, and owns the lifecycle: start in order, shut down in reverse
 * on SIGTERM/SIGINT (exit 0) or on a fatal error (exit 1). Everything runs on the JS main
 * thread.
 *
 * What keeps the process alive: the status socket's server (ops/status-socket.ts), a ref'd
 * handle opened first in start() and closed last in teardown, in every mode (static or etcd,
 * any engine, with or without --metrics-addr). Nothing else is relied upon for that.
 */
import type * as http from 'node:http';
import type { Registry } from 'prom-client';
import { leaseRenewIntervalMs, type Config } from './config';
import { AlreadyRunningError, ConfigError, errorMessage } from './errors';
import { formatIp, formatPrefix, parseIp, prefixId, type Prefix } from './net/addr';
import { DirectRoutes, removeStaleDirectRoutes } from './net/direct-routes';
import { Firewall, removeLeftovers } from './net/firewall';
import { configureTun, tunMtuFor, unconfigureTun, type TunLinkState } from './net/link';
import { isLocalAddress, isLocalAddress6, selectUnderlay, underlayIpv6 } from './net/underlay';
import { IPV6_MIN_MTU } from './net/ipv6';
import type { Engine, EngineIpv6Options } from './dataplane/engine';
import { createEngine } from './dataplane/engine-factory';
import type { Route, Route6, RouteSink } from './dataplane/types';
import { formatIp6, formatPrefix6, type Prefix6 } from './net/addr6';
import type { AcquiredLease, NetworkConfig, RouteSource } from './control/source';
import { StaticRouteSource } from './control/static-source';
import { EtcdRouteSource } from './control/etcd-source';
import { writeSubnetFile } from './control/subnet-file';
import { createHttpServer, listen, closeHttp } from './ops/http';
import { createMetrics, statusCounters, statusOffloads, type MetricsSource } from './ops/metrics';
import { SdNotifier } from './ops/sdnotify';
import { collectGarbage } from './ops/gc';
import { STATUS_SOCKET } from './ops/status-socket';
import type { Phase, StatusDoc } from './ops/status-types';
import { ensureIpForward, ensureIpv6Forward, IP_FORWARD_SYSCTL, IPV6_FORWARD_SYSCTL } from './ops/ip-forward';
import { VERSION } from './ops/version';
import type { Logger } from './ops/log';

/** The status socket is also the single-instance lock (abstract: per network namespace, gone with the process). */
export const INSTANCE_SOCKET = STATUS_SOCKET;
/** Shutdown must finish within this bound (ms); past it the process exits anyway. */
const SHUTDOWN_BOUND_MS = 1500;
/** While waiting (etcd, the network config), STATUS= is re-sent this often (ms) with the time waited. */
const WAIT_STATUS_EVERY_MS = 5000;

/** Forwards route changes to the engine and remembers when each route was installed. */
class TrackingSink implements RouteSink {
  /** prefixId(subnet) -> install time (ms since the epoch); numeric keys, no string per route */
  readonly since = new Map<number, number>();
  /** `also` (DirectRouting) sees every change after the engine */
  constructor(private readonly engine: Engine, private readonly logger: Logger, private readonly also?: RouteSink) {}
  upsert(route: Route): void {
    this.engine.upsert(route);
    this.also?.upsert(route);
    const k = prefixId(route.subnet);
    if (!this.since.has(k)) {
      this.since.set(k, Date.now());
      if (this.logger.isLevelEnabled('debug')) this.logger.debug({ subnet: formatPrefix(route.subnet), peer: formatIp(route.publicIp) }, 'route installed');
    }
  }
  remove(subnet: Prefix): void {
    this.engine.remove(subnet);
    this.also?.remove(subnet);
    if (this.since.delete(prefixId(subnet))) this.logger.debug({ subnet: formatPrefix(subnet) }, 'route removed');
  }
  /** IPv6 routes: (addr << 8 | len) -> install time (ms since the epoch) */
  readonly since6 = new Map<bigint, number>();
  upsert6(route: Route6): void {
    this.engine.upsert6(route);
    const k = (route.subnet.addr << 8n) | BigInt(route.subnet.len);
    if (!this.since6.has(k)) this.since6.set(k, Date.now());
  }
  remove6(subnet: Prefix6): void {
    this.engine.remove6(subnet);
    this.since6.delete((subnet.addr << 8n) | BigInt(subnet.len));
  }
}

export class Daemon {
  private source: RouteSource | undefined;
  private engine: Engine | undefined;
  private link: TunLinkState | undefined;
  private direct: DirectRoutes | undefined;
  private firewall: Firewall | undefined;
  /** the status socket's server: the single-instance lock and what keeps the event loop alive */
  private statusServer: http.Server | undefined;
  private httpServer: http.Server | undefined;
  private sink: TrackingSink | undefined;
  private netConfig: NetworkConfig | undefined;
  private lease: AcquiredLease | undefined;
  private tunMtu = 0;
  private ready = false;
  private stopping = false;
  private currentPhase: Phase = 'starting';
  private phaseSince = Date.now();
  private phaseAnnounced = false;
  private waitStatusTimer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  private finish: ((code: number) => void) | undefined;
  private readonly notifier = SdNotifier.fromEnv();
  readonly done: Promise<number>;

  constructor(private readonly config: Config, private readonly logger: Logger) {
    this.done = new Promise((resolve) => {
      this.finish = resolve;
    });
  }

  /** Brings everything up; on failure tears down what was built and rethrows. */
  async start(): Promise<void> {
    try {
      await this.startSteps();
    } catch (err) {
      await this.teardown();
      throw err;
    }
  }

  private async startSteps(): Promise<void> {
    const c = this.config;
    const metrics = createMetrics(this.metricsSource());
    this.statusServer = await this.listenStatusSocket(metrics);
    this.setPhase('starting');
    // a previous instance's firewall state goes now, not once a lease is held (etcd may be far)
    await removeLeftovers({ ipMasq: c.ipMasq, logger: this.logger });
    if (c.metricsAddr) this.httpServer = await this.listenMetricsAddr(c.metricsAddr, metrics);
    if (await ensureIpForward() === 'enabled') this.logger.warn({ sysctl: IP_FORWARD_SYSCTL }, `${IP_FORWARD_SYSCTL} was 0; set it to 1 (pods cannot reach other nodes without it)`);
    const underlay = await selectUnderlay(c);
    const publicIp = c.publicIp ?? underlay.address;
    if (publicIp === undefined) throw new ConfigError(`underlay interface ${underlay.name} has no IPv4 address; give --public-ip`);
    this.tunMtu = tunMtuFor(underlay.mtu, false);
    if (this.tunMtu < 576) throw new ConfigError(`underlay ${underlay.name} MTU ${underlay.mtu} is too small (TUN MTU would be ${this.tunMtu} < 576)`);

    // PublicIPv6 (used only if the network is dual-stack): --public-ipv6, else the underlay's global IPv6 address
    const publicIpv6 = c.publicIpv6 ?? (c.staticConfig === undefined ? await underlayIpv6(underlay.name) : undefined);
    const source: RouteSource = c.staticConfig !== undefined
      ? new StaticRouteSource(c.staticConfig, c.ipv6Underlay)
      : new EtcdRouteSource({
        etcd: c.etcd, publicIp, subnetFile: c.subnetFile, leaseTtlSeconds: c.subnetLeaseTtl, logger: this.logger, onPhase: (p) => this.setPhase(p),
        ...(publicIpv6 !== undefined ? { publicIpv6 } : {}), ipv6Underlay: c.ipv6Underlay, partialChecksums: c.partialChecksums,
        renewIntervalMs: leaseRenewIntervalMs(c), resyncIntervalMs: c.etcdResyncInterval * 1000,
      });
    this.source = source;
    source.onFatal((err) => this.fail(err));
    const { config: netConfig, lease } = await source.start();
    this.checkNotStopping();
    this.setPhase('configuring the data plane');
    this.netConfig = netConfig;
    this.lease = lease;
    if (c.staticConfig !== undefined && c.publicIp !== undefined && parseIp(c.publicIp) !== lease.publicIp) {
      throw new ConfigError(`--public-ip ${c.publicIp} differs from PublicIP ${formatIp(lease.publicIp)} in ${c.staticConfig}`);
    }
    this.logger.info({ subnet: formatPrefix(lease.subnet), publicIp: formatIp(lease.publicIp), network: formatPrefix(netConfig.network), source: source.kind }, 'lease held');

    // bind to the PublicIP when it is ours, else (NAT) to the underlay's address (flanneld: always the latter)
    const leaseIp = formatIp(lease.publicIp);
    let bindIp = underlay.address;
    if (await isLocalAddress(leaseIp)) bindIp = leaseIp;
    else this.logger.warn({ publicIp: leaseIp, bind: bindIp ?? '0.0.0.0', underlay: underlay.name }, 'PublicIP is not an address of this host (NAT?): binding the UDP socket to the underlay address');
    // the IPv6 half of a dual-stack lease (undefined: IPv4 only)
    const ipv6 = await this.engineIpv6(netConfig, lease);
    if (ipv6 !== undefined) {
      const f6 = await ensureIpv6Forward();
      if (f6.state === 'enabled') this.logger.warn({ sysctl: IPV6_FORWARD_SYSCTL, acceptRa2: f6.acceptRa2 }, `${IPV6_FORWARD_SYSCTL} was 0; set it to 1 (pods cannot reach other nodes over IPv6 without it), after setting accept_ra=2 where it was 1`);
    }
    // an IPv6 underlay adds 20 more header bytes: the TUN MTU (and FLANNEL_MTU) leave room for them
    if (ipv6?.underlayBind !== undefined) this.tunMtu = tunMtuFor(underlay.mtu, true);
    // below 1280 the kernel turns IPv6 off on the device (RFC 8200 minimum link MTU)
    if (ipv6 !== undefined && this.tunMtu < IPV6_MIN_MTU) {
      throw new ConfigError(`underlay ${underlay.name} MTU ${underlay.mtu} is too small for EnableIPv6 (TUN MTU would be ${this.tunMtu} < ${IPV6_MIN_MTU})`);
    }
    const engine = createEngine(c.engine, {
      tunName: c.tunName, tunAddress: lease.subnet.addr, tunMtu: this.tunMtu, network: netConfig, lease, logger: this.logger, queues: c.queues, offloads: c.offloads, partialChecksums: c.partialChecksums, icmpRateLimit: c.icmpRateLimit,
      bindAddress: bindIp === undefined ? undefined : parseIp(bindIp),
      ...(ipv6 ? { ipv6 } : {}),
    });
    this.engine = engine;
    engine.onFatal((err) => this.fail(err));
    await engine.open();
    this.checkNotStopping();
    this.link = await configureTun({
      name: engine.tunName, address: lease.subnet.addr, mtu: this.tunMtu, network: netConfig.network,
      ipv6: ipv6 === undefined ? undefined : { address: ipv6.tunAddress, network: ipv6.network },
    });
    await engine.start();
    this.firewall = new Firewall({
      forwardRules: c.iptablesForwardRules, ipMasq: c.ipMasq, fullyRandom: !c.ipMasqFullyRandomDisable, resyncSeconds: c.iptablesResync,
      network: netConfig.network, subnet: lease.subnet, logger: this.logger,
      ipv6: ipv6 === undefined ? undefined : { network: ipv6.network, subnet: ipv6.subnet },
    });
    await this.firewall.start();
    if (netConfig.directRouting) this.direct = await DirectRoutes.start({ underlay: underlay.name, tun: engine.tunName, ownSubnet: lease.subnet, logger: this.logger });
    else await removeStaleDirectRoutes(this.logger).catch((err: unknown) => this.logger.warn({ err: errorMessage(err) }, 'cannot check for stale direct routes'));
    this.sink = new TrackingSink(engine, this.logger, this.direct);
    collectGarbage(); // the lists' garbage (etcd answers), before the routes are built: a lower peak
    await source.sync(this.sink);
    await this.direct?.idle();
    this.checkNotStopping();
    collectGarbage(); // the initial sync's garbage (10,000 leases: ~20 MB resident until V8 gets to it)
    await writeSubnetFile(c.subnetFile, {
      network: netConfig.network, subnet: lease.subnet, mtu: this.tunMtu, ipMasq: c.ipMasq,
      ...(netConfig.ipv6 && lease.subnet6 ? { ipv6: { network: netConfig.ipv6.network, subnet: lease.subnet6 } } : {}),
    });
    this.ready = true;
    this.setPhase('forwarding', false);
    const err = this.notifier?.ready(`forwarding for ${formatPrefix(lease.subnet)}, ${engine.routes().length} routes`);
    if (err) this.logger.warn({ err: err.message }, 'sd_notify READY=1 failed');
    this.notifier?.startWatchdog(() => this.engine?.alive() === true);
    this.logger.info({ tun: engine.tunName, mtu: this.tunMtu, engine: engine.kind, routes: engine.routes().length, underlay: underlay.name, offloads: engine.offloads() }, 'forwarding');
  }

  /**
   * The engine's IPv6 half of a dual-stack lease (undefined: IPv4 only). The IPv6 underlay
   * socket (underlayBind) only when this node has a PublicIPv6 and --ipv6-underlay is auto:
   * bound to the PublicIPv6 when it is ours, else (NAT) to ::.
   */
  private async engineIpv6(netConfig: NetworkConfig, lease: AcquiredLease): Promise<EngineIpv6Options | undefined> {
    if (!netConfig.ipv6 || !lease.subnet6) return undefined;
    const base = { network: netConfig.ipv6.network, subnet: lease.subnet6, tunAddress: lease.subnet6.addr };
    this.logger.info({ network6: formatPrefix6(base.network), subnet6: formatPrefix6(base.subnet), publicIpv6: lease.publicIpv6 === undefined ? null : formatIp6(lease.publicIpv6) }, 'dual-stack lease held');
    if (lease.publicIpv6 === undefined || this.config.ipv6Underlay !== 'auto') return base;
    const local = await isLocalAddress6(lease.publicIpv6);
    if (!local) this.logger.warn({ publicIpv6: formatIp6(lease.publicIpv6) }, 'PublicIPv6 is not an address of this host (NAT?): binding the IPv6 UDP socket to ::');
    return { ...base, underlayBind: local ? lease.publicIpv6 : 0n };
  }

  /** The status socket; EADDRINUSE means another daemon holds this namespace. */
  private async listenStatusSocket(metrics: Registry): Promise<http.Server> {
    const server = createHttpServer(this, metrics);
    try {
      await listen(server, { path: STATUS_SOCKET });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new AlreadyRunningError('another overlayd instance is already running in this network namespace');
      throw err;
    }
    return server;
  }

  private async listenMetricsAddr(addr: { host: string; port: number }, metrics: Registry): Promise<http.Server> {
    const server = createHttpServer(this, metrics);
    try {
      await listen(server, addr);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new ConfigError(`cannot listen on --metrics-addr ${addr.host}:${addr.port}: ${e.code ?? e.message}`, { cause: err });
    }
    return server;
  }

  /**
   * Records the phase, logs it and sends STATUS= (unless `notify` is false: READY=1 carries its
   * own STATUS=). While in a `waiting for …` phase, STATUS= is re-sent every WAIT_STATUS_EVERY_MS
   * with the time waited so far.
   */
  private setPhase(phase: Phase, notify = true): void {
    if (phase === this.currentPhase && this.phaseAnnounced) return;
    this.phaseAnnounced = true;
    this.currentPhase = phase;
    this.phaseSince = Date.now();
    this.logger.info({ phase }, 'phase');
    if (notify) this.sendStatus(phase);
    if (this.waitStatusTimer) clearInterval(this.waitStatusTimer);
    this.waitStatusTimer = undefined;
    if (phase.startsWith('waiting for ') && this.notifier) {
      this.waitStatusTimer = setInterval(() => this.sendStatus(`${phase} (${Math.round((Date.now() - this.phaseSince) / 1000)}s)`), WAIT_STATUS_EVERY_MS);
      this.waitStatusTimer.unref();
    }
  }

  private sendStatus(text: string): void {
    const err = this.notifier?.status(text);
    if (err) this.logger.debug({ err: err.message }, 'sd_notify STATUS= failed');
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** A signal during start() aborts it: start() rejects, teardown has run or will run. */
  private checkNotStopping(): void {
    if (this.stopping) throw new Error('stopped during start-up');
  }

  /** Graceful stop (signal): exit code 0. */
  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.logger.info({ reason }, 'shutting down');
    await this.shutdown(0);
  }

  private fail(err: Error): void {
    if (this.stopping) return;
    this.logger.error({ err: errorMessage(err) }, 'fatal error, shutting down');
    void this.shutdown(1);
  }

  private async shutdown(code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.ready = false;
    this.setPhase('shutting down', false);
    this.notifier?.stopping();
    const timer = setTimeout(() => {
      this.logger.warn('shutdown took too long; exiting anyway');
      // the status socket must not hold the process past the bound
      this.statusServer?.close();
      this.finish?.(code);
    }, SHUTDOWN_BOUND_MS);
    timer.unref();
    await this.teardown();
    clearTimeout(timer);
    this.finish?.(code);
  }

  /** Reverse of start; each step independent, errors logged. Keeps the etcd lease. */
  private async teardown(): Promise<void> {
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        this.logger.warn({ err: errorMessage(err) }, `shutdown: ${what} failed`);
      }
    };
    if (this.waitStatusTimer) clearInterval(this.waitStatusTimer);
    this.waitStatusTimer = undefined;
    if (this.httpServer) await step('close http', () => closeHttp(this.httpServer as http.Server));
    this.httpServer = undefined;
    if (this.source) await step('close route source', () => (this.source as RouteSource).close());
    this.source = undefined;
    if (this.direct) await step('remove direct routes', () => (this.direct as DirectRoutes).close());
    this.direct = undefined;
    if (this.firewall) await step('remove firewall rules', () => (this.firewall as Firewall).stop());
    this.firewall = undefined;
    if (this.link) {
      const errs = await unconfigureTun(this.link);
      for (const e of errs) this.logger.debug({ err: e.message }, 'link undo step failed');
    }
    this.link = undefined;
    if (this.engine) await step('close engine', () => (this.engine as Engine).close());
    this.engine = undefined;
    // last: the lock is held until everything above is undone
    if (this.statusServer) await step('close status socket', () => closeHttp(this.statusServer as http.Server));
    this.statusServer = undefined;
  }

  private metricsSource(): MetricsSource {
    const src: MetricsSource = {
      directRouteCount: () => this.direct?.directCount(),
      engineKind: () => this.engine?.kind,
      queueCounters: () => this.engine?.queueCounters(),
      routeCount: () => this.engine?.routes().length ?? 0,
      offloads: () => this.engine?.offloads(),
      leaseExpiresAt: () => this.source?.stats().leaseExpiresAt?.getTime(),
      watchResyncs: () => this.source?.stats().resyncs ?? 0,
      firewallRepairs: () => this.firewall?.repairCount ?? 0,
      etcdLeader: () => this.source?.stats().leader,
      lastResyncAt: () => this.source?.stats().lastResyncAt?.getTime(),
      routes6ByUnderlay: () => {
        if (!this.netConfig?.ipv6 || !this.engine) return undefined;
        const all = this.engine.routes6();
        const ipv6 = all.filter((r) => r.publicIpv6 !== undefined).length;
        return { ipv6, ipv4: all.length - ipv6 };
      },
    };
    // the etcd gauge exists only with an etcd route source
    if (this.config.staticConfig === undefined) src.etcdConnected = () => this.source?.stats().connected ?? false;
    return src;
  }

  // ---- StatusProvider ----
  phase(): Phase {
    return this.currentPhase;
  }

  unhealthy(): string | undefined {
    if (this.stopping) return 'shutting down';
    if (!this.ready) return this.currentPhase;
    if (!this.engine?.alive()) return 'data plane not running';
    const stats = this.source?.stats();
    if (!stats?.leaseValid) return 'subnet lease lost';
    const exp = stats.leaseExpiresAt;
    if (exp && exp.getTime() <= Date.now()) return 'subnet lease expired';
    return undefined;
  }

  status(): StatusDoc {
    const engine = this.engine;
    const now = Date.now();
    const stats = this.source?.stats();
    const reason = this.unhealthy();
    const queues = engine?.queueCounters();
    const offloads = engine?.offloads();
    return {
      version: VERSION,
      pid: process.pid,
      uptimeSeconds: Math.round((now - this.startedAt) / 1000),
      phase: this.currentPhase,
      healthy: reason === undefined,
      ...(reason === undefined ? {} : { reason }),
      ready: this.ready,
      source: this.config.staticConfig !== undefined ? 'static' : 'etcd',
      network: this.netConfig ? {
        network: formatPrefix(this.netConfig.network), port: this.netConfig.port,
        ...(this.netConfig.ipv6 ? { network6: formatPrefix6(this.netConfig.ipv6.network) } : {}),
      } : null,
      lease: this.lease ? {
        subnet: formatPrefix(this.lease.subnet),
        publicIp: formatIp(this.lease.publicIp),
        ...(this.lease.subnet6 ? {
          subnet6: formatPrefix6(this.lease.subnet6), publicIpv6: this.lease.publicIpv6 === undefined ? null : formatIp6(this.lease.publicIpv6),
        } : {}),
        expiresAt: (stats?.leaseExpiresAt ?? this.lease.expiresAt)?.toISOString() ?? null,
        valid: stats?.leaseValid ?? false,
      } : null,
      etcd: this.config.staticConfig !== undefined ? null : {
        endpoints: this.config.etcd.endpoints, connected: stats?.connected ?? false, leader: stats?.leader ?? null,
        resyncs: stats?.resyncs ?? 0, lastResync: stats?.lastResyncAt?.toISOString() ?? null,
      },
      tun: engine && this.lease ? { name: engine.tunName, address: formatIp(this.lease.subnet.addr), mtu: this.tunMtu } : null,
      engine: engine?.kind ?? this.config.engine,
      offloads: offloads ? statusOffloads(offloads) : null,
      firewall: this.firewall?.status() ?? null,
      routes: (engine?.routes() ?? []).map((r) => {
        const since = this.sink?.since.get(prefixId(r.subnet));
        return { subnet: formatPrefix(r.subnet), publicIp: formatIp(r.publicIp), ageSeconds: since === undefined ? null : Math.round((now - since) / 1000), via: this.direct?.kindOf(r.subnet) ?? 'udp' };
      }),
      ...(this.netConfig?.ipv6 && engine ? {
        routes6: engine.routes6().map((r) => {
          const since = this.sink?.since6.get((r.subnet.addr << 8n) | BigInt(r.subnet.len));
          return {
            subnet: formatPrefix6(r.subnet), publicIp: formatIp(r.publicIp), publicIpv6: r.publicIpv6 === undefined ? null : formatIp6(r.publicIpv6),
            underlay: r.publicIpv6 === undefined ? 'ipv4' as const : 'ipv6' as const, ageSeconds: since === undefined ? null : Math.round((now - since) / 1000),
          };
        }),
      } : {}),
      counters: queues ? statusCounters(queues) : null,
      memory: process.memoryUsage(),
    };
  }
}

/** The configuration as logged at start: everything in force, secrets masked. */
export function effectiveConfig(config: Config): Config {
  return { ...config, etcd: { ...config.etcd, ...(config.etcd.password !== undefined ? { password: '***' } : {}) } };
}

/** Runs the daemon until a signal or a fatal error; resolves the exit code. */
export async function runDaemon(config: Config, logger: Logger): Promise<number> {
  logger.info({ version: VERSION, config: effectiveConfig(config) }, 'overlayd starting');
  const daemon = new Daemon(config, logger);
  const onSignal = (sig: NodeJS.Signals) => void daemon.stop(sig);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await daemon.start();
  } catch (err) {
    // a signal during start-up is a clean stop, not a start failure
    if (!daemon.isStopping) {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      throw err;
    }
  }
  const code = await daemon.done;
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  return code;
}
