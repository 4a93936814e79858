/**
 * Micro-benchmarks (bench/README.md): benchmark.js over the js engine's per-packet code
 * (IPv4 parse/validate, route lookup, the outbound and inbound work of a batch), a C harness
 * for the SPSC ring (JS cannot time it), and, as root in a namespace of the run, the addon's
 * TunPort write -> kernel -> readBatch round trip.
 */
import Benchmark from 'benchmark';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { formatIp, parseIp, prefixContains } from '../src/net/addr';
import { IPV4_OK, decrementTtl, ipv4Dst, ipv4HeaderChecksum, ipv4Src, validateIpv4 } from '../src/net/ipv4';
import { DEFAULT_ROUTE_CACHE_SIZE, RouteTable } from '../src/dataplane/route-table';
import { run } from '../src/lab/exec';
import { loadAddon } from '../src/dataplane/addon';
import { median } from './stats';
import type { Topology } from '../src/lab/topology';

/** The repository root (this file runs from dist/bench/). */
export const ROOT = path.resolve(__dirname, '..', '..');

export interface JsBenchResult {
  readonly name: string;
  readonly group: string;
  readonly opsPerSec: number;
  readonly nsPerOp: number;
  /** relative margin of error, percent */
  readonly rmePct: number;
  readonly samples: number;
  /** packets per op, when an op handles a batch */
  readonly packetsPerOp?: number;
  readonly nsPerPacket?: number;
  /** route lookups through a cache: fraction answered by the cache */
  readonly hitRate?: number;
  readonly note?: string;
}

export interface Skipped {
  readonly name: string;
  readonly group: string;
  readonly reason: string;
}

export interface RingCResult {
  readonly packetBytes: number;
  readonly packets: number;
  readonly batch: number;
  readonly seconds: number;
  readonly mpps: number;
  readonly gbytesPerSec: number;
}

export interface TunRoundTripResult {
  readonly packetBytes: number;
  readonly seconds: number;
  readonly packets: number;
  readonly pps: number;
  readonly bytesPerSec: number;
  readonly written: number;
  readonly refused: number;
  readonly lostOrInFlight: number;
  readonly strays: number;
}

export interface MicroResults {
  readonly js: JsBenchResult[];
  /** the native engine's C route table, through its benchmark hook (empty until it exists) */
  readonly routeC: RouteCResult[];
  readonly ringC: RingCResult[];
  readonly tunRoundTrip: TunRoundTripResult[];
  /** benchmarks that could not run or do not exist yet, with the reason (never a number) */
  readonly skipped: Skipped[];
}

export interface MicroOptions {
  /** seconds benchmark.js spends per benchmark (maxTime) */
  readonly maxTime: number;
  /** seconds per TUN round-trip run */
  readonly tunSeconds: number;
  /** a namespace of this run for the TUN round trip (root only), or undefined to skip it */
  readonly tunNs?: { topo: Topology; ns: string };
  readonly log: (line: string) => void;
}

/** An IPv4/UDP packet of `bytes` bytes, src -> dst, valid header checksum. */
export function ipv4UdpPacket(src: string, dst: string, bytes: number, ttl = 64): Buffer {
  const p = Buffer.alloc(bytes);
  p[0] = 0x45;
  p.writeUInt16BE(bytes, 2);
  p[8] = ttl;
  p[9] = 17;
  p.writeUInt32BE(parseIp(src) as number, 12);
  p.writeUInt32BE(parseIp(dst) as number, 16);
  p.writeUInt16BE(ipv4HeaderChecksum(p, 20), 10);
  p.writeUInt16BE(4000, 20);
  p.writeUInt16BE(4001, 22);
  p.writeUInt16BE(bytes - 20, 24);
  return p;
}

/** n peer routes: /24s from 10.0.0.0 upwards (10.A.B.0/24), peer 10.99.x.y (one per route). */
function buildTable(n: number, cacheSize = DEFAULT_ROUTE_CACHE_SIZE): RouteTable {
  const t = new RouteTable({ cacheSize });
  for (let i = 0; i < n; i++) t.upsert({ subnet: { addr: (0x0a000000 + i * 256) >>> 0, len: 24 }, publicIp: (0x0a630000 + 1 + i) >>> 0 });
  return t;
}

/** count destinations spread over the first n routes: route j % n, host 1 + (j / n) % 254. */
function destinations(n: number, count: number): Uint32Array {
  const d = new Uint32Array(count);
  for (let j = 0; j < count; j++) d[j] = (0x0a000000 + (j % n) * 256 + 1 + (Math.floor(j / n) % 254)) >>> 0;
  return d;
}

function toResult(b: Benchmark, group: string, packetsPerOp?: number, note?: string, hitRate?: number): JsBenchResult {
  const hz = b.hz;
  return {
    name: b.name ?? '?',
    group,
    opsPerSec: hz,
    nsPerOp: 1e9 / hz,
    rmePct: b.stats.rme,
    samples: b.stats.sample.length,
    ...(packetsPerOp !== undefined ? { packetsPerOp, nsPerPacket: 1e9 / hz / packetsPerOp } : {}),
    ...(hitRate !== undefined ? { hitRate } : {}),
    ...(note !== undefined ? { note } : {}),
  };
}

interface Case {
  readonly name: string;
  readonly group: string;
  readonly fn: () => void;
  readonly packetsPerOp?: number;
  readonly note?: string;
  readonly hitRate?: number;
  /** throws when the benchmark did not really run its body (benchmark.js compiles functions) */
  readonly verify?: () => void;
}

function runCases(cases: Case[], opts: MicroOptions): JsBenchResult[] {
  const out: JsBenchResult[] = [];
  for (const c of cases) {
    const b = new Benchmark(c.name, c.fn, { maxTime: opts.maxTime, minSamples: 5 });
    b.run({ async: false });
    if (b.error) throw new Error(`benchmark ${c.name}: ${String(b.error)}`);
    c.verify?.();
    const r = toResult(b, c.group, c.packetsPerOp, c.note, c.hitRate);
    out.push(r);
    opts.log(`  ${c.name.padEnd(58)} ${(r.nsPerOp).toFixed(1).padStart(10)} ns/op ±${r.rmePct.toFixed(1)}%${r.nsPerPacket !== undefined ? `  (${r.nsPerPacket.toFixed(1)} ns/packet)` : ''}${r.hitRate !== undefined ? `  (cache hit rate ${(r.hitRate * 100).toFixed(0)}%)` : ''}`);
  }
  return out;
}

function ipv4Cases(): Case[] {
  const pkt = ipv4UdpPacket('10.244.1.2', '10.244.2.2', 64);
  const big = ipv4UdpPacket('10.244.1.2', '10.244.2.2', 1400);
  let sink = 0;
  const template = Buffer.from(pkt);
  const mustRun = () => { if (sink === 0) throw new Error('benchmark body did not run'); sink = 0; };
  return [
    { name: 'ipv4 validateIpv4 + dst, 64 B packet', group: 'ipv4', fn: () => { if (validateIpv4(pkt, 64) === IPV4_OK) sink += ipv4Dst(pkt) & 1 | 1; }, verify: mustRun },
    { name: 'ipv4 validateIpv4 + dst, 1400 B packet', group: 'ipv4', fn: () => { if (validateIpv4(big, 1400) === IPV4_OK) sink += ipv4Dst(big) & 1 | 1; }, verify: mustRun },
    { name: 'ipv4 src + dst accessors', group: 'ipv4', fn: () => { sink += (ipv4Src(pkt) ^ ipv4Dst(pkt)) & 1 | 1; }, verify: mustRun },
    {
      name: 'ipv4 decrementTtl (RFC 1624) + restore 3 bytes', group: 'ipv4',
      fn: () => {
        if (decrementTtl(pkt)) sink++;
        pkt[8] = template[8]!; pkt[10] = template[10]!; pkt[11] = template[11]!;
      },
      verify: mustRun,
    },
  ];
}

function routeCases(): Case[] {
  const cases: Case[] = [];
  // the same routes, destinations and patterns as bench/c/route_bench.c
  const HOT = 256; //        destinations of the hot pattern
  const CHURN = 16_384; //   destinations of the cycled pattern (4x the JS cache)
  for (const n of [10, 1_000, 10_000]) {
    const group = `route lookup, ${n} routes`;
    const table = buildTable(n);
    const uncached = buildTable(n, 0);
    const hot = destinations(n, HOT);
    const churn = destinations(n, CHURN);
    const distinct = Math.min(CHURN, n * 254);
    let i = 0, found = 0;
    const mustFind = () => { if (found === 0) throw new Error('lookups found nothing'); found = 0; };
    for (const d of hot) table.lookup(d); // warm the cache
    // an LRU cycled over D distinct keys hits every time when D <= its size, never when D > it
    const lruHits = (d: number) => (d <= DEFAULT_ROUTE_CACHE_SIZE ? 1 : 0);
    cases.push({
      name: `route lookup JS, ${n} routes, hot ${HOT} dsts, cached`, group, hitRate: lruHits(HOT),
      fn: () => { if (table.lookup(hot[i++ & (HOT - 1)]!) !== undefined) found++; }, verify: mustFind,
    });
    cases.push({
      name: `route lookup JS, ${n} routes, ${CHURN} dsts cycled, cached`, group, hitRate: lruHits(distinct),
      note: `${distinct} distinct destinations, LRU of ${DEFAULT_ROUTE_CACHE_SIZE}${distinct > DEFAULT_ROUTE_CACHE_SIZE ? ': every lookup misses, matches and evicts' : ': all hits'}`,
      fn: () => { if (table.lookup(churn[i++ & (CHURN - 1)]!) !== undefined) found++; }, verify: mustFind,
    });
    cases.push({
      name: `route lookup JS, ${n} routes, LPM without cache`, group,
      fn: () => { if (uncached.lookup(churn[i++ & (CHURN - 1)]!) !== undefined) found++; }, verify: mustFind,
    });
  }
  return cases;
}

/**
 * The js engine's per-packet work for a batch of BATCH packets read from the TUN (outbound,
 * as JsEngine.outbound: validate, lookup, decrementTtl, Buffer.from copy, formatIp of the
 * peer for dgram.send, without the send) and for BATCH datagrams from peers (inbound, as
 * JsEngine.inbound: known peer, validate, source lookup, destination in the lease,
 * decrementTtl, queue for the TUN, without the TUN write). TTL and checksum are restored
 * from a template each packet (3 byte stores) so the packets never expire.
 */
function batchCases(): Case[] {
  const BATCH = 64;
  const SLOT = 1536;
  const table = buildTable(1_000);
  const cases: Case[] = [];
  for (const bytes of [64, 1400]) {
    const readBuf = Buffer.alloc(SLOT * BATCH);
    const lens = new Uint32Array(BATCH);
    for (let i = 0; i < BATCH; i++) {
      ipv4UdpPacket('10.244.1.2', formatIp((0x0a000000 + (i % 1000) * 256 + 2) >>> 0), bytes).copy(readBuf, i * SLOT);
      lens[i] = bytes;
    }
    const template = Buffer.from(readBuf);
    let sent = 0;
    let keep: Buffer | undefined;
    let addr = '';
    cases.push({
      name: `encap batch (js outbound), ${BATCH} x ${bytes} B, 1000 routes`, group: 'batch', packetsPerOp: BATCH,
      note: 'validate + lookup (cache hit) + decrementTtl + copy + formatIp; dgram send not included',
      fn: () => {
        for (let i = 0; i < BATCH; i++) {
          const off = i * SLOT;
          readBuf[off + 8] = template[off + 8]!; readBuf[off + 10] = template[off + 10]!; readBuf[off + 11] = template[off + 11]!;
          const pkt = readBuf.subarray(off, off + lens[i]!);
          if (validateIpv4(pkt, pkt.length) !== IPV4_OK) continue;
          const route = table.lookup(ipv4Dst(pkt));
          if (route === undefined || !decrementTtl(pkt)) continue;
          keep = Buffer.from(pkt);
          addr = formatIp(route.publicIp);
          sent++;
        }
      },
      verify: () => { if (sent === 0 || keep === undefined || addr === '') throw new Error('encap body did not run'); sent = 0; },
    });

    // inbound: datagrams from peer 10.99.0.2 (route 10.0.1.0/24 -> its publicIp) to our lease
    const lease = { addr: 0x0af40100, len: 24 }; // 10.244.1.0/24
    const peerRoute = table.lookup(0x0a000102)!;
    const sender = peerRoute.publicIp;
    const msgs = Array.from({ length: BATCH }, () => ipv4UdpPacket('10.0.1.2', '10.244.1.2', bytes));
    const tmpl = msgs.map((m) => Buffer.from(m));
    let queued: Buffer[] = [];
    let delivered = 0;
    cases.push({
      name: `decap batch (js inbound), ${BATCH} x ${bytes} B, 1000 routes`, group: 'batch', packetsPerOp: BATCH,
      note: 'known peer + validate + source lookup + lease check + decrementTtl + queue; TUN write not included',
      fn: () => {
        for (let i = 0; i < BATCH; i++) {
          const msg = msgs[i]!;
          const t = tmpl[i]!;
          msg[8] = t[8]!; msg[10] = t[10]!; msg[11] = t[11]!;
          if (!table.isKnownPeer(sender)) continue;
          if (validateIpv4(msg, msg.length) !== IPV4_OK) continue;
          const src = table.lookup(ipv4Src(msg));
          if (src === undefined || src.publicIp !== sender) continue;
          if (!prefixContains(lease, ipv4Dst(msg))) continue;
          if (!decrementTtl(msg)) continue;
          queued.push(msg);
        }
        delivered += queued.length;
        queued = [];
      },
      verify: () => { if (delivered === 0) throw new Error('decap body did not run'); delivered = 0; },
    });
  }
  return cases;
}

/**
 * Builds bench/c/NAME.c with the C compiler (CC, default cc) against the native core, as
 * native/test/Makefile builds its tests (every native/src/*.c, -O2); the binary goes to
 * dist/bench/c/. Returns its path or why it could not be built.
 */
function buildHarness(name: string): { bin?: string; reason?: string } {
  const outDir = path.join(ROOT, 'dist', 'bench', 'c');
  mkdirSync(outDir, { recursive: true });
  const bin = path.join(outDir, name);
  const srcDir = path.join(ROOT, 'native', 'src');
  const core = readdirSync(srcDir).filter((f) => f.endsWith('.c')).map((f) => path.join(srcDir, f));
  const cc = process.env['CC'] ?? 'cc';
  const r = run(cc, ['-std=c11', '-D_GNU_SOURCE', '-Wall', '-Wextra', '-Werror', '-O2', '-pthread',
    '-I', path.join(ROOT, 'native', 'include'), '-o', bin, path.join(ROOT, 'bench', 'c', `${name}.c`), ...core], { timeoutMs: 120_000 });
  if (r.status !== 0) return { reason: `${cc} failed: ${r.stderr.trim().slice(0, 500)}` };
  return { bin };
}

function ringC(opts: MicroOptions, skipped: Skipped[]): RingCResult[] {
  const { bin, reason } = buildHarness('ring_bench');
  if (!bin) {
    skipped.push({ name: 'ring transfer (C harness)', group: 'ring', reason: reason ?? 'not built' });
    return [];
  }
  const out: RingCResult[] = [];
  for (const [bytes, packets, batch] of [[64, 20_000_000, 64], [64, 5_000_000, 1], [1400, 5_000_000, 64]] as const) {
    const r = run(bin, [String(bytes), String(packets), String(batch)], { timeoutMs: 90_000 });
    if (r.status !== 0) {
      skipped.push({ name: `ring transfer (C harness) ${bytes} B batch ${batch}`, group: 'ring', reason: `exit ${r.status}: ${r.stderr.trim()}` });
      continue;
    }
    const j = JSON.parse(r.stdout) as RingCResult;
    out.push(j);
    opts.log(`  ring transfer C, ${bytes} B packets, batch ${batch}: ${j.mpps.toFixed(2)} Mpackets/s, ${j.gbytesPerSec.toFixed(2)} GB/s (two threads, no syscalls)`);
  }
  return out;
}

function tunRoundTrip(opts: MicroOptions, skipped: Skipped[]): TunRoundTripResult[] {
  const name = 'TunPort write -> kernel -> readBatch';
  if (!opts.tunNs) {
    skipped.push({ name, group: 'ring', reason: 'needs root and a network namespace of the run (not root, or --only excluded it)' });
    return [];
  }
  const { topo, ns } = opts.tunNs;
  const script = path.join(__dirname, 'tun-roundtrip.js');
  const out: TunRoundTripResult[] = [];
  for (const bytes of [64, 1400]) {
    const r = topo.netns.tryExec(ns, process.execPath, [script, 'bt0', String(bytes), String(opts.tunSeconds)], (opts.tunSeconds + 20) * 1000);
    if (r.status !== 0) {
      skipped.push({ name: `${name}, ${bytes} B`, group: 'ring', reason: `exit ${r.status}: ${r.stderr.trim().slice(-500)}` });
      continue;
    }
    const j = JSON.parse(r.stdout) as TunRoundTripResult;
    out.push(j);
    opts.log(`  ${name}, ${bytes} B: ${(j.pps / 1e3).toFixed(1)} kpackets/s (${(j.bytesPerSec * 8 / 1e9).toFixed(3)} Gbit/s), refused ${j.refused}, kernel-dropped or in flight ${j.lostOrInFlight}`);
  }
  return out;
}

export interface RouteCResult {
  readonly routes: number;
  readonly pattern: string;
  /** ns per lookup, median of ROUTE_C_REPEATS, timed inside C */
  readonly nsPerLookup: number;
  /** where the number comes from: the addon's routeBench hook, or bench/c/route_bench.c */
  readonly via: 'addon.routeBench' | 'bench/c/route_bench';
  /** cached patterns: fraction of lookups answered by the cache (from bench/c/route_bench) */
  readonly hitRate?: number;
  /** false when the table bypasses its cache for this shape of table */
  readonly cacheUsed?: boolean;
}

const ROUTE_C_LOOKUPS = 4_000_000; // per measurement
const ROUTE_C_REPEATS = 5;

/**
 * The native engine's C route table, with the routes, destinations and patterns of the JS
 * lookups: timed through the addon's routeBench hook (the engine's own -O2 build, no call
 * per lookup) when the addon has it; the C harness bench/c/route_bench.c, built against
 * native/src, supplies the cache hit rates (and the timings when the hook is missing).
 */
function routeC(opts: MicroOptions, skipped: Skipped[]): RouteCResult[] {
  const todo = (why: string) => {
    for (const n of [10, 1_000, 10_000]) skipped.push({ name: `route lookup C table, ${n} routes`, group: `route lookup, ${n} routes`, reason: `TODO(native engine): ${why}; no number is reported` });
    return [];
  };
  const header = path.join(ROOT, 'native', 'include', 'overlayd.h');
  if (!existsSync(path.join(ROOT, 'native', 'src', 'route.c')) || !readFileSync(header, 'utf8').includes('ovl_rtable_build')) {
    return todo('the native engine has no C route table yet (native/src/route.c with ovl_rtable_build/ovl_rcache_lookup)');
  }
  // the harness: hit rates, and timings as the fallback
  const harness = new Map<string, { nsPerLookup: number; hitRate?: number; cacheUsed?: boolean }>();
  const { bin, reason } = buildHarness('route_bench');
  if (!bin) {
    skipped.push({ name: 'route lookup C table, cache hit rates', group: 'route', reason: `bench/c/route_bench.c did not build: ${reason}` });
  } else {
    const r = run(bin, [], { timeoutMs: 150_000 });
    if (r.status !== 0) skipped.push({ name: 'route lookup C table, cache hit rates', group: 'route', reason: `route_bench exit ${r.status}: ${r.stderr.trim().slice(0, 300)}` });
    for (const line of r.status === 0 ? r.stdout.split('\n') : []) {
      if (line.trim() === '') continue;
      const j = JSON.parse(line) as { routes: number; pattern: string; nsPerLookup: number; hitRate?: number; cacheUsed?: boolean };
      harness.set(`${j.routes}/${j.pattern}`, { nsPerLookup: j.nsPerLookup, ...(j.hitRate !== undefined ? { hitRate: j.hitRate } : {}), ...(j.cacheUsed !== undefined ? { cacheUsed: j.cacheUsed } : {}) });
    }
  }
  let hook: ((routes: Uint32Array, addrs: Uint32Array, rounds: number, cached: boolean) => { lookups: number; found: number; ns: number }) | undefined;
  try {
    const addon = loadAddon();
    if (typeof addon.routeBench === 'function') hook = addon.routeBench.bind(addon);
  } catch { /* no addon: the harness numbers stand */ }
  const out: RouteCResult[] = [];
  const HOT = 256, CHURN = 16_384;
  for (const n of [10, 1_000, 10_000]) {
    const routes = new Uint32Array(n * 3);
    for (let i = 0; i < n; i++) routes.set([(0x0a000000 + i * 256) >>> 0, 24, (0x0a630000 + 1 + i) >>> 0], i * 3);
    for (const [pattern, addrs, cached] of [
      [`hot ${HOT} dsts, cached`, destinations(n, HOT), true],
      [`${CHURN} dsts cycled, cached`, destinations(n, CHURN), true],
      ['LPM without cache', destinations(n, CHURN), false],
    ] as const) {
      const h = harness.get(`${n}/${pattern}`);
      let ns: number | undefined;
      if (hook) {
        const runs: number[] = [];
        for (let k = 0; k < ROUTE_C_REPEATS; k++) {
          const res = hook(routes, addrs, Math.max(1, Math.round(ROUTE_C_LOOKUPS / addrs.length)), cached);
          if (res.found !== res.lookups) throw new Error(`routeBench: ${res.lookups - res.found} lookups found no route`);
          runs.push(res.ns / res.lookups);
        }
        ns = median(runs);
      }
      const nsPerLookup = ns ?? h?.nsPerLookup;
      if (nsPerLookup === undefined) continue;
      const r: RouteCResult = { routes: n, pattern, nsPerLookup, via: ns !== undefined ? 'addon.routeBench' : 'bench/c/route_bench', ...(h?.hitRate !== undefined ? { hitRate: h.hitRate } : {}), ...(h?.cacheUsed !== undefined ? { cacheUsed: h.cacheUsed } : {}) };
      out.push(r);
      opts.log(`  route lookup C table, ${n} routes, ${pattern}: ${nsPerLookup.toFixed(1)} ns/lookup (${r.via})${r.hitRate !== undefined ? `, cache hit rate ${(r.hitRate * 100).toFixed(1)}%` : ''}${r.cacheUsed === false ? ', cache bypassed by route.c for this table' : ''}`);
    }
  }
  if (out.length === 0) return todo('neither the addon routeBench hook nor bench/c/route_bench.c gave a number');
  return out;
}

export function runMicro(opts: MicroOptions): MicroResults {
  const skipped: Skipped[] = [];
  opts.log('micro: IPv4 parse/validate (benchmark.js)');
  const js = runCases(ipv4Cases(), opts);
  opts.log('micro: route lookup (benchmark.js)');
  js.push(...runCases(routeCases(), opts));
  const routeTableC = routeC(opts, skipped);
  opts.log('micro: encap/decap of a batch (benchmark.js)');
  js.push(...runCases(batchCases(), opts));
  opts.log('micro: ring transfer');
  const ring = ringC(opts, skipped);
  const tun = tunRoundTrip(opts, skipped);
  for (const s of skipped) opts.log(`  SKIPPED ${s.name}: ${s.reason}`);
  return { js, routeC: routeTableC, ringC: ring, tunRoundTrip: tun, skipped };
}
