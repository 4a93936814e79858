/**
 * The test lab's impairment relay: a userspace UDP forwarder on the underlay path that drops,
 * duplicates, delays and reorders tunnel datagrams by seeded rules (src/lab/impair.ts), for a
 * kernel without netem. This file is the process; src/lab/relay-path.ts puts it on the path.
 *
 *   node relay.js '<RelayConfig as JSON>'
 *
 * One link per direction: datagrams arriving on link.listen are forwarded, payload unchanged,
 * to link.to. Prints "listening" on stderr once every socket is bound. On SIGUSR2 prints the
 * counts so far as one JSON line {"links":{name: LinkCounts}} on stdout; on SIGTERM (or after
 * maxSeconds) prints the final one the same way and exits 0.
 * Single-threaded (one event loop); all times are ms of performance.now().
 */
import * as dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { decide, validateRules, type ImpairRules } from './impair';

export interface Endpoint { readonly host: string; readonly port: number }
export interface RelayLink {
  readonly name: string;
  readonly listen: Endpoint;
  readonly to: Endpoint;
}
export interface RelayConfig {
  readonly seed: number;
  readonly rules: ImpairRules;
  readonly links: readonly RelayLink[];
  /** the process exits by itself after this long, s (default 900): never left behind */
  readonly maxSeconds?: number;
}

/** What the relay did on one link; each datagram counted once per column that applies. */
export interface LinkCounts {
  /** datagrams that arrived */
  received: number;
  /** datagrams handed to the kernel for sending (duplicates included) */
  sent: number;
  dropped: number;
  /** datagrams sent a second time */
  duplicated: number;
  /** datagrams held back for a delay > 0 */
  delayed: number;
  /** held datagrams that went out after at least one later datagram (overtaken) */
  reordered: number;
  /** held datagrams released by reorderHoldMs before reorderDepth later ones arrived */
  reorderFlushed: number;
  sendErrors: number;
  /** the largest delay given, ms */
  maxDelayMs: number;
}

interface Item { readonly due: number; readonly seq: number; readonly pkt: Buffer; readonly reorder: boolean }

/** Min-heap of items by (due, seq). */
class DelayQueue {
  private readonly a: Item[] = [];
  get size(): number { return this.a.length; }
  peek(): Item | undefined { return this.a[0]; }
  private less(i: number, j: number): boolean {
    const [x, y] = [this.a[i]!, this.a[j]!];
    return x.due < y.due || (x.due === y.due && x.seq < y.seq);
  }
  push(it: Item): void {
    const a = this.a;
    a.push(it);
    for (let i = a.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): Item | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      for (let i = 0; ;) {
        const [l, r] = [2 * i + 1, 2 * i + 2];
        let m = i;
        if (l < a.length && this.less(l, m)) m = l;
        if (r < a.length && this.less(r, m)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

/** One direction: receive on link.listen, impair, send to link.to. */
export class LinkRelay {
  readonly counts: LinkCounts = { received: 0, sent: 0, dropped: 0, duplicated: 0, delayed: 0, reordered: 0, reorderFlushed: 0, sendErrors: 0, maxDelayMs: 0 };
  private readonly sock = dgram.createSocket('udp4');
  private readonly queue = new DelayQueue();
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Infinity;
  private seq = 0;
  /** datagrams held for reordering, oldest first: each waits for `left` later sends */
  private held: { pkt: Buffer; left: number; overtaken: boolean; timer: NodeJS.Timeout }[] = [];

  constructor(private readonly link: RelayLink, private readonly rules: ImpairRules, private readonly seed: number, private readonly direction: number) {}

  start(): Promise<void> {
    this.sock.on('message', (pkt) => this.onDatagram(pkt));
    return new Promise((resolve, reject) => {
      this.sock.once('error', reject);
      this.sock.bind(this.link.listen.port, this.link.listen.host, () => {
        this.sock.off('error', reject);
        this.sock.on('error', () => { this.counts.sendErrors++; });
        // a burst of GSO-cut datagrams must not overflow the relay (that would be loss nobody decided)
        this.sock.setRecvBufferSize(4 * 1024 * 1024);
        this.sock.setSendBufferSize(4 * 1024 * 1024);
        resolve();
      });
    });
  }

  /** the bound listening address (after start()) */
  address(): Endpoint {
    const a = this.sock.address();
    return { host: a.address, port: a.port };
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const h of this.held) clearTimeout(h.timer);
    this.sock.close();
  }

  /** A held copy is the last of a duplicated pair: the first goes out in order. */
  private onDatagram(pkt: Buffer): void {
    const d = decide(this.rules, this.seed, this.direction, this.counts.received++);
    if (d.drop) {
      this.counts.dropped++;
      return;
    }
    if (d.copies > 1) this.counts.duplicated++;
    if (d.delayMs > 0) {
      this.counts.delayed++;
      this.counts.maxDelayMs = Math.max(this.counts.maxDelayMs, d.delayMs);
      const due = performance.now() + d.delayMs;
      for (let c = 0; c < d.copies; c++) this.queue.push({ due, seq: this.seq++, pkt, reorder: d.reorder && c === d.copies - 1 });
      this.arm();
    } else {
      for (let c = 0; c < d.copies; c++) this.emit(pkt, d.reorder && c === d.copies - 1);
    }
  }

  /** (Re)sets the one timer to the earliest due item. */
  private arm(): void {
    const first = this.queue.peek();
    if (!first || first.due >= this.timerDue) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = first.due;
    this.timer = setTimeout(() => this.release(), Math.max(0, first.due - performance.now()));
  }

  private release(): void {
    this.timer = undefined;
    this.timerDue = Infinity;
    const now = performance.now();
    for (let it = this.queue.peek(); it && it.due <= now; it = this.queue.peek()) {
      this.queue.pop();
      this.emit(it.pkt, it.reorder);
    }
    this.arm();
  }

  private emit(pkt: Buffer, reorder: boolean): void {
    if (reorder) {
      const h = { pkt, left: this.rules.reorderDepth, overtaken: false, timer: setTimeout(() => this.unhold(h), this.rules.reorderHoldMs) };
      this.held.push(h);
      return;
    }
    this.send(pkt);
    if (this.held.length === 0) return;
    for (const h of this.held) {
      h.overtaken = true;
      h.left--;
    }
    for (const h of this.held.filter((x) => x.left <= 0)) this.unhold(h);
  }

  /** Sends a held datagram: after its `reorderDepth` later ones, or when its hold time ran out. */
  private unhold(h: { pkt: Buffer; left: number; overtaken: boolean; timer: NodeJS.Timeout }): void {
    const i = this.held.indexOf(h);
    if (i < 0) return;
    this.held.splice(i, 1);
    clearTimeout(h.timer);
    if (h.overtaken) this.counts.reordered++;
    else this.counts.reorderFlushed++;
    this.send(h.pkt);
  }

  private send(pkt: Buffer): void {
    this.counts.sent++;
    this.sock.send(pkt, this.link.to.port, this.link.to.host, (err) => { if (err) this.counts.sendErrors++; });
  }
}

/** Runs every link of the config until SIGTERM or maxSeconds; prints the counts. */
export async function runRelay(config: RelayConfig): Promise<void> {
  const rules = validateRules(config.rules);
  const links = config.links.map((l, i) => new LinkRelay(l, rules, config.seed >>> 0, i));
  for (const l of links) await l.start();
  const line = () => {
    const out: Record<string, LinkCounts> = {};
    config.links.forEach((l, i) => { out[l.name] = links[i]!.counts; });
    return `${JSON.stringify({ links: out })}\n`;
  };
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    for (const l of links) l.close();
    process.stdout.write(line(), () => process.exit(0));
  };
  process.on('SIGUSR2', () => { if (!finished) process.stdout.write(line()); });
  process.once('SIGTERM', finish);
  setTimeout(finish, (config.maxSeconds ?? 900) * 1000).unref();
  process.stderr.write('listening\n');
}

if (require.main === module) {
  let config: RelayConfig;
  try {
    config = JSON.parse(process.argv[2] ?? '') as RelayConfig;
  } catch (err) {
    process.stderr.write(`relay: usage: relay.js '<config JSON>' (${String(err)})\n`);
    process.exit(2);
  }
  runRelay(config).catch((err: unknown) => {
    process.stderr.write(`relay: ${String(err)}\n`);
    process.exit(1);
  });
}
