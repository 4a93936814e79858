import { promises as fs, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { formatSubnetFile, parseSubnetFile, readSubnetFile, writeSubnetFile, type SubnetFileContents } from '../../src/control/subnet-file';
import { ConfigError } from '../../src/errors';
import { parsePrefix, type Prefix } from '../../src/net/addr';
import { parsePrefix6 } from '../../src/net/addr6';

const P = (s: string): Prefix => {
  const p = parsePrefix(s);
  if (!p) throw new Error(s);
  return p;
};

const sample: SubnetFileContents = { network: P('10.244.0.0/16'), subnet: P('10.244.3.0/24'), mtu: 1472, ipMasq: false };
const FLANNEL_TEXT = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n';

t.test('format is flannel\'s, byte for byte', async (t) => {
  t.equal(formatSubnetFile(sample), FLANNEL_TEXT);
  t.equal(formatSubnetFile({ ...sample, ipMasq: true }), FLANNEL_TEXT.replace('IPMASQ=false', 'IPMASQ=true'));
});

t.test('parse round trip and flannel\'s own files with extra lines', async (t) => {
  t.same(parseSubnetFile(FLANNEL_TEXT), sample);
  const dual =
    'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
  t.same(parseSubnetFile(dual), {
    ...sample, mtu: 1450, ipMasq: true,
    ipv6: { network: { addr: 0xfd00n << 112n, len: 56 }, subnet: { addr: (0xfd00n << 112n) | (3n << 64n), len: 64 } },
  }, 'dual-stack: FLANNEL_IPV6_* read back, host bits masked');
  t.same(parseSubnetFile(`# comment\n\n${FLANNEL_TEXT.replace(/\n/g, '\r\n')}`), sample, 'CRLF and comments tolerated');
});

t.test('dual-stack: flannel\'s WriteSubnetFile order and formats, and read back', async (t) => {
  const P6 = (s: string) => {
    const p = parsePrefix6(s);
    if (!p) throw new Error(s);
    return p;
  };
  const dual: SubnetFileContents = { ...sample, ipv6: { network: P6('fd00:10:244::/56'), subnet: P6('fd00:10:244:3::/64') } };
  // what flanneld writes for this lease (subnet.go WriteSubnetFile: v4 pair, v6 pair, MTU, IPMASQ)
  const text = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\n' +
    'FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n';
  t.equal(formatSubnetFile(dual), text);
  t.same(parseSubnetFile(text), dual);
  const zeroGroups = { ...sample, ipv6: { network: P6('fd00::/48'), subnet: P6('fd00:0:0:1::/64') } };
  t.match(formatSubnetFile(zeroGroups), /FLANNEL_IPV6_NETWORK=fd00::\/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1\/64\n/, 'RFC 5952 like Go: fd00:0:0:1::1');
  t.equal(parseSubnetFile(text.replace(/FLANNEL_IPV6_NETWORK=.*\n/, '')).ipv6, undefined, 'one of the pair alone: no IPv6 part');
  t.throws(() => parseSubnetFile(text.replace('fd00:10:244:3::1/64', 'fd00::g/64'), '/run/x.env'), { message: /\/run\/x\.env: FLANNEL_IPV6_SUBNET=fd00::g\/64 is not/ });
  t.throws(() => parseSubnetFile(text.replace('fd00:10:244::/56', '10.0.0.0/8'), '/run/x.env'), { message: /FLANNEL_IPV6_NETWORK=10\.0\.0\.0\/8 is not an IPv6 CIDR/ });
});

t.test('malformed files: ConfigError naming file and variable', async (t) => {
  for (const [text, re] of [
    ['', /FLANNEL_NETWORK is missing/],
    ['FLANNEL_NETWORK=10.244.0.0/16\n', /FLANNEL_SUBNET is missing/],
    [FLANNEL_TEXT.replace('10.244.3.1/24', '10.244.3.1'), /FLANNEL_SUBNET=10\.244\.3\.1 is not/],
    [FLANNEL_TEXT.replace('1472', 'big'), /FLANNEL_MTU=big/],
    [FLANNEL_TEXT.replace('=false', '=no'), /FLANNEL_IPMASQ=no/],
  ] as const) {
    t.throws(() => parseSubnetFile(text, '/run/x.env'), ConfigError);
    t.throws(() => parseSubnetFile(text, '/run/x.env'), { message: re });
    t.throws(() => parseSubnetFile(text, '/run/x.env'), { message: /\/run\/x\.env/ });
  }
});

t.test('write: atomic, creates the directory, mode 0644; read back; absent -> undefined', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'overlayd-sf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'run', 'flannel', 'subnet.env');
  t.equal(await readSubnetFile(file), undefined);
  const oldMask = process.umask(0o077);
  try {
    await writeSubnetFile(file, sample);
  } finally {
    process.umask(oldMask);
  }
  t.equal(await fs.readFile(file, 'utf8'), FLANNEL_TEXT);
  t.equal((await fs.stat(file)).mode & 0o777, 0o644);
  t.same(await readSubnetFile(file), sample);
  await writeSubnetFile(file, { ...sample, subnet: P('10.244.9.0/24') });
  t.same((await readSubnetFile(file))?.subnet, P('10.244.9.0/24'), 'overwritten');
  t.same(await fs.readdir(path.dirname(file)), ['subnet.env'], 'no temp file left behind');
});
