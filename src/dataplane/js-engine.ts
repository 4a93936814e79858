/**
 * The js engine: the reference implementation. The addon's I/O thread moves packets between
 * the TUN and two rings; lookup, TTL, ICMP and encapsulation happen here, on the JS main
 * thread, with node:dgram. The native engine must behave exactly like this file.
 *
 * Dual-stack (EngineOptions.ipv6): packets are told apart by the version nibble in both
 * directions. Inner IPv6 goes to a Route6's publicIpv6 over the 'udp6' socket (bound only when
 * ipv6.underlayBind is set) or else to its publicIp over the IPv4 socket; inner IPv4 rides
 * the IPv4 socket only (a datagram on the IPv6 socket that is not inner IPv6 is
 * drop_malformed). Without `ipv6` every inner IPv6 packet is drop_malformed, as before.
 */
import * as dgram from 'node:dgram';
import { formatIp, parseIp, prefixContains, type Prefix } from '../net/addr';
import {
  IPV4_OK, validateIpv4, ipv4Dst, ipv4Src, ipv4DontFragment, decrementTtl,
} from '../net/ipv4';
import {
  buildIcmpError, mayRespondWithIcmpError, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_NET_UNREACH, ICMP_TIME_EXCEEDED,
  ICMP_TTL_EXCEEDED,
  IcmpRateLimiter, ICMP_RATELIMIT_BURST, ICMP_RATELIMIT_RATE,
} from '../net/icmp';
import {
  IPV6_OK, decrementHopLimit, ipv6Dst, ipv6Src, newIpv6Walk, validateIpv6,
} from '../net/ipv6';
import {
  ICMP6_DEST_UNREACH, ICMP6_HOP_LIMIT_EXCEEDED, ICMP6_NO_ROUTE, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED,
  buildIcmp6Error, mayRespondWithIcmp6Error,
} from '../net/icmp6';
import { formatIp6, parseIp6, prefix6Contains } from '../net/addr6';
import { TunError } from '../errors';
import { loadAddon, type TunPort } from './addon';
import { RouteTable } from './route-table';
import { RouteTable6 } from './route-table6';
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
  private readonly table6 = new RouteTable6();
  /** the IPv6 underlay socket: only with opts.ipv6.underlayBind */
  private socket6: dgram.Socket | undefined;
  /** scratch result of the extension-header walk (main thread only) */
  private readonly walk6 = newIpv6Walk();
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
    await this.bindSocket(sock, this.opts.bindAddress === undefined ? undefined : formatIp(this.opts.bindAddress));
    const bind6 = this.opts.ipv6?.underlayBind;
    if (bind6 !== undefined) {
      const sock6 = dgram.createSocket({ type: 'udp6', reuseAddr: false, ipv6Only: true });
      this.socket6 = sock6;
      sock6.on('message', (msg, rinfo) => this.inboundUdp6(msg, rinfo));
      await this.bindSocket(sock6, formatIp6(bind6));
    }
    this.drainTun();
  }

  /** Binds to address:port (undefined = the wildcard), sizes the buffers, routes a later socket error to the fatal handler. */
  private async bindSocket(sock: dgram.Socket, address: string | undefined): Promise<void> {
    const where = `${address === undefined ? '' : address.includes(':') ? `[${address}]` : address}:${this.opts.network.port}`;
    sock.on('error', (err) => {
      if (this.closed) return;
      this.closed = true;
      this.fatalHandler(new Error(`UDP socket on ${where} failed: ${err.message}`, { cause: err }));
    });
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error) => reject(new Error(`cannot bind UDP ${where}: ${err.message}`, { cause: err }));
      sock.once('error', onErr);
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
  }

  // ---- RouteSink ----
  routes6(): Route6[] {
    return this.table6.routes();
  }

  /** Throws when the engine was opened without `ipv6` (route sources must not send v6 routes then). */
  upsert6(route: Route6): void {
    if (this.opts.ipv6 === undefined) throw new Error('IPv6 route for an engine without IPv6 (EnableIPv6 is off)');
    this.table6.upsert(route);
  }

  remove6(subnet: Prefix6): void {
    this.table6.remove(subnet);
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
    return !this.closed && this.tun !== undefined && this.socket !== undefined
      && (this.opts.ipv6?.underlayBind === undefined || this.socket6 !== undefined);
  }

  onFatal(handler: (err: Error) => void): void {
    this.fatalHandler = handler;
  }

  async close(): Promise<void> {
    this.closed = true;
    const sock = this.socket;
    this.socket = undefined;
    const sock6 = this.socket6;
    this.socket6 = undefined;
    for (const so of [sock, sock6]) if (so) await new Promise<void>((resolve) => so.close(() => resolve()));
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
    if (this.opts.ipv6 !== undefined && len > 0 && pkt[0]! >>> 4 === 6) {
      this.outbound6(pkt);
      return;
    }
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
    this.sendTo(this.socket, Buffer.from(pkt), formatIp(route.publicIp));
  }

  /** `pkt` (inner IPv6, a view valid only during this call) read from the TUN. */
  private outbound6(pkt: Buffer): void {
    const s = this.stats;
    if (validateIpv6(pkt, pkt.length, this.walk6) !== IPV6_OK) {
      s.drop_malformed++;
      return;
    }
    const route = this.table6.lookup(ipv6Dst(pkt));
    if (route === undefined) {
      s.drop_no_route++;
      this.queueIcmp6(pkt, ICMP6_DEST_UNREACH, ICMP6_NO_ROUTE);
      return;
    }
    if (pkt.length > this.opts.tunMtu) {
      s.drop_too_big++;
      this.queueIcmp6(pkt, ICMP6_PACKET_TOO_BIG, 0, this.opts.tunMtu);
      return;
    }
    if (!decrementHopLimit(pkt)) {
      s.drop_ttl++;
      this.queueIcmp6(pkt, ICMP6_TIME_EXCEEDED, ICMP6_HOP_LIMIT_EXCEEDED);
      return;
    }
    const copy = Buffer.from(pkt);
    if (route.publicIpv6 !== undefined && this.socket6 !== undefined) this.sendTo(this.socket6, copy, formatIp6(route.publicIpv6));
    else this.sendTo(this.socket, copy, formatIp(route.publicIp));
  }

  /** Sends one datagram to address:P; `buf` is owned by node:dgram until the send completes. */
  private sendTo(sock: dgram.Socket | undefined, buf: Buffer, address: string): void {
    const s = this.stats;
    sock?.send(buf, this.opts.network.port, address, (err) => {
      if (err) s.tx_error++;
      else {
        s.tx++;
        s.tx_bytes += buf.length;
      }
    });
  }

  // ---- inbound: peers -> TUN ----
  private inbound(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const s = this.stats;
    s.rx++;
    s.rx_bytes += msg.length;
    const sender = parseIp(rinfo.address);
    if (sender === undefined || rinfo.port !== this.opts.network.port || !(this.table.isKnownPeer(sender) || this.table6.isKnownPeer4(sender))) {
      s.drop_unknown_peer++;
      return;
    }
    if (this.opts.ipv6 !== undefined && msg.length > 0 && msg[0]! >>> 4 === 6) {
      this.inbound6(msg, sender, undefined, this.socket, rinfo.address);
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
      // path MTU discovery (RFC 1191) with DF set: fragmentation needed back through the
      // tunnel it came by, as packet too big for inner IPv6; without DF dropped silently
      if (ipv4DontFragment(msg)) {
        const err = this.icmp4(msg, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, this.opts.tunMtu);
        if (err !== undefined) this.sendTo(this.socket, err, rinfo.address);
      }
      return;
    }
    if (!decrementTtl(msg)) {
      s.drop_ttl++;
      this.icmpError(msg, ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED);
      return;
    }
    this.queueTun(msg);
  }

  /** A datagram on the IPv6 underlay socket: inner IPv6 only. */
  private inboundUdp6(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const s = this.stats;
    s.rx++;
    s.rx_bytes += msg.length;
    const sender = parseIp6(rinfo.address);
    if (sender === undefined || rinfo.port !== this.opts.network.port || !this.table6.isKnownPeer6(sender)) {
      s.drop_unknown_peer++;
      return;
    }
    if (msg.length === 0 || msg[0]! >>> 4 !== 6) {
      // inner IPv4 rides the IPv4 underlay only: over IPv6 no route can point at the sender (as the native engine)
      if (validateIpv4(msg, msg.length) === IPV4_OK) s.drop_spoofed++;
      else s.drop_malformed++;
      return;
    }
    this.inbound6(msg, undefined, sender, this.socket6, rinfo.address);
  }

  /**
   * Inner IPv6 from a peer: over IPv4 (`from4` set) or over IPv6 (`from6` set); `sock` and
   * `replyTo` are where it came from (for packet too big).
   */
  private inbound6(msg: Buffer, from4: number | undefined, from6: bigint | undefined, sock: dgram.Socket | undefined, replyTo: string): void {
    const s = this.stats;
    const v6 = this.opts.ipv6!;
    if (validateIpv6(msg, msg.length, this.walk6) !== IPV6_OK) {
      s.drop_malformed++;
      return;
    }
    const srcRoute = this.table6.lookup(ipv6Src(msg));
    if (srcRoute === undefined || (from6 === undefined ? srcRoute.publicIp !== from4 : srcRoute.publicIpv6 !== from6)) {
      s.drop_spoofed++;
      return;
    }
    if (!prefix6Contains(v6.subnet, ipv6Dst(msg))) {
      s.drop_wrong_dst++;
      return;
    }
    if (msg.length > this.opts.tunMtu) {
      s.drop_too_big++;
      // path MTU discovery across nodes: tell the sender over the tunnel it came through
      const err = this.icmp6(msg, ICMP6_PACKET_TOO_BIG, 0, this.opts.tunMtu);
      if (err !== undefined) this.sendTo(sock, err, replyTo);
      return;
    }
    if (!decrementHopLimit(msg)) {
      s.drop_ttl++;
      this.queueIcmp6(msg, ICMP6_TIME_EXCEEDED, ICMP6_HOP_LIMIT_EXCEEDED);
      return;
    }
    this.queueTun(msg);
  }

  /**
   * The ICMPv6 error about `pkt` from the TUN's IPv6 address, or undefined when RFC 4443
   * forbids one or the shared rate limit suppresses it (counted). Counts icmp_sent.
   */
  private icmp6(pkt: Buffer, type: number, code: number, param = 0): Buffer | undefined {
    if (!mayRespondWithIcmp6Error(pkt, pkt.length, type)) return undefined;
    if (!this.icmpLimit.take()) {
      this.stats.drop_icmp_ratelimit++;
      return undefined;
    }
    this.stats.icmp_sent++;
    return buildIcmp6Error(type, code, this.opts.ipv6!.tunAddress, pkt, pkt.length, param);
  }

  private queueIcmp6(pkt: Buffer, type: number, code: number, param = 0): void {
    const err = this.icmp6(pkt, type, code, param);
    if (err !== undefined) this.queueTun(err);
  }

  /**
   * The ICMP error about `pkt` from the TUN's IPv4 address (`nextHopMtu` for fragmentation
   * needed), or undefined when RFC 1812 forbids one or the shared rate limit suppresses it
   * (counted). Counts icmp_sent.
   */
  private icmp4(pkt: Buffer, type: number, code: number, nextHopMtu = 0): Buffer | undefined {
    if (!mayRespondWithIcmpError(pkt, pkt.length)) return undefined;
    if (!this.icmpLimit.take()) {
      this.stats.drop_icmp_ratelimit++;
      return undefined;
    }
    this.stats.icmp_sent++;
    return buildIcmpError(type, code, this.opts.tunAddress, pkt, pkt.length, nextHopMtu);
  }

  // ---- into the TUN ----
  private icmpError(pkt: Buffer, type: number, code: number): void {
    const err = this.icmp4(pkt, type, code);
    if (err !== undefined) this.queueTun(err);
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
