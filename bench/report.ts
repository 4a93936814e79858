/** Tables, ratios and the issue's targets, from the measured results. */
import type { MicroResults } from './micro';
import { headline, type SetupResult, type Summary, type TwoNodeResults } from './two-node';
import { fmt, ratio } from './stats';
import { isKernelSetup } from './engines';

export interface Ratios {
  /** numerator/denominator, e.g. "native/vxlan" -> metric -> ratio */
  readonly [pair: string]: { readonly tcp1?: number; readonly tcp4?: number; readonly udpRxPps?: number; readonly udpGsoGbps?: number; readonly pingP50DiffUs?: number; readonly tcp1v6?: number };
}

export interface TargetCheck {
  readonly target: string;
  /** the engine checked: "native" (the issue's targets) or "js" (informative) */
  readonly engine: 'native' | 'js';
  readonly informative: boolean;
  /** the measured ratio or value the threshold applies to */
  readonly measured?: number;
  readonly threshold: number;
  readonly unit: string;
  /** true PASS, false MISS, null cannot be checked (reason in note) */
  readonly pass: boolean | null;
  readonly note: string;
}

function summaryOf(t: TwoNodeResults, setup: string): Summary | undefined {
  const s = t.setups.find((x) => x.setup === setup);
  return s?.available ? s.median : undefined;
}

export function computeRatios(t: TwoNodeResults): Ratios {
  const out: Record<string, Ratios[string]> = {};
  for (const [a, b] of [['direct-routing', 'vxlan'], ['native', 'vxlan'], ['native-pc', 'vxlan'], ['native-pc', 'native'], ['native-q2', 'vxlan'], ['native-q2', 'native'], ['native-nooff', 'vxlan'], ['js', 'vxlan'], ['native', 'vxlan6'], ['vxlan6', 'vxlan'], ['native', 'native-nooff'], ['native', 'js']] as const) {
    const x = summaryOf(t, a), y = summaryOf(t, b);
    if (!x || !y) continue;
    const r: Record<string, number | undefined> = {
      tcp1: ratio(x.tcp1Gbps, y.tcp1Gbps),
      tcp4: ratio(x.tcp4Gbps, y.tcp4Gbps),
      udpRxPps: ratio(x.udpRxPps, y.udpRxPps),
      udpGsoGbps: ratio(x.udpGsoGbps, y.udpGsoGbps),
      pingP50DiffUs: x.pingP50Us !== undefined && y.pingP50Us !== undefined ? x.pingP50Us - y.pingP50Us : undefined,
      tcp1v6: ratio(x.tcp1v6Gbps, y.tcp1v6Gbps),
    };
    for (const k of Object.keys(r)) if (r[k] === undefined) delete r[k];
    out[`${a}/${b}`] = r;
  }
  return out;
}

export function checkTargets(t: TwoNodeResults): TargetCheck[] {
  const out: TargetCheck[] = [];
  const vx = summaryOf(t, 'vxlan');
  const js = summaryOf(t, 'js');
  const reasonOf = (setup: string) => {
    const s = t.setups.find((x) => x.setup === setup);
    return s === undefined ? `${setup} not run (--engines)` : `${setup} not available: ${headline(s.reason ?? '?')}`;
  };
  for (const engine of ['native', 'js'] as const) {
    const me = summaryOf(t, engine);
    const informative = engine === 'js';
    const setupRes: SetupResult | undefined = t.setups.find((x) => x.setup === engine);
    const add = (target: string, measured: number | undefined, threshold: number, unit: string, atMost: boolean, missing: string) => {
      const pass = measured === undefined ? null : atMost ? measured <= threshold : measured >= threshold;
      const margin = measured === undefined ? '' : pass ? '' : atMost ? `over by ${fmt(measured - threshold)} ${unit} (${fmt(measured / threshold)}x the limit)` : `short by ${fmt(threshold - measured, 3)} ${unit} (${fmt((100 * measured) / threshold, 0)}% of the target)`;
      out.push({ target, engine, informative, ...(measured !== undefined ? { measured } : {}), threshold, unit, pass, note: measured === undefined ? missing : margin });
    };
    const need = (...setups: string[]) => setups.filter((s) => !summaryOf(t, s)).map(reasonOf).join('; ');
    add(`${engine} TCP 1 stream >= 0.10 x kernel VXLAN`, ratio(me?.tcp1Gbps, vx?.tcp1Gbps), 0.10, 'x', false, need(engine, 'vxlan'));
    add(`${engine} UDP 64 B packets/s received >= 0.5 x kernel VXLAN`, ratio(me?.udpRxPps, vx?.udpRxPps), 0.5, 'x', false, need(engine, 'vxlan'));
    add(`${engine} CPU of both daemons <= 1 core per Gbit/s (TCP 1 stream)`, me?.tcp1DaemonCoresPerGbps, 1, 'cores/(Gbit/s)', true, need(engine));
    add(`${engine} CPU of both daemons <= 1 core per Gbit/s (TCP 4 streams)`, me?.tcp4DaemonCoresPerGbps, 1, 'cores/(Gbit/s)', true, need(engine));
    add(`${engine} ping p50 RTT <= kernel VXLAN's + 100 us`, me?.pingP50Us !== undefined && vx?.pingP50Us !== undefined ? me.pingP50Us - vx.pingP50Us : undefined, 100, 'us more than VXLAN', true, need(engine, 'vxlan'));
    if (engine === 'native') add('native TCP 1 stream >= 3 x js', ratio(me?.tcp1Gbps, js?.tcp1Gbps), 3, 'x', false, need('native', 'js'));
    if (engine === 'native') { // issue 7: the native engine with its offloads (the default)
      add('native (offloads) TCP 1 stream >= 0.5 x kernel VXLAN', ratio(me?.tcp1Gbps, vx?.tcp1Gbps), 0.5, 'x', false, need('native', 'vxlan'));
      add('native (offloads) TCP 4 streams >= 0.5 x kernel VXLAN', ratio(me?.tcp4Gbps, vx?.tcp4Gbps), 0.5, 'x', false, need('native', 'vxlan'));
      add('native (offloads) CPU of both daemons <= 0.3 core per Gbit/s (TCP 1 stream)', me?.tcp1DaemonCoresPerGbps, 0.3, 'cores/(Gbit/s)', true, need('native'));
      add('native (offloads) CPU of both daemons <= 0.3 core per Gbit/s (TCP 4 streams)', me?.tcp4DaemonCoresPerGbps, 0.3, 'cores/(Gbit/s)', true, need('native'));
    }
    if (t.ipv6) { // issue 12: IPv6 through the same daemons, in the same rounds
      add(`${engine} IPv6 TCP 1 stream >= 0.9 x its IPv4 TCP 1 stream (same daemons, same rounds)`, me?.tcp1v6PerV4, 0.9, 'x', false, need(engine));
    }
    if (engine === 'native') add('native ping average RTT <= kernel VXLAN\'s + 50 us (issue 13)', me?.pingAvgUs !== undefined && vx?.pingAvgUs !== undefined ? me.pingAvgUs - vx.pingAvgUs : undefined, 50, 'us more than VXLAN', true, need('native', 'vxlan'));
    if (engine === 'native') add('native daemon idle (no traffic) <= 1% of a core, self + children (issue 13)', me?.idleCpuPct, 1, '% of a core', true, need('native'));
    const mem = setupRes?.rss10k?.mem?.rssMB;
    add(`${engine} daemon RSS <= 80 MB with 10,000 routes (after traffic)`, mem, 80, 'MB', true, setupRes?.rss10k?.error ? `10k-route run failed: ${headline(setupRes.rss10k.error)}` : need(engine));
  }
  // issue 13's throughput and CPU targets, for the default native engine and with --partial-checksums
  for (const setup of ['native', 'native-pc'] as const) {
    const me = summaryOf(t, setup);
    if (me === undefined && setup === 'native-pc') continue; // optional setup: no row when not run
    const need = [setup, 'vxlan'].filter((s) => !summaryOf(t, s)).map(reasonOf).join('; ');
    const add = (target: string, measured: number | undefined, threshold: number, unit: string, atMost: boolean) => {
      const pass = measured === undefined ? null : atMost ? measured <= threshold : measured >= threshold;
      const margin = measured === undefined || pass ? '' : atMost ? `over by ${fmt(measured - threshold)} ${unit} (${fmt(measured / threshold)}x the limit)` : `short by ${fmt(threshold - measured, 3)} ${unit} (${fmt((100 * measured) / threshold, 0)}% of the target)`;
      out.push({ target, engine: 'native', informative: false, ...(measured !== undefined ? { measured } : {}), threshold, unit, pass, note: measured === undefined ? need : margin });
    };
    add(`${setup} TCP 1 stream >= 0.9 x kernel VXLAN (issue 13)`, ratio(me?.tcp1Gbps, vx?.tcp1Gbps), 0.9, 'x', false);
    add(`${setup} TCP 4 streams >= 0.9 x kernel VXLAN (issue 13)`, ratio(me?.tcp4Gbps, vx?.tcp4Gbps), 0.9, 'x', false);
    add(`${setup} UDP 64 B packets/s received >= 0.8 x kernel VXLAN (issue 13)`, ratio(me?.udpRxPps, vx?.udpRxPps), 0.8, 'x', false);
    add(`${setup} CPU of both daemons <= 0.12 core per Gbit/s, TCP 1 stream (issue 13)`, me?.tcp1DaemonCoresPerGbps, 0.12, 'cores/(Gbit/s)', true);
  }
  return out;
}

/** Columns 0 and `leftFrom`.. are left-aligned, the others (numbers) right-aligned. */
function table(rows: string[][], leftFrom = Infinity): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, c.length); });
  return rows.map((r) => r.map((c, i) => (i === 0 || i >= leftFrom ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
}

export function formatMicro(m: MicroResults): string {
  const rows: string[][] = [['micro-benchmark', 'ns/op', '±%', 'ns/packet', 'Mops/s']];
  for (const r of m.js) rows.push([`${r.name}${r.hitRate !== undefined ? ` (${fmt(r.hitRate * 100, 0)}% hits)` : ''}`, fmt(r.nsPerOp, 1), fmt(r.rmePct, 1), r.nsPerPacket !== undefined ? fmt(r.nsPerPacket, 1) : '', fmt(r.opsPerSec / 1e6, 3)]);
  for (const r of m.routeC) rows.push([`route lookup C table, ${r.routes} routes, ${r.pattern}${r.hitRate !== undefined ? ` (${fmt(r.hitRate * 100, 0)}% hits)` : ''}${r.cacheUsed === false ? ' (cache bypassed)' : ''}`, fmt(r.nsPerLookup, 1), '', '', fmt(1e3 / r.nsPerLookup, 3)]);
  const ring: string[][] = [['ring transfer', 'Mpackets/s', 'Gbit/s']];
  for (const r of m.ringC) ring.push([`C SPSC ring, two threads, ${r.packetBytes} B, batch ${r.batch}`, fmt(r.mpps, 2), fmt(r.gbytesPerSec * 8, 1)]);
  for (const r of m.tunRoundTrip) ring.push([`TunPort write -> kernel -> readBatch, ${r.packetBytes} B`, fmt(r.pps / 1e6, 3), fmt((r.bytesPerSec * 8) / 1e9, 2)]);
  const lines = [table(rows), '', table(ring)];
  if (m.skipped.length > 0) {
    lines.push('', 'not measured:');
    for (const s of m.skipped) lines.push(`  - ${s.name}: ${s.reason}`);
  }
  return lines.join('\n');
}

export function formatTwoNode(t: TwoNodeResults, ratios: Ratios, targets: TargetCheck[]): string {
  const setups = t.setups;
  const head = ['two-node (median of rounds)', ...setups.map((s) => (s.available ? s.setup : `${s.setup} (n/a)`))];
  const col = (f: (s: Summary, r: SetupResult) => string) => setups.map((s) => (s.available ? f(s.median, s) : '-'));
  const daemonOnly = (f: (s: Summary, r: SetupResult) => string) => col((s, r) => (isKernelSetup(r.setup) ? 'n/a (kernel)' : f(s, r)));
  const rows: string[][] = [
    head,
    ['TCP 1 stream, Gbit/s', ...col((s) => fmt(s.tcp1Gbps, 3))],
    ...(t.ipv6 ? [
      ['TCP 1 stream over IPv6 (v6 pod to v6 pod), Gbit/s', ...col((s) => fmt(s.tcp1v6Gbps, 3))],
      ['  IPv6 / IPv4, TCP 1 stream (median of the rounds)', ...col((s) => fmt(s.tcp1v6PerV4, 3))],
    ] : []),
    ['TCP 4 streams, Gbit/s', ...col((s) => fmt(s.tcp4Gbps, 3))],
    ['TCP retransmits, 1 stream / 4 streams', ...col((s) => `${fmt(s.tcp1Retransmits, 0)} / ${fmt(s.tcp4Retransmits, 0)}`)],
    ['UDP 64 B received, kpackets/s', ...col((s) => fmt(s.udpRxPps !== undefined ? s.udpRxPps / 1e3 : undefined, 1))],
    ['UDP 64 B sent by iperf3, kpackets/s', ...col((s) => fmt(s.udpSentPps !== undefined ? s.udpSentPps / 1e3 : undefined, 1))],
    ['UDP 64 B loss, %', ...col((s) => fmt(s.udpLossPct, 1))],
    ['UDP 1400 B datagrams, UDP_SEGMENT writes (USO), Gbit/s received', ...col((s) => fmt(s.udpGsoGbps, 3))],
    ['UDP 1400 B datagrams (USO) loss, %', ...col((s) => fmt(s.udpGsoLossPct, 1))],
    ['ping RTT p50, us', ...col((s) => fmt(s.pingP50Us, 0))],
    ['ping RTT p99, us', ...col((s) => fmt(s.pingP99Us, 0))],
    ['ping RTT average, us', ...col((s) => fmt(s.pingAvgUs, 0))],
    ['daemons CPU-s per GB, TCP 1 stream', ...daemonOnly((s) => fmt(s.tcp1DaemonCpuSPerGB, 2))],
    ['daemons cores per Gbit/s, TCP 1 stream', ...daemonOnly((s) => fmt(s.tcp1DaemonCoresPerGbps, 3))],
    ['daemons CPU-s per GB, TCP 4 streams', ...daemonOnly((s) => fmt(s.tcp4DaemonCpuSPerGB, 2))],
    ['daemons cores per Gbit/s, TCP 4 streams', ...daemonOnly((s) => fmt(s.tcp4DaemonCoresPerGbps, 3))],
    ['daemons CPU us per UDP packet received', ...daemonOnly((s) => fmt(s.udpDaemonCpuUsPerPacket, 2))],
    ['daemons cores per Gbit/s, UDP 1400 B (USO)', ...daemonOnly((s) => fmt(s.udpGsoDaemonCoresPerGbps, 3))],
    ['whole-VM CPU-s per GB, TCP 1 stream (*)', ...col((s) => fmt(s.tcp1HostCpuSPerGB, 2))],
    ['whole-VM CPU-s per GB, TCP 4 streams (*)', ...col((s) => fmt(s.tcp4HostCpuSPerGB, 2))],
    ['daemon idle CPU, no traffic, % of a core (busier daemon, self + children)', ...daemonOnly((s) => fmt(s.idleCpuPct, 2))],
    ['daemon RSS at the end of a round (max), MB (n1, n2)', ...daemonOnly((_s, r) => r.daemonMem.map((m) => fmt(m.rssMB, 1)).join(', ') || 'n/a')],
    ['daemon RSS with 10,000 routes, idle, MB', ...daemonOnly((_s, r) => (r.rss10k?.memIdle ? fmt(r.rss10k.memIdle.rssMB, 1) : r.rss10k?.error ? 'error' : 'n/a'))],
    ['daemon RSS with 10,000 routes, after traffic, MB', ...daemonOnly((_s, r) => (r.rss10k?.mem ? fmt(r.rss10k.mem.rssMB, 1) : r.rss10k?.error ? 'error' : 'n/a'))],
    ['  peak (VmHWM) with 10,000 routes, MB', ...daemonOnly((_s, r) => (r.rss10k?.mem ? fmt(r.rss10k.mem.hwmMB, 1) : 'n/a'))],
    ['  start-up to forwarding with 10,000 routes, ms', ...daemonOnly((_s, r) => (r.rss10k && !r.rss10k.error ? String(r.rss10k.startMs) : 'n/a'))],
  ];
  const lines = [table(rows), '(*) busy time of every CPU of the machine around the run: iperf3, kernel, daemons, and any other load'];
  for (const s of setups) if (!s.available) lines.push(`  ${s.setup}: ${headline(s.reason ?? '?')}`);
  const failures: string[] = [];
  for (const s of setups) {
    s.rounds.forEach((r, i) => {
      for (const [k, v] of Object.entries(r)) if (v && typeof v === 'object' && 'error' in v) failures.push(`  ${s.setup} round ${i + 1} ${k}: ${(v as { error: string }).error.slice(0, 200)}`);
    });
  }
  if (failures.length > 0) lines.push('', 'failed runs (left out of the medians):', ...failures);

  // where packets were lost, from the last round: drop and error counters that moved
  const acct: string[] = [];
  for (const s of setups) {
    const last = s.rounds[s.rounds.length - 1];
    if (!last) continue;
    for (const [test, res] of [['tcp1', last.tcp1], ['tcp1v6', last.tcp1v6], ['tcp4', last.tcp4], ['udp64', last.udp64], ['udp-gso', last.udpGso]] as const) {
      if (!res || 'error' in res || !res.counters) continue;
      const c = res.counters;
      const lossy = Object.entries(c).filter(([k]) => /drop|Errors|error|NoPorts/i.test(k)).map(([k, v]) => `${k} ${v}`);
      const flow = ['n1.daemon.packets.tun_read', 'n1.daemon.packets.udp_sent', 'n2.daemon.packets.udp_received', 'n2.daemon.packets.tun_written', 'n2.daemon.offloads.tun_gro_writes', 'n1.daemon.offloads.tun_uso_reads'].filter((k) => c[k] !== undefined).map((k) => `${k.replace('.daemon', '')} ${c[k]}`);
      acct.push(`  ${s.setup} ${test}: ${[...flow, ...lossy].join(', ') || 'no drops counted'}`);
    }
  }
  if (acct.length > 0) lines.push('', 'loss accounting, last round (counter deltas: daemon counters, /proc/net/snmp Udp, device drops):', ...acct);

  const pairs = Object.keys(ratios);
  if (pairs.length > 0) {
    const rr: string[][] = [['ratios', ...pairs]];
    rr.push(['TCP 1 stream', ...pairs.map((p) => fmt(ratios[p]!.tcp1, 3))]);
    if (t.ipv6) rr.push(['TCP 1 stream over IPv6', ...pairs.map((p) => fmt(ratios[p]!.tcp1v6, 3))]);
    rr.push(['TCP 4 streams', ...pairs.map((p) => fmt(ratios[p]!.tcp4, 3))]);
    rr.push(['UDP 64 B packets/s received', ...pairs.map((p) => fmt(ratios[p]!.udpRxPps, 3))]);
    rr.push(['UDP 1400 B (USO) Gbit/s received', ...pairs.map((p) => fmt(ratios[p]!.udpGsoGbps, 3))]);
    rr.push(['ping p50 difference, us', ...pairs.map((p) => fmt(ratios[p]!.pingP50DiffUs, 0))]);
    lines.push('', table(rr));
  }
  const tr: string[][] = [['target (issue 4)', 'measured', 'result', 'note']];
  for (const c of targets) {
    tr.push([
      `${c.informative ? '(informative) ' : ''}${c.target}`,
      c.measured !== undefined ? `${fmt(c.measured, c.unit === 'x' ? 3 : 2)} ${c.unit}` : 'n/a',
      c.pass === null ? 'N/A' : c.pass ? 'PASS' : 'MISS',
      c.note,
    ]);
  }
  lines.push('', table(tr, 3));
  return lines.join('\n');
}
