import t from 'tap';
import { parseStaticCluster } from '../../src/control/static-source';
import { ConfigError } from '../../src/errors';
import { formatIp, formatPrefix } from '../../src/net/addr';

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
    [{ ...good, EnableIPv6: true }, 'unknown key "EnableIPv6" in /etc/x.json'],
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
