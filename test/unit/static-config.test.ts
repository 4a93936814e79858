import t from 'tap';
import { parseStaticCluster, StaticRouteSource } from '../../src/control/static-source';
import { ConfigError } from '../../src/errors';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Route6 } from '../../src/dataplane/types';
import { formatIp, formatPrefix } from '../../src/net/addr';
import { formatIp6, formatPrefix6 } from '../../src/net/addr6';

const good = {
  Network: '10.244.0.0/16',
  Backend: { Type: 'udp', Port: 8285 },
  Subnet: '10.244.1.0/24',
  PublicIP: '10.99.0.1',
  Peers: [{ Subnet: '10.244.2.0/24', PublicIP: '10.99.0.2' }],
};

t.test('a good file', async (t) => {
  const c = parseStaticCluster(JSON.stringify(good), '/etc/x.json');
  t.equal(formatPrefix(c.config.network), '10.244.0.0/16');
  t.equal(c.config.port, 8285);
  t.equal(formatPrefix(c.lease.subnet), '10.244.1.0/24');
  t.equal(formatIp(c.lease.publicIp), '10.99.0.1');
  t.same(c.peers.map((p) => [formatPrefix(p.subnet), formatIp(p.publicIp)]), [['10.244.2.0/24', '10.99.0.2']]);
});

t.test('errors name the file and the field', async (t) => {
  const bad: [unknown, RegExp][] = [
    ['{not json', /x\.json: invalid JSON/],
    [[1, 2], /must be a JSON object/],
    [{ ...good, Network: '10.244.0.0/33' }, /Network/],
    [{ ...good, Subnet: '10.245.1.0/24' }, /Subnet: 10\.245\.1\.0\/24 is not a \/24 inside Network/],
    [{ ...good, Subnet: '10.244.1.0/25' }, /Subnet/],
    [{ ...good, Subnet: 'x' }, /Subnet: "x" is not an IPv4 subnet/],
    [{ ...good, PublicIP: '1.2.3' }, /PublicIP: "1\.2\.3" is not an IPv4 address/],
    [{ ...good, Peers: {} }, /Peers: must be an array/],
    [{ ...good, Peers: ['x'] }, /Peers\[0\]: must be an object/],
    [{ ...good, Peers: [{ Subnet: '10.244.1.0/24', PublicIP: '10.99.0.3' }] }, /Peers\[0\]\.Subnet: 10\.244\.1\.0\/24 is already used by Subnet/],
    [{ ...good, Peers: [good.Peers[0], { Subnet: '10.244.2.0/24', PublicIP: '10.99.0.3' }] }, /Peers\[1\]\.Subnet: .* already used by Peers\[0\]/],
    [{ ...good, Peers: [{ Subnet: '10.244.3.0/24', PublicIP: 'nope' }] }, /Peers\[0\]\.PublicIP/],
    [{ ...good, Peers: [{ Subnet: '10.244.3.0/24', PublicIP: '10.99.0.1' }] }, /Peers\[0\]\.PublicIP: equals this node's PublicIP/],
  ];
  for (const [doc, re] of bad) {
    const text = typeof doc === 'string' ? doc : JSON.stringify(doc);
    t.throws(() => parseStaticCluster(text, '/etc/x.json'), ConfigError, text);
    t.throws(() => parseStaticCluster(text, '/etc/x.json'), re, text);
    t.throws(() => parseStaticCluster(text, '/etc/x.json'), /\/etc\/x\.json/, 'names the file');
  }
});

t.test('Backend.DirectRouting in the static file: off by default, read when given, a non-boolean names file and field', async (t) => {
  t.equal(parseStaticCluster(JSON.stringify(good), '/etc/x.json').config.directRouting, false);
  const on = { ...good, Backend: { Type: 'udp', Port: 8285, DirectRouting: true } };
  t.equal(parseStaticCluster(JSON.stringify(on), '/etc/x.json').config.directRouting, true);
  const bad = { ...good, Backend: { Type: 'udp', DirectRouting: 'yes' } };
  t.throws(() => parseStaticCluster(JSON.stringify(bad), '/etc/x.json'), /\/etc\/x\.json: Backend\.DirectRouting: must be true or false, got "yes"/);
});

t.test('unknown keys are refused, naming the nearest known one; missing fields say "missing"', async (t) => {
  const { Peers, PublicIP, ...noPeers } = good;
  const cases: [unknown, string][] = [
    // the report: "Peer" for "Peers" started with zero routes
    [{ ...noPeers, PublicIP, Peer: Peers }, 'unknown key "Peer" in /etc/x.json: did you mean "Peers"?'],
    // the report: "PublicIp" said "undefined is not an IPv4 address"
    [{ ...noPeers, Peers, PublicIp: PublicIP }, 'unknown key "PublicIp" in /etc/x.json: did you mean "PublicIP"?'],
    [{ ...good, Peers: [{ Subnet: '10.244.2.0/24', PublicIp: '10.99.0.2' }] }, 'unknown key "Peers[0].PublicIp" in /etc/x.json: did you mean "Peers[0].PublicIP"?'],
    [{ ...good, Backend: { Type: 'udp', port: 8285 } }, 'unknown key "Backend.port" in /etc/x.json: did you mean "Backend.Port"?'],
    [{ ...good, Colour: 'blue' }, 'unknown key "Colour" in /etc/x.json'],
    [{ ...good, EnableIPv6: true }, '/etc/x.json: IPv6Network: missing: EnableIPv6 is true (e.g. "IPv6Network":"fd00:10:244::/56")'],
    [{ ...good, Peers: [{ ...Peers[0], IPv6subnet: 'fd00::/64' }] }, 'unknown key "Peers[0].IPv6subnet" in /etc/x.json: did you mean "Peers[0].IPv6Subnet"?'],
    [{ ...noPeers, Peers }, '/etc/x.json: PublicIP is missing (e.g. "PublicIP": "192.0.2.7")'],
    [{ ...good, Subnet: undefined }, '/etc/x.json: Subnet is missing (e.g. "Subnet": "10.244.1.0/24")'],
    [{ ...good, Network: undefined }, '/etc/x.json: Network is missing (e.g. "Network": "10.244.0.0/16")'],
    [{ ...good, Peers: [Peers[0], { Subnet: '10.244.3.0/24', PublicIP: '10.99.0.3' }, { Subnet: '10.244.4.0/24' }] }, '/etc/x.json: Peers[2].PublicIP is missing (e.g. "PublicIP": "192.0.2.7")'],
    [{ ...good, Peers: [{ PublicIP: '10.99.0.3' }] }, '/etc/x.json: Peers[0].Subnet is missing (e.g. "Subnet": "10.244.1.0/24")'],
    [{ ...good, SubnetLen: 40 }, '/etc/x.json: SubnetLen: 40 is longer than 30'],
  ];
  for (const [doc, message] of cases) {
    const text = JSON.stringify(doc);
    let err: unknown;
    try {
      parseStaticCluster(text, '/etc/x.json');
    } catch (e) {
      err = e;
    }
    t.type(err, ConfigError, message);
    t.equal((err as Error | undefined)?.message, message);
  }
});

t.test('dual-stack: IPv6Subnet/PublicIPv6 of the node and its peers; an IPv4-only peer', async (t) => {
  const dual = {
    ...good, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', IPv6Subnet: 'fd00:10:244:1::/64', PublicIPv6: '2001:db8::1',
    Peers: [
      { Subnet: '10.244.2.0/24', PublicIP: '10.99.0.2', IPv6Subnet: 'fd00:10:244:2::/64', PublicIPv6: '2001:db8::2' },
      { Subnet: '10.244.3.0/24', PublicIP: '10.99.0.3', IPv6Subnet: 'fd00:10:244:3::/64' },
      { Subnet: '10.244.4.0/24', PublicIP: '10.99.0.4' },
    ],
  };
  const c = parseStaticCluster(JSON.stringify(dual), '/etc/x.json');
  t.equal(c.config.ipv6?.subnetLen, 64);
  t.equal(c.lease.subnet6 && formatPrefix6(c.lease.subnet6), 'fd00:10:244:1::/64');
  t.equal(c.lease.publicIpv6 !== undefined ? formatIp6(c.lease.publicIpv6) : '', '2001:db8::1');
  t.equal(c.peers.length, 3, 'every peer has its IPv4 route');
  t.same(c.peers6.map((r) => [formatPrefix6(r.subnet), formatIp(r.publicIp), r.publicIpv6 === undefined ? null : formatIp6(r.publicIpv6)]), [
    ['fd00:10:244:2::/64', '10.99.0.2', '2001:db8::2'],
    ['fd00:10:244:3::/64', '10.99.0.3', null],
  ]);
  t.same(parseStaticCluster(JSON.stringify(good), '/etc/x.json').peers6, [], 'IPv4-only file: no IPv6 routes');

  const errs: [unknown, string][] = [
    [{ ...dual, IPv6Subnet: undefined }, '/etc/x.json: IPv6Subnet is missing: EnableIPv6 is true (e.g. "IPv6Subnet": "fd00:10:244:1::/64")'],
    [{ ...dual, IPv6Subnet: 'fd00:10:245:1::/64' }, '/etc/x.json: IPv6Subnet: fd00:10:245:1::/64 is not a /64 inside IPv6Network fd00:10:244::/56'],
    [{ ...dual, IPv6Subnet: 'fd00:10:244:1::/72' }, '/etc/x.json: IPv6Subnet: fd00:10:244:1::/72 is not a /64 inside IPv6Network fd00:10:244::/56'],
    [{ ...dual, PublicIPv6: '10.0.0.1' }, '/etc/x.json: PublicIPv6: "10.0.0.1" is not an IPv6 address'],
    [{ ...good, IPv6Subnet: 'fd00::/64' }, '/etc/x.json: IPv6Subnet: needs "EnableIPv6": true (and IPv6Network)'],
    [{ ...dual, Peers: [{ ...dual.Peers[0], IPv6Subnet: 'fd00:10:244:1::/64' }] }, '/etc/x.json: Peers[0].IPv6Subnet: fd00:10:244:1::/64 is already used by IPv6Subnet'],
    [{ ...dual, Peers: [{ Subnet: '10.244.2.0/24', PublicIP: '10.99.0.2', PublicIPv6: '2001:db8::2' }] }, '/etc/x.json: Peers[0].PublicIPv6: given without Peers[0].IPv6Subnet'],
    [{ ...dual, EnableIPv4: false }, '/etc/x.json: EnableIPv4: false (an IPv6-only network) is not supported: overlayd identifies nodes by their IPv4 PublicIP and carries flannel\'s udp wire over IPv4; use EnableIPv4 true with EnableIPv6 true for dual-stack'],
  ];
  for (const [doc, message] of errs) {
    t.throws(() => parseStaticCluster(JSON.stringify(doc), '/etc/x.json'), { message }, message);
  }
});

t.test('dual-stack static source: the underlay rule (--ipv6-underlay, both ends with a PublicIPv6)', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'overlayd-static6-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const base = {
    ...good, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', IPv6Subnet: 'fd00:10:244:1::/64',
    Peers: [{ Subnet: '10.244.2.0/24', PublicIP: '10.99.0.2', IPv6Subnet: 'fd00:10:244:2::/64', PublicIPv6: '2001:db8::2' }],
  };
  const run = async (doc: unknown, mode: 'auto' | 'ipv4'): Promise<string[]> => {
    const file = path.join(dir, `c-${mode}-${Math.random().toString(16).slice(2)}.json`);
    writeFileSync(file, JSON.stringify(doc));
    const src = new StaticRouteSource(file, mode);
    await src.start();
    const got: string[] = [];
    await src.sync({
      upsert: (r) => got.push(`4 ${formatPrefix(r.subnet)} ${formatIp(r.publicIp)}`),
      remove: () => undefined,
      upsert6: (r: Route6) => got.push(`6 ${formatPrefix6(r.subnet)} ${formatIp(r.publicIp)} ${r.publicIpv6 === undefined ? 'via-ipv4' : formatIp6(r.publicIpv6)}`),
    });
    await src.close();
    return got;
  };
  t.same(await run({ ...base, PublicIPv6: '2001:db8::1' }, 'auto'), ['4 10.244.2.0/24 10.99.0.2', '6 fd00:10:244:2::/64 10.99.0.2 2001:db8::2']);
  t.same(await run({ ...base, PublicIPv6: '2001:db8::1' }, 'ipv4'), ['4 10.244.2.0/24 10.99.0.2', '6 fd00:10:244:2::/64 10.99.0.2 via-ipv4']);
  t.same(await run(base, 'auto'), ['4 10.244.2.0/24 10.99.0.2', '6 fd00:10:244:2::/64 10.99.0.2 via-ipv4'], 'this node has no PublicIPv6');
});

t.test('a peer\'s BackendData: {"PartialChecksums": true} marks its route; anything else is refused naming the field', async (t) => {
  const doc = (bd: unknown) => JSON.stringify({ ...good, Peers: [{ Subnet: '10.244.2.0/24', PublicIP: '10.99.0.2', BackendData: bd }, { Subnet: '10.244.3.0/24', PublicIP: '10.99.0.3' }] });
  const c = parseStaticCluster(doc({ PartialChecksums: true }), '/etc/x.json');
  t.same(c.peers.map((p) => [formatPrefix(p.subnet), p.partialChecksums]), [['10.244.2.0/24', true], ['10.244.3.0/24', undefined]]);
  t.same(parseStaticCluster(doc({ PartialChecksums: false }), '/etc/x.json').peers.map((p) => p.partialChecksums), [undefined, undefined], 'false: not advertised');
  t.same(parseStaticCluster(doc({}), '/etc/x.json').peers.map((p) => p.partialChecksums), [undefined, undefined], 'empty: not advertised');
  t.throws(() => parseStaticCluster(doc({ PartialChecksums: 'yes' }), '/etc/x.json'), /x\.json: Peers\[0\]\.BackendData\.PartialChecksums: "yes" is not true or false/);
  t.throws(() => parseStaticCluster(doc({ PartialChecksum: true }), '/etc/x.json'), /unknown key "Peers\[0\]\.BackendData\.PartialChecksum".*did you mean "Peers\[0\]\.BackendData\.PartialChecksums"/);
  t.throws(() => parseStaticCluster(doc(true), '/etc/x.json'), /Peers\[0\]\.BackendData: must be an object/);
});
