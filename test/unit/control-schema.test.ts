import t from 'tap';
import {
  DEFAULT_ETCD_PREFIX,
  configKey,
  formatLeaseValue,
  normalizePrefix,
  parseLeaseValue,
  parseSubnetKey,
  parseSubnetKeyName,
  subnetKey,
  subnetsPrefix,
} from '../../src/control/etcd-schema';
import { parseIp, parsePrefix, type Prefix } from '../../src/net/addr';

const P = (s: string): Prefix => {
  const p = parsePrefix(s);
  if (!p) throw new Error(s);
  return p;
};

t.test('keys are flannel\'s', async (t) => {
  t.equal(DEFAULT_ETCD_PREFIX, '/coreos.com/network');
  t.equal(configKey(DEFAULT_ETCD_PREFIX), '/coreos.com/network/config');
  t.equal(subnetsPrefix(DEFAULT_ETCD_PREFIX), '/coreos.com/network/subnets/');
  t.equal(subnetKey(DEFAULT_ETCD_PREFIX, P('10.244.3.0/24')), '/coreos.com/network/subnets/10.244.3.0-24');
  t.equal(subnetKey('/x/net/', P('10.0.0.0/30')), '/x/net/subnets/10.0.0.0-30', 'trailing slash dropped like path.Join');
  t.equal(normalizePrefix('x'), '/x');
  t.equal(normalizePrefix('/a//'), '/a');
});

t.test('subnet key <-> Prefix round trip', async (t) => {
  for (const s of ['10.244.3.0/24', '10.0.0.0/8', '192.168.255.252/30', '0.0.0.0/0', '1.2.3.4/32']) {
    const p = P(s);
    t.same(parseSubnetKey(DEFAULT_ETCD_PREFIX, subnetKey(DEFAULT_ETCD_PREFIX, p)), p, s);
  }
});

t.test('parseSubnetKey refuses what is not a lease key', async (t) => {
  const pre = '/coreos.com/network/subnets/';
  for (const k of [
    '/coreos.com/network/config',
    '/other/subnets/10.244.3.0-24',
    `${pre}10.244.3.1-24`, // host bits
    `${pre}10.244.3.0-33`,
    `${pre}10.244.3.0_24`,
    `${pre}10.244.3-24`,
    `${pre}256.1.1.0-24`,
    `${pre}10.244.3.0-24/x`,
    `${pre}fd00::-64`,
    `${pre}`,
  ]) {
    t.equal(parseSubnetKey(DEFAULT_ETCD_PREFIX, k), undefined, k);
  }
  t.same(parseSubnetKeyName('10.244.3.0-24&fd00:0:0:3::-64'), P('10.244.3.0/24'), 'dual-stack key: IPv4 part');
});

t.test('lease value is byte-for-byte flannel\'s', async (t) => {
  t.equal(formatLeaseValue(parseIp('192.0.2.7') ?? 0), '{"PublicIP":"192.0.2.7","PublicIPv6":null}');
});

t.test('lease values from any flannel backend parse; bad ones say why', async (t) => {
  t.same(parseLeaseValue('{"PublicIP":"192.0.2.7","PublicIPv6":null}'), { ok: true, value: { publicIp: parseIp('192.0.2.7') } });
  const vx = parseLeaseValue(
    '{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
  );
  t.same(vx, { ok: true, value: { publicIp: parseIp('10.0.0.2'), backendType: 'vxlan' } });
  for (const [v, why] of [
    ['', /invalid JSON/],
    ['{', /invalid JSON/],
    ['[]', /not a JSON object/],
    ['null', /not a JSON object/],
    ['{}', /PublicIP missing/],
    ['{"PublicIP":7}', /PublicIP missing or not a string/],
    ['{"PublicIP":"10.0.0.256"}', /not an IPv4 address/],
    ['{"PublicIP":"fd00::1"}', /not an IPv4 address/],
  ] as const) {
    const r = parseLeaseValue(v);
    t.equal(r.ok, false, v);
    if (!r.ok) t.match(r.reason, why, v);
  }
});

t.test('BackendData {"PartialChecksums":true}: written only when asked, read exactly', async (t) => {
  const ip = parseIp('192.0.2.7') ?? 0;
  t.equal(formatLeaseValue(ip, undefined, {}), '{"PublicIP":"192.0.2.7","PublicIPv6":null}', 'nothing asked: flannel\'s udp value');
  t.equal(formatLeaseValue(ip, undefined, { partialChecksums: false }), '{"PublicIP":"192.0.2.7","PublicIPv6":null}', 'false: no BackendData');
  const v = formatLeaseValue(ip, undefined, { partialChecksums: true });
  t.equal(v, '{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendData":{"PartialChecksums":true}}', 'after PublicIPv6, in flannel\'s LeaseAttrs field order');
  t.same(parseLeaseValue(v), { ok: true, value: { publicIp: ip, partialChecksums: true } }, 'read back');
  const v6 = formatLeaseValue(ip, 0xfd00n << 112n, { partialChecksums: true });
  t.equal(v6, '{"PublicIP":"192.0.2.7","PublicIPv6":"fd00::","BackendData":{"PartialChecksums":true}}');
  for (const other of [
    '{"PublicIP":"192.0.2.7","BackendData":{"PartialChecksums":"true"}}',
    '{"PublicIP":"192.0.2.7","BackendData":{"PartialChecksums":1}}',
    '{"PublicIP":"192.0.2.7","BackendData":{"partialChecksums":true}}',
    '{"PublicIP":"192.0.2.7","BackendData":[true]}',
    '{"PublicIP":"192.0.2.7","BackendData":null}',
    '{"PublicIP":"192.0.2.7","PartialChecksums":true}',
  ]) {
    t.same(parseLeaseValue(other), { ok: true, value: { publicIp: ip } }, `not advertised: ${other}`);
  }
});
