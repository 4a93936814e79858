/**
 * `npm run bench -- --html FILE`: the results of a run as one self-contained HTML page (inline
 * SVG bar charts and CSS, no script, no external asset): per two-node metric one chart with
 * the tunnels side by side, the ratios and targets as tables, the micro-benchmarks as charts.
 * Pure: renderHtml(doc) is the page for a results document (the same object --json writes).
 */
import type { BenchJson } from './run';
import type { Summary } from './two-node';
import { fmt } from './stats';
import { isKernelSetup } from './engines';

/** One bar: a label (a tunnel, a benchmark) and its figure (missing: drawn as "n/a"). */
interface Bar { readonly label: string; readonly value: number | undefined }

/** One two-node metric: its title, unit, decimals and which way is better. */
interface Metric {
  readonly title: string;
  readonly unit: string;
  readonly digits: number;
  readonly better: 'higher' | 'lower';
  readonly value: (s: Summary) => number | undefined;
  /** kernel VXLAN has no daemon: the metric is left out for it */
  readonly daemonOnly?: boolean;
}

/** The two-node metrics charted, in the order of the text table. */
export const TWO_NODE_METRICS: readonly Metric[] = [
  { title: 'TCP 1 stream', unit: 'Gbit/s', digits: 3, better: 'higher', value: (s) => s.tcp1Gbps },
  { title: 'TCP 1 stream over IPv6 (dual-stack runs)', unit: 'Gbit/s', digits: 3, better: 'higher', value: (s) => s.tcp1v6Gbps },
  { title: 'TCP 4 streams', unit: 'Gbit/s', digits: 3, better: 'higher', value: (s) => s.tcp4Gbps },
  { title: 'UDP 64 B received', unit: 'kpackets/s', digits: 1, better: 'higher', value: (s) => (s.udpRxPps !== undefined ? s.udpRxPps / 1e3 : undefined) },
  { title: 'UDP 64 B loss', unit: '%', digits: 1, better: 'lower', value: (s) => s.udpLossPct },
  { title: 'UDP 1400 B datagrams, UDP_SEGMENT writes (USO)', unit: 'Gbit/s', digits: 3, better: 'higher', value: (s) => s.udpGsoGbps },
  { title: 'ping RTT p50', unit: 'us', digits: 0, better: 'lower', value: (s) => s.pingP50Us },
  { title: 'ping RTT p99', unit: 'us', digits: 0, better: 'lower', value: (s) => s.pingP99Us },
  { title: 'ping RTT average', unit: 'us', digits: 0, better: 'lower', value: (s) => s.pingAvgUs },
  { title: 'daemons cores per Gbit/s, TCP 1 stream', unit: 'cores/(Gbit/s)', digits: 3, better: 'lower', value: (s) => s.tcp1DaemonCoresPerGbps, daemonOnly: true },
  { title: 'daemons cores per Gbit/s, TCP 4 streams', unit: 'cores/(Gbit/s)', digits: 3, better: 'lower', value: (s) => s.tcp4DaemonCoresPerGbps, daemonOnly: true },
  { title: 'daemons CPU per UDP packet received', unit: 'us', digits: 2, better: 'lower', value: (s) => s.udpDaemonCpuUsPerPacket, daemonOnly: true },
  { title: 'daemon idle CPU, no traffic (busier daemon, self + children)', unit: '% of a core', digits: 2, better: 'lower', value: (s) => s.idleCpuPct, daemonOnly: true },
  { title: 'whole-VM CPU-s per GB, TCP 1 stream', unit: 'CPU-s/GB', digits: 2, better: 'lower', value: (s) => s.tcp1HostCpuSPerGB },
  { title: 'whole-VM CPU-s per GB, TCP 4 streams', unit: 'CPU-s/GB', digits: 2, better: 'lower', value: (s) => s.tcp4HostCpuSPerGB },
];

/** A fixed colour per tunnel, so one tunnel has one colour in every chart. */
const COLOURS: Record<string, string> = {
  'vxlan': '#4e79a7', 'vxlan6': '#76b7b2', 'direct-routing': '#59a14f', 'native': '#f28e2b', 'native-pc': '#ff9da7', 'native-q2': '#edc948', 'native-nooff': '#e15759', 'js': '#b07aa1',
};
const OTHER_COLOURS = ['#76b7b2', '#ff9da7', '#9c755f', '#bab0ac'];

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function colourOf(label: string, i: number): string {
  return COLOURS[label] ?? OTHER_COLOURS[i % OTHER_COLOURS.length]!;
}

/** A horizontal bar chart as inline SVG: one row per bar, the figure printed after the bar. */
export function barChart(title: string, unit: string, bars: readonly Bar[], digits: number, note = ''): string {
  const rowH = 22, labelW = 330, barW = 360, valueW = 150, top = 8;
  const width = labelW + barW + valueW;
  const height = top + bars.length * rowH + 6;
  const max = Math.max(0, ...bars.map((b) => (b.value !== undefined && Number.isFinite(b.value) ? b.value : 0)));
  const rows = bars.map((b, i) => {
    const y = top + i * rowH;
    const ok = b.value !== undefined && Number.isFinite(b.value);
    const w = ok && max > 0 ? Math.max(1, Math.round((Math.max(0, b.value as number) / max) * barW)) : 0;
    const text = ok ? `${fmt(b.value, digits)} ${unit}` : 'n/a';
    return [
      `<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${escapeHtml(b.label)}</text>`,
      `<rect x="${labelW}" y="${y + 3}" width="${w}" height="${rowH - 6}" fill="${colourOf(b.label, i)}"><title>${escapeHtml(`${b.label}: ${text}`)}</title></rect>`,
      `<text x="${labelW + w + 6}" y="${y + 15}">${escapeHtml(text)}</text>`,
    ].join('');
  });
  return [
    `<figure><figcaption>${escapeHtml(title)}${note ? ` <span class="note">${escapeHtml(note)}</span>` : ''}</figcaption>`,
    `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(title)}">`,
    ...rows,
    '</svg></figure>',
  ].join('\n');
}

function htmlTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const th = head.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const tr = rows.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table><thead><tr>${th}</tr></thead><tbody>\n${tr}\n</tbody></table>`;
}

function twoNodeSection(t: NonNullable<BenchJson['twoNode']>): string {
  const out: string[] = ['<h2>Two nodes (median of the rounds)</h2>'];
  const avail = t.setups.filter((s) => s.available);
  for (const m of TWO_NODE_METRICS) {
    const setups = m.daemonOnly ? avail.filter((s) => !isKernelSetup(s.setup)) : avail;
    if (setups.length === 0) continue;
    const bars = setups.map((s) => ({ label: s.setup, value: m.value(s.median) }));
    out.push(barChart(m.title, m.unit, bars, m.digits, `${m.better} is better`));
  }
  for (const s of t.setups) if (!s.available) out.push(`<p class="note">${escapeHtml(`${s.setup}: not available: ${s.reason ?? '?'}`)}</p>`);
  const pairs = Object.keys(t.ratios);
  if (pairs.length > 0) {
    out.push('<h2>Ratios</h2>');
    const r = (p: string) => t.ratios[p]!;
    out.push(htmlTable(['ratio', ...pairs], [
      ['TCP 1 stream', ...pairs.map((p) => fmt(r(p).tcp1, 3))],
      ['TCP 4 streams', ...pairs.map((p) => fmt(r(p).tcp4, 3))],
      ['UDP 64 B packets/s received', ...pairs.map((p) => fmt(r(p).udpRxPps, 3))],
      ['UDP 1400 B (USO) Gbit/s received', ...pairs.map((p) => fmt(r(p).udpGsoGbps, 3))],
      ['ping p50 difference, us', ...pairs.map((p) => fmt(r(p).pingP50DiffUs, 0))],
    ]));
  }
  if (t.targets.length > 0) {
    out.push('<h2>Targets</h2>');
    out.push(htmlTable(['target', 'measured', 'result', 'note'], t.targets.map((c) => [
      `${c.informative ? '(informative) ' : ''}${c.target}`,
      c.measured !== undefined ? `${fmt(c.measured, c.unit === 'x' ? 3 : 2)} ${c.unit}` : 'n/a',
      c.pass === null ? 'N/A' : c.pass ? 'PASS' : 'MISS',
      c.note,
    ])));
  }
  return out.join('\n');
}

function microSection(m: NonNullable<BenchJson['micro']>): string {
  const out: string[] = ['<h2>Micro-benchmarks</h2>'];
  if (m.js.length > 0) out.push(barChart('JavaScript (benchmark.js)', 'Mops/s', m.js.map((r) => ({ label: r.name, value: r.opsPerSec / 1e6 })), 3, 'higher is better'));
  if (m.routeC.length > 0) out.push(barChart('route lookup, C table', 'ns/lookup', m.routeC.map((r) => ({ label: `${r.routes} routes, ${r.pattern}`, value: r.nsPerLookup })), 1, 'lower is better'));
  if (m.ringC.length > 0) out.push(barChart('C SPSC ring, two threads', 'Mpackets/s', m.ringC.map((r) => ({ label: `${r.packetBytes} B, batch ${r.batch}`, value: r.mpps })), 2, 'higher is better'));
  if (m.tunRoundTrip.length > 0) out.push(barChart('TunPort write -> kernel -> readBatch', 'Mpackets/s', m.tunRoundTrip.map((r) => ({ label: `${r.packetBytes} B`, value: r.pps / 1e6 })), 3, 'higher is better'));
  if (m.skipped.length > 0) out.push(`<p class="note">not measured: ${m.skipped.map((s) => escapeHtml(`${s.name}: ${s.reason}`)).join('; ')}</p>`);
  return out.join('\n');
}

/** The whole page for a results document. */
export function renderHtml(doc: BenchJson): string {
  const meta = doc.meta;
  const str = (k: string) => (meta[k] === undefined ? '?' : String(meta[k]));
  const git = meta['git'] as { commit?: string; uncommittedFiles?: number } | undefined;
  const desc = `${str('date')} on ${str('host')} (${str('cpus')} x ${str('cpuModel')}, Linux ${str('kernel')}, Node ${str('node')}), commit ${git?.commit ?? '?'}${git?.uncommittedFiles ? ` + ${git.uncommittedFiles} uncommitted file(s)` : ''}, load average ${Array.isArray(meta['loadavgStart']) ? (meta['loadavgStart'] as number[]).join(' ') : '?'}`;
  const body: string[] = [`<h1>overlayd bench</h1>`, `<p>${escapeHtml(desc)}</p>`];
  if (doc.twoNode) body.push(twoNodeSection(doc.twoNode));
  if (doc.micro) body.push(microSection(doc.micro));
  if (doc.notRun) for (const [k, v] of Object.entries(doc.notRun)) body.push(`<p class="note">${escapeHtml(`${k}: not run: ${v}`)}</p>`);
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8"><title>overlayd bench</title>',
    '<style>',
    'body{font-family:sans-serif;margin:1.5em;color:#222}figure{margin:0 0 1.2em 0}figcaption{font-weight:bold;margin-bottom:.2em}',
    'svg text{font:12px sans-serif;fill:#222}.note{color:#666;font-weight:normal;font-size:90%}',
    'table{border-collapse:collapse;margin-bottom:1.2em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}',
    '</style></head><body>',
    ...body,
    '</body></html>',
    '',
  ].join('\n');
}
