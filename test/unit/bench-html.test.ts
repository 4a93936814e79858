import t from 'tap';
import { escapeHtml, renderHtml, TWO_NODE_METRICS } from '../../bench/html';
import { checkTargets, computeRatios } from '../../bench/report';
import { fmt } from '../../bench/stats';
import type { BenchJson } from '../../bench/run';
import type { Summary, TwoNodeResults } from '../../bench/two-node';

const vxlan: Summary = {
  tcp1Gbps: 9.123, tcp4Gbps: 15.337, udpRxPps: 118_100, udpSentPps: 119_300, udpLossPct: 1.04, pingP50Us: 120, pingP99Us: 164,
  tcp1HostCpuSPerGB: 1.14, tcp4HostCpuSPerGB: 0.89,
};
const native: Summary = {
  tcp1Gbps: 3.981, tcp4Gbps: 3.751, udpRxPps: 43_200, udpSentPps: 119_500, udpLossPct: 63.6, pingP50Us: 213, pingP99Us: 1890,
  tcp1DaemonCoresPerGbps: 0.211, tcp4DaemonCoresPerGbps: 0.228, udpDaemonCpuUsPerPacket: 11.88, tcp1HostCpuSPerGB: 4.03, tcp4HostCpuSPerGB: 4.27,
};
const res: TwoNodeResults = {
  rounds: 3, seconds: 5, underlayMtu: 1500,
  setups: [
    { setup: 'vxlan', available: true, rounds: [], median: vxlan, daemonMem: [] },
    { setup: 'native', available: true, rounds: [], median: native, daemonMem: [{ rssMB: 66.7, hwmMB: 70 }] },
    { setup: 'js', available: false, reason: 'daemon rejects --engine js <here>', rounds: [], median: {}, daemonMem: [] },
  ],
};
const doc: BenchJson = {
  schema: 'overlayd-bench/1',
  meta: { date: '2026-11-29T18:13:34.452Z', host: 'vm', cpus: 2, cpuModel: 'Xeon', kernel: '6.18', node: 'v20', git: { commit: 'abc1234', uncommittedFiles: 0 }, loadavgStart: [0.76, 1.27] },
  micro: {
    js: [{ name: 'validateIpv4 1400 B', group: 'ipv4', opsPerSec: 12_345_678, nsPerOp: 81, rmePct: 1, samples: 50 }],
    routeC: [{ routes: 10000, pattern: 'LPM without cache', nsPerLookup: 42.5, via: 'addon.routeBench' }],
    ringC: [{ packetBytes: 64, packets: 1e6, batch: 64, seconds: 1, mpps: 31.25, gbytesPerSec: 2 }],
    tunRoundTrip: [],
    skipped: [{ name: 'tun round trip', group: 'ring', reason: 'needs root' }],
  },
  twoNode: { ...res, ratios: computeRatios(res), targets: checkTargets(res) },
};

t.test('the page is produced from a results object and carries every figure', async (t) => {
  const html = renderHtml(doc);
  t.match(html, /^<!DOCTYPE html>/);
  t.match(html, /<\/html>\n$/);
  // every two-node figure of every available tunnel, as the chart prints it
  let figures = 0;
  for (const m of TWO_NODE_METRICS) {
    for (const s of res.setups.filter((x) => x.available)) {
      if (m.daemonOnly && s.setup === 'vxlan') continue;
      const v = m.value(s.median);
      if (v === undefined) continue;
      t.ok(html.includes(`>${fmt(v, m.digits)} ${m.unit}<`), `${m.title}, ${s.setup}: ${fmt(v, m.digits)} ${m.unit}`);
      figures++;
    }
  }
  t.equal(figures, 19, '19 two-node figures checked (8 vxlan, 11 native)');
  // tunnels side by side: one chart per metric, one bar per tunnel
  const tcp1 = html.slice(html.indexOf('<figcaption>TCP 1 stream'), html.indexOf('</figure>', html.indexOf('<figcaption>TCP 1 stream')));
  t.match(tcp1, /<text[^>]*>vxlan<\/text>/);
  t.match(tcp1, /<text[^>]*>native<\/text>/);
  t.equal(tcp1.match(/<rect /g)?.length, 2, 'the TCP 1 stream chart has a bar per tunnel');
  // ratios and targets
  t.ok(html.includes(`<td>${fmt(native.tcp1Gbps! / vxlan.tcp1Gbps!, 3)}</td>`), 'the TCP 1 stream ratio');
  t.ok(html.includes(`<td>${fmt(native.tcp4Gbps! / vxlan.tcp4Gbps!, 3)}</td>`), 'the TCP 4 streams ratio');
  t.ok(html.includes('<td>93</td>'), 'the ping p50 difference');
  for (const c of doc.twoNode!.targets) t.ok(html.includes(escapeHtml(c.target)), `target: ${c.target}`);
  t.match(html, /<td>PASS<\/td>/);
  t.match(html, /<td>MISS<\/td>/);
  // micro-benchmarks
  t.ok(html.includes('>12.346 Mops/s<'), 'JS micro-benchmark');
  t.ok(html.includes('>42.5 ns/lookup<'), 'C route lookup');
  t.ok(html.includes('>31.25 Mpackets/s<'), 'C ring');
  t.ok(html.includes('not measured: tun round trip: needs root'), 'what was not measured, with the reason');
  // a tunnel that was not available is named with its reason, escaped
  t.ok(html.includes('js: not available: daemon rejects --engine js &lt;here&gt;'), 'unavailable setup, HTML-escaped');
  t.ok(html.includes('commit abc1234'), 'the commit measured');
});

t.test('self-contained: no script, no external asset or link', async (t) => {
  const html = renderHtml(doc);
  t.notMatch(html, /<script|<link|<img|<iframe|@import|url\(/i);
  t.notMatch(html, /(src|href)=/i);
  t.notMatch(html, /https?:\/\//i);
});

t.test('a missing figure is drawn as n/a, and a run without two-node results still renders', async (t) => {
  const partial: BenchJson = { schema: 'overlayd-bench/1', meta: {}, notRun: { 'two-node': 'needs root' } };
  const html = renderHtml(partial);
  t.match(html, /two-node: not run: needs root/);
  t.notMatch(html, /<svg/);
  const gap: TwoNodeResults = { ...res, setups: [{ setup: 'native', available: true, rounds: [], median: { tcp1Gbps: 1 }, daemonMem: [] }] };
  const html2 = renderHtml({ schema: 'overlayd-bench/1', meta: {}, twoNode: { ...gap, ratios: {}, targets: [] } });
  t.match(html2, />1\.000 Gbit\/s</);
  t.match(html2, />n\/a</, 'TCP 4 streams missing: n/a');
});
