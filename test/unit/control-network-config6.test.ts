/** Dual-stack network config (EnableIPv6, IPv6Network, IPv6SubnetLen/Min/Max): flannel's CheckNetworkConfig rules. */
import t from 'tap';
import { describeNetworkConfig, NetworkConfigError, networkConfigWarnings, parseNetworkConfig } from '../../src/control/network-config';
import { formatIp6, formatPrefix6, parseIp6 } from '../../src/net/addr6';

const KEY = '/coreos.com/network/config';
const V4 = '"Network":"10.244.0.0/16"';
const v6 = (fields: string) => parseNetworkConfig(`{${V4},"EnableIPv6":true,${fields}}`, KEY).ipv6;
const ip6 = (s: string): bigint => {
  const a = parseIp6(s);
  if (a === undefined) throw new Error(s);
  return a;
};

t.test('EnableIPv6 false or absent: no IPv6 part, the IPv6 fields are not read (as before dual-stack)', async (t) => {
  const plain = parseNetworkConfig(`{${V4}}`, KEY);
  t.equal(plain.ipv6, undefined);
  t.notOk('ipv6' in plain, 'the result has exactly the fields it had before');
  for (const extra of ['"EnableIPv6":false', '"EnableIPv6":false,"IPv6Network":"garbage","IPv6SubnetLen":999', '"IPv6Network":"fd00::/56"', '"EnableIPv6":null', '"EnableIPv4":true']) {
    const c = parseNetworkConfig(`{${V4},${extra}}`, KEY);
    t.same(c, plain, extra);
    t.equal(describeNetworkConfig(c), describeNetworkConfig(plain));
  }
});

t.test('defaults as flannel: IPv6SubnetLen 64 up to /62, else Network+2; SubnetMin/Max the second and the last subnet', async (t) => {
  const a = v6('"IPv6Network":"fd00:10:244::/56"');
  t.ok(a);
  t.equal(a && formatPrefix6(a.network), 'fd00:10:244::/56');
  t.equal(a?.subnetLen, 64);
  t.equal(a && formatIp6(a.subnetMin), 'fd00:10:244:1::');
  t.equal(a && formatIp6(a.subnetMax), 'fd00:10:244:ff::');
  t.equal(v6('"IPv6Network":"fd00::/62"')?.subnetLen, 64, '/62 -> /64');
  const b = v6('"IPv6Network":"fd00::/63"');
  t.equal(b?.subnetLen, 65, '/63 -> /65 (Network + 2)');
  t.equal(b && formatIp6(b.subnetMin), 'fd00::8000:0:0:0');
  t.equal(b && formatIp6(b.subnetMax), 'fd00:0:0:1:8000::');
  const c = v6('"IPv6Network":"fd00::/124"');
  t.equal(c?.subnetLen, 126, '/124 -> /126: the smallest network flannel accepts');
  t.equal(c && formatIp6(c.subnetMin), 'fd00::4');
  t.equal(c && formatIp6(c.subnetMax), 'fd00::c');
  const d = v6('"IPv6Network":"fd00::/8"');
  t.equal(d?.subnetLen, 64);
  t.equal(d && formatIp6(d.subnetMax), 'fdff:ffff:ffff:ffff::', 'a huge range is fine (bigint)');
  const z = v6('"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":0,"IPv6SubnetMin":"::","IPv6SubnetMax":null');
  t.equal(z?.subnetLen, 64, 'IPv6SubnetLen 0 means the default (Go zero value)');
  t.equal(z && formatIp6(z.subnetMin), 'fd00:10:244:1::', 'IPv6SubnetMin "::" means the default (flannel ip.IsEmpty)');
  t.equal(z && formatIp6(z.subnetMax), 'fd00:10:244:ff::');
});

t.test('explicit values, flannel\'s own test config', async (t) => {
  // flannel pkg/subnet/config_test.go TestIPv6ConfigOverrides-like values
  const a = v6('"IPv6Network":"fc00::/48","IPv6SubnetLen":64,"IPv6SubnetMin":"fc00:0:0:1::","IPv6SubnetMax":"fc00:0:0:ffff::"');
  t.equal(a?.subnetLen, 64);
  t.equal(a?.subnetMin, ip6('fc00:0:0:1::'));
  t.equal(a?.subnetMax, ip6('fc00:0:0:ffff::'));
  const b = v6('"IPv6Network":"fd00::/56","IPv6SubnetLen":58');
  t.equal(b?.subnetLen, 58, 'the shortest allowed: Network + 2');
  t.equal(b && formatIp6(b.subnetMin), 'fd00:0:0:40::');
  t.equal(b && formatIp6(b.subnetMax), 'fd00:0:0:c0::');
  t.equal(v6('"IPv6Network":"fd00::/56","IPv6SubnetLen":126')?.subnetLen, 126, 'the longest allowed');
  t.equal(v6('"IPv6Network":"fd00:0:0:0::/56"') && formatPrefix6(v6('"IPv6Network":"FD00:0:0:0::/56"')?.network ?? { addr: 0n, len: 0 }), 'fd00::/56', 'any text form, canonical inside');
  const desc = describeNetworkConfig(parseNetworkConfig(`{${V4},"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`, KEY));
  t.equal(desc, '10.244.0.0/16 /24 [10.244.1.0..10.244.255.0] + fd00:10:244::/56 /64 [fd00:10:244:1::..fd00:10:244:ff::] udp:8285');
});

t.test('flannel\'s own test configs (config_test.go), field names in any case as Go\'s encoding/json reads them', async (t) => {
  // TestIPv6ConfigDefaults (with enableIPv4 true: overlayd refuses IPv6-only)
  const d = parseNetworkConfig('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": true, "Network": "10.3.0.0/16" }', KEY).ipv6;
  t.equal(d && formatPrefix6(d.network), 'fc00::/48');
  t.equal(d && formatIp6(d.subnetMin), 'fc00:0:0:1::');
  t.equal(d && formatIp6(d.subnetMax), 'fc00:0:0:ffff::');
  t.equal(d?.subnetLen, 64);
  // TestIPv6ConfigOverrides
  const o = parseNetworkConfig('{ "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": true, "Network": "10.3.0.0/16" }', KEY).ipv6;
  t.equal(o && formatIp6(o.subnetMin), 'fc00:0:0:1::');
  t.equal(o && formatIp6(o.subnetMax), 'fc00:0:0:f::');
  t.equal(o?.subnetLen, 124);
  t.throws(() => parseNetworkConfig('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false, "Network": "10.3.0.0/16" }', KEY), { message: /: EnableIPv4: false \(an IPv6-only network\) is not supported/ });
  t.equal(v6('"ipv6network":"fd00::/56","IPv6Network":"fd01::/56"') && formatPrefix6(v6('"ipv6network":"fd00::/56","IPv6Network":"fd01::/56"')?.network ?? { addr: 0n, len: 0 }), 'fd01::/56', 'the last matching key wins, as in Go');
  t.same(networkConfigWarnings('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "Network": "10.3.0.0/16", "ipv6subnetlen": 64 }', KEY), [], 'no "unknown key" warning for them');
});

t.test('each bad value names the key and the field', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56"', 'EnableIPv4', /IPv6-only network\) is not supported.*IPv4/],
    ['"EnableIPv4":"yes"', 'EnableIPv4', /must be true or false, got "yes"/],
    ['"EnableIPv6":1', 'EnableIPv6', /must be true or false, got 1/],
    ['"EnableIPv6":true', 'IPv6Network', /missing: EnableIPv6 is true/],
    ['"EnableIPv6":true,"IPv6Network":""', 'IPv6Network', /missing/],
    ['"EnableIPv6":true,"IPv6Network":56', 'IPv6Network', /IPv6 CIDR string, got 56/],
    ['"EnableIPv6":true,"IPv6Network":"10.0.0.0/8"', 'IPv6Network', /not a valid IPv6 CIDR/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::"', 'IPv6Network', /not a valid IPv6 CIDR/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/129"', 'IPv6Network', /not a valid IPv6 CIDR/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::1/56"', 'IPv6Network', /host bits set \(did you mean fd00::\/56\?\)/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/125"', 'IPv6Network', /too small.*\/124/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/128"', 'IPv6Network', /too small/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":127', 'IPv6SubnetLen', /127 is longer than 126/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":57', 'IPv6SubnetLen', /fewer than four subnets .*\(at least \/58\)/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":48', 'IPv6SubnetLen', /fewer than four subnets/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":"64"', 'IPv6SubnetLen', /integer, got "64"/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":64.5', 'IPv6SubnetLen', /integer/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd01::"', 'IPv6SubnetMin', /fd01:: is not inside the IPv6Network fd00::\/56/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:1::1"', 'IPv6SubnetMin', /not aligned to IPv6SubnetLen 64 \(nearest: fd00:0:0:1::\)/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"x"', 'IPv6SubnetMin', /"x" is not an IPv6 address/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":5', 'IPv6SubnetMin', /IPv6 address string/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMax":"fd00:0:1::"', 'IPv6SubnetMax', /not inside the IPv6Network/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMax":"fd00:0:0:9:8000::"', 'IPv6SubnetMax', /not aligned/],
    ['"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:8::"', 'IPv6SubnetMin', /above IPv6SubnetMax fd00:0:0:8::/],
  ];
  for (const [fields, field, re] of cases) {
    const text = `{${V4},${fields}}`;
    t.throws(() => parseNetworkConfig(text, KEY), NetworkConfigError, text);
    try {
      parseNetworkConfig(text, KEY);
    } catch (err) {
      t.ok(err instanceof NetworkConfigError && err.field === field && err.key === KEY, `${text}: field ${field}`);
      t.match((err as Error).message, re, text);
      t.match((err as Error).message, new RegExp(`^invalid network config in etcd key ${KEY}: ${field}: `), text);
    }
  }
});
