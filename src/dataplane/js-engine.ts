/**
 * The js engine: the reference implementation. The addon's I/O thread moves packets between
 * the TUN and two rings; lookup, TTL, ICMP and encapsulation happen here, on the JS main
 * thread, with node:dgram. The native engine must behave exactly like this file.
 */
import * as dgram from 'node:dgram';
import { formatIp, parseIp, prefixContains, type Prefix } from '../net/addr';
import {
  IPV4_OK, validateIpv4, ipv4Dst, ipv4Src, decrementTtl,
} from '../net/ipv4';
import {
  buildIcmpError, mayRespondWithIcmpError, ICMP_DEST_UNREACH, ICMP_NET_UNREACH, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED,
  IcmpRateLimiter, ICMP_RATELIMIT_BURST, ICMP_RATELIMIT_RATE,
} from '../net/icmp';
import { TunError } from '../errors';
import { loadAddon, type TunPort } from './addon';
import { RouteTable } from './route-table';
import { zeroCounters, type Engine, type EngineCounters, type EngineOptions } from './engine';
import { NO_OFFLOADS, type OffloadState } from './engine';
import type { Route, Route6 } from './types';
import type { Prefix6 } from '../net/addr6';

/** Packets per readBatch call. */
const READ_BATCH = 64;
/** Requested UDP socket buffer sizes, bytes. */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
/** Slots per ring direction. */
const RING_SLOTS = 1024;
/** Packets for the TUN that may wait for room in a full ring (in order) before the newest are dropped. */
const PENDING_TUN_MAX = 4 * RING_SLOTS;
/** How soon a full TUN ring is offered the waiting packets again, ms (a timer, not a spin). */
const RING_FULL_RETRY_MS = 1;

export class JsEngine implements Engine {
  readonly kind = 'js' as const;
  private readonly table = new RouteTable();
  private readonly stats: EngineCounters = zeroCounters();
  private tun: TunPort | undefined;
  private socket: dgram.Socket | undefined;
  private readBuf = Buffer.alloc(0);
  private readonly readLens = new Uint32Array(READ_BATCH);
  private slotSize = 0;
  /** packets bound for the TUN, flushed once per event-loop turn */
  private pendingTun: Buffer[] = [];
  private flushScheduled = false;
  private closed = false;
  private fatalHandler: (err: Error) => void = () => undefined;
  private readonly icmpLimit: IcmpRateLimiter;

  constructor(private readonly opts: EngineOptions) {
    this.icmpLimit = new IcmpRateLimiter(opts.icmpRateLimit?.rate ?? ICMP_RATELIMIT_RATE, opts.icmpRateLimit?.burst ?? ICMP_RATELIMIT_BURST);
  }

  get tunName(): string {
    return this.tun?.name ?? this.opts.tunName;
  }

  async open(): Promise<void> {
    // a slot holds the largest packet either direction may carry: the TUN MTU
    this.slotSize = Math.max(576, Math.ceil(this.opts.tunMtu / 64) * 64);
    this.readBuf = Buffer.alloc(this.slotSize * READ_BATCH);
    try {
      this.tun = loadAddon().openTun(this.opts.tunName, { slotSize: this.slotSize, ringSlots: RING_SLOTS }, () => this.drainTun());
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new TunError(`cannot open TUN device ${this.opts.tunName}: ${e.message}${e.code === 'EPERM' ? ' (needs CAP_NET_ADMIN)' : ''}`, { cause: err });
    }
  }

  async start(): Promise<void> {
    const sock = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    this.socket = sock;
    sock.on('message', (msg, rinfo) => this.inbound(msg, rinfo));
    sock.on('error', (err) => {
      if (this.closed) return;
      this.closed = true;
      this.fatalHandler(new Error(`UDP socket on port ${this.opts.network.port} failed: ${err.message}`, { cause: err }));
    });
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error) => reject(new Error(`cannot bind UDP port ${this.opts.network.port}: ${err.message}`, { cause: err }));
      sock.once('error', onErr);
      const address = this.opts.bindAddress === undefined ? undefined : formatIp(this.opts.bindAddress);
      sock.bind({ address, port: this.opts.network.port, exclusive: true }, () => {
        sock.off('error', onErr);
        // room for bursts: the kernel caps this at net.core.rmem_max/wmem_max (and doubles it)
        for (const set of [(n: number) => sock.setRecvBufferSize(n), (n: number) => sock.setSendBufferSize(n)]) {
          try {
            set(SOCKET_BUFFER_BYTES);
          } catch {
            // the default buffer still works
          }
        }
        resolve();
      });
    });
    this.drainTun();
  }

  // ---- RouteSink ----
  routes6(): Route6[] {
    return [];
  }

  upsert6(_route: Route6): void {
    throw new Error('IPv6 routes: not implemented in the js engine yet');
  }

  remove6(_subnet: Prefix6): void {
    throw new Error('IPv6 routes: not implemented in the js engine yet');
  }

  upsert(route: Route): void {
    this.table.upsert(route);
  }

  remove(subnet: Prefix): void {
    this.table.remove(subnet);
  }

  routes(): Route[] {
    return this.table.routes();
  }

  counters(): EngineCounters {
    return { ...this.stats };
  }

  queueCounters(): EngineCounters[] {
    return [this.counters()];
  }

  offloads(): OffloadState {
    return NO_OFFLOADS;
  }

  alive(): boolean {
    return !this.closed && this.tun !== undefined && this.socket !== undefined;
  }

  onFatal(handler: (err: Error) => void): void {
    this.fatalHandler = handler;
  }

  async close(): Promise<void> {
    this.closed = true;
    const sock = this.socket;
    this.socket = undefined;
    if (sock) await new Promise<void>((resolve) => sock.close(() => resolve()));
    this.tun?.close();
    this.tun = undefined;
  }

  // ---- outbound: TUN -> peers ----
  private drainTun(): void {
    const tun = this.tun;
    if (!tun || !this.socket || this.closed) return;
    const buf = this.readBuf;
    const lens = this.readLens;
    // bounded: the I/O thread calls onReadable again when new packets arrive later
    for (let round = 0; round < 16; round++) {
      const n = tun.readBatch(buf, lens);
      for (let i = 0; i < n; i++) {
        const off = i * this.slotSize;
        this.outbound(buf.subarray(off, off + (lens[i] as number)));
      }
      if (n < READ_BATCH) {
        this.flushTun();
        return;
      }
    }
    this.flushTun();
    setImmediate(() => this.drainTun());
  }

  /** `pkt` is a view into the read buffer, valid only during this call. */
  private outbound(pkt: Buffer): void {
    const s = this.stats;
    s.tun_rx++;
    const len = pkt.length;
    if (validateIpv4(pkt, len) !== IPV4_OK) {
      s.drop_malformed++;
      return;
    }
    const route = this.table.lookup(ipv4Dst(pkt));
    if (route === undefined) {
      s.drop_no_route++;
      this.icmpError(pkt, ICMP_DEST_UNREACH, ICMP_NET_UNREACH);
      return;
    }
    if (!decrementTtl(pkt)) {
      s.drop_ttl++;
      this.icmpError(pkt, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED);
      return;
    }
    // node:dgram keeps the buffer until the send completes: copy out of the shared read buffer
    const copy = Buffer.from(pkt);
    this.socket?.send(copy, this.opts.network.port, formatIp(route.publicIp), (err) => {
      if (err) s.tx_error++;
      else {
        s.tx++;
        s.tx_bytes += copy.length;
      }
    });
  }

  // ---- inbound: peers -> TUN ----
  private inbound(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const s = this.stats;
    s.rx++;
    s.rx_bytes += msg.length;
    const sender = parseIp(rinfo.address);
    if (sender === undefined || rinfo.port !== this.opts.network.port || !this.table.isKnownPeer(sender)) {
      s.drop_unknown_peer++;
      return;
    }
    if (validateIpv4(msg, msg.length) !== IPV4_OK) {
      s.drop_malformed++;
      return;
    }
    const srcRoute = this.table.lookup(ipv4Src(msg));
    if (srcRoute === undefined || srcRoute.publicIp !== sender) {
      s.drop_spoofed++;
      return;
    }
    if (!prefixContains(this.opts.lease.subnet, ipv4Dst(msg))) {
      s.drop_wrong_dst++;
      return;
    }
    if (msg.length > this.opts.tunMtu) {
      s.drop_too_big++;
      return;
    }
    if (!decrementTtl(msg)) {
      s.drop_ttl++;
      this.icmpError(msg, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED);
      return;
    }
    this.queueTun(msg);
  }

  // ---- into the TUN ----
  private icmpError(pkt: Buffer, type: number, code: number): void {
    if (!mayRespondWithIcmpError(pkt, pkt.length)) return;
    if (!this.icmpLimit.take()) {
      this.stats.drop_icmp_ratelimit++;
      return;
    }
    this.stats.icmp_sent++;
    this.queueTun(buildIcmpError(type, code, this.opts.tunAddress, pkt, pkt.length));
  }

  /** `pkt` must stay unmodified until flushed (it is owned by the queue). */
  private queueTun(pkt: Buffer): void {
    this.pendingTun.push(pkt);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushTun());
    }
  }

  /**
   * Hands the queued packets to the TUN ring. When the ring is full (its I/O thread has not
   * run for a while: a loaded machine), the rest waits, in order and up to PENDING_TUN_MAX
   * packets, and is offered again after RING_FULL_RETRY_MS; only what is beyond that bound is
   * dropped, counted as drop_ring_full.
   */
  private flushTun(): void {
    this.flushScheduled = false;
    const pending = this.pendingTun;
    if (pending.length === 0 || !this.tun) return;
    const accepted = this.tun.write(pending);
    this.stats.tun_tx += accepted;
    if (accepted === pending.length) {
      this.pendingTun = [];
      return;
    }
    const rest = pending.slice(accepted, accepted + PENDING_TUN_MAX);
    this.stats.drop_ring_full += pending.length - accepted - rest.length;
    this.pendingTun = rest;
    this.flushScheduled = true;
    setTimeout(() => this.flushTun(), RING_FULL_RETRY_MS);
  }
}
