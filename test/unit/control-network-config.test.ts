import t from 'tap';
import { NetworkConfigError, parseNetworkConfig } from '../../src/control/network-config';
import { ConfigError } from '../../src/errors';
import { parseIp, parsePrefix } from '../../src/net/addr';

const KEY = '/coreos.com/network/config';
const ip = (s: string): number => parseIp(s) ?? -1;

t.test('defaults: SubnetLen 24, second..last subnet, udp 8285', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.244.0.0/16"}', KEY);
  t.same(c.network, parsePrefix('10.244.0.0/16'));
  t.equal(c.subnetLen, 24);
  t.equal(c.subnetMin, ip('10.244.1.0'));
  t.equal(c.subnetMax, ip('10.244.255.0'));
  t.equal(c.port, 8285);
  t.equal(c.backendType, 'udp');
});

t.test('explicit values', async (t) => {
  const c = parseNetworkConfig(
    '{"Network":"10.244.0.0/18","SubnetLen":26,"SubnetMin":"10.244.0.64","SubnetMax":"10.244.63.192","Backend":{"Type":"udp","Port":9000},"EnableIPv6":false}',
    KEY,
  );
  t.equal(c.subnetLen, 26);
  t.equal(c.subnetMin, ip('10.244.0.64'));
  t.equal(c.subnetMax, ip('10.244.63.192'));
  t.equal(c.port, 9000);
  const d = parseNetworkConfig('{"Network":"10.244.0.0/18","SubnetLen":24}', KEY);
  t.equal(d.subnetMin, ip('10.244.1.0'), '/18 with /24: SubnetMin is the second subnet');
  t.equal(d.subnetMax, ip('10.244.63.0'));
  t.equal(parseNetworkConfig('{"Network":"10.0.0.0/8","Backend":{"Type":"UDP"}}', KEY).backendType, 'udp', 'type is case-insensitive like flannel');
  t.equal(parseNetworkConfig('{"Network":"10.0.0.0/8","Backend":{}}', KEY).port, 8285);
});

t.test('each bad value names the key and the field', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['{"Network":', '', /invalid JSON/],
    ['"10.244.0.0/16"', '', /must be a JSON object/],
    ['{}', 'Network', /missing/],
    ['{"Network":16}', 'Network', /IPv4 CIDR string/],
    ['{"Network":"10.244.0.0"}', 'Network', /not a valid IPv4 CIDR/],
    ['{"Network":"10.244.0.0/33"}', 'Network', /not a valid IPv4 CIDR/],
    ['{"Network":"10.244.300.0/16"}', 'Network', /not a valid IPv4 CIDR/],
    ['{"Network":"10.244.1.0/16"}', 'Network', /host bits set .*10\.244\.0\.0\/16/],
    ['{"Network":"10.244.0.0/16","SubnetLen":31}', 'SubnetLen', /longer than 30/],
    ['{"Network":"10.244.0.0/16","SubnetLen":16}', 'SubnetLen', /must be longer than the Network's prefix length 16/],
    ['{"Network":"10.244.0.0/16","SubnetLen":8}', 'SubnetLen', /must be longer/],
    ['{"Network":"10.244.0.0/16","SubnetLen":"24"}', 'SubnetLen', /integer/],
    ['{"Network":"10.244.0.0/16","SubnetLen":24.5}', 'SubnetLen', /integer/],
    ['{"Network":"10.244.0.0/24"}', 'SubnetLen', /24 \(the default\) must be longer/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.245.1.0"}', 'SubnetMin', /not inside the Network 10\.244\.0\.0\/16/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.1"}', 'SubnetMin', /not aligned to SubnetLen 24/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"x"}', 'SubnetMin', /not an IPv4 address/],
    ['{"Network":"10.244.0.0/16","SubnetMin":5}', 'SubnetMin', /IPv4 address string/],
    ['{"Network":"10.244.0.0/16","SubnetMax":"10.243.255.0"}', 'SubnetMax', /not inside the Network/],
    ['{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.128"}', 'SubnetMax', /not aligned/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.8.0"}', 'SubnetMin', /above SubnetMax/],
    ['{"Network":"10.244.0.0/16","Backend":"udp"}', 'Backend', /JSON object/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', 'Backend.Type', /"vxlan" is not supported/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":3}}', 'Backend.Type', /not supported/],
    ['{"Network":"10.244.0.0/16","Backend":{"Port":0}}', 'Backend.Port', /1-65535/],
    ['{"Network":"10.244.0.0/16","Backend":{"Port":65536}}', 'Backend.Port', /1-65535/],
    ['{"Network":"10.244.0.0/16","Backend":{"Port":"8285"}}', 'Backend.Port', /1-65535/],
    ['{"Network":"10.244.0.0/16","Backend":{"Port":80.5}}', 'Backend.Port', /1-65535/],
  ];
  for (const [text, field, re] of cases) {
    try {
      parseNetworkConfig(text, KEY);
      t.fail(`accepted ${text}`);
    } catch (err) {
      t.ok(err instanceof ConfigError, `${text}: a ConfigError`);
      t.ok(err instanceof NetworkConfigError);
      if (!(err instanceof NetworkConfigError)) continue;
      t.equal(err.field, field, `${text}: field`);
      t.equal(err.key, KEY);
      t.match(err.message, KEY, `${text}: message names the key`);
      if (field) t.match(err.message, `${field}: `, `${text}: message names the field`);
      t.match(err.message, re, text);
      t.equal(err.code, 'ERR_CONFIG');
    }
  }
});

t.test('smallest valid networks', async (t) => {
  const c = parseNetworkConfig('{"Network":"10.0.0.0/29","SubnetLen":30}', KEY);
  t.equal(c.subnetMin, ip('10.0.0.4'));
  t.equal(c.subnetMax, ip('10.0.0.4'));
  const d = parseNetworkConfig('{"Network":"10.244.0.0/23"}', KEY);
  t.equal(d.subnetMin, d.subnetMax, '/23 with /24: one allocatable subnet');
});

t.test('Backend.DirectRouting: false by default, true/false as given, anything else names the field', async (t) => {
  t.equal(parseNetworkConfig('{"Network":"10.244.0.0/16"}', KEY).directRouting, false, 'no Backend: off');
  t.equal(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}', KEY).directRouting, false, 'not given: off');
  t.equal(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","DirectRouting":true}}', KEY).directRouting, true);
  t.equal(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","DirectRouting":false}}', KEY).directRouting, false);
  t.equal(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","directRouting":true}}', KEY).directRouting, true, 'flannel\'s JSON tag spelling (Go matches names case-insensitively)');
  for (const bad of ['"true"', '1', 'null', '{}']) {
    const err = t.throws(() => parseNetworkConfig(`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","DirectRouting":${bad}}}`, KEY)) as unknown;
    t.ok(err instanceof NetworkConfigError, `${bad}: NetworkConfigError`);
    if (err instanceof NetworkConfigError) {
      t.equal(err.field, 'Backend.DirectRouting');
      t.match(err.message, new RegExp(`${KEY}: Backend\\.DirectRouting: must be true or false, got ${bad.replace(/[{}]/g, '\\$&')}`));
    }
  }
});
