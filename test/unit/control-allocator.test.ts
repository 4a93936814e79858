import t from 'tap';
import { TakenSubnets, chooseFreeSubnet, exhaustedMessage, isSubnetInRange, rangeCount } from '../../src/control/allocator';
import { parseNetworkConfig } from '../../src/control/network-config';
import { formatPrefix, parsePrefix, type Prefix } from '../../src/net/addr';

const P = (s: string): Prefix => {
  const p = parsePrefix(s);
  if (!p) throw new Error(s);
  return p;
};
const cfg = (j: object) => parseNetworkConfig(JSON.stringify(j), '/k/config');

/** deterministic [0,1) */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

t.test('range and compatibility', async (t) => {
  const c = cfg({ Network: '10.244.0.0/18' });
  t.equal(rangeCount(c), 63, '/18 of /24: 64 subnets, the first is skipped');
  t.ok(isSubnetInRange(c, P('10.244.1.0/24')));
  t.ok(isSubnetInRange(c, P('10.244.63.0/24')));
  t.notOk(isSubnetInRange(c, P('10.244.0.0/24')), 'first subnet is below SubnetMin');
  t.notOk(isSubnetInRange(c, P('10.244.64.0/24')));
  t.notOk(isSubnetInRange(c, P('10.244.2.0/25')), 'other length');
});

t.test('picks only free subnets, uniformly-ish, until exhausted', async (t) => {
  const c = cfg({ Network: '10.244.0.0/18' });
  const taken = new TakenSubnets(24, [P('10.244.5.0/24')]);
  const rnd = lcg(7);
  const seen = new Set<string>();
  for (let i = 0; i < 63 - 1; i++) {
    const s = chooseFreeSubnet(c, taken, rnd);
    if (!s) break;
    t.ok(isSubnetInRange(c, s));
    t.notOk(seen.has(formatPrefix(s)), `${formatPrefix(s)} not handed out twice`);
    seen.add(formatPrefix(s));
    taken.add(s);
  }
  t.equal(seen.size, 62);
  t.notOk(seen.has('10.244.5.0/24'));
  t.equal(chooseFreeSubnet(c, taken, rnd), undefined, 'exhausted');
  t.match(exhaustedMessage(c), /no free subnet in Network 10\.244\.0\.0\/18: all 63 subnets of length \/24/);
});

t.test('a shorter lease (another config) blocks every subnet it overlaps', async (t) => {
  const c = cfg({ Network: '10.244.0.0/22', SubnetLen: 24 });
  const taken = new TakenSubnets(24, [P('10.244.0.0/23')]);
  t.ok(taken.has(P('10.244.1.0/24').addr));
  t.notOk(taken.has(P('10.244.2.0/24').addr));
  const picks = new Set<string>();
  const rnd = lcg(1);
  for (let i = 0; i < 50; i++) {
    const s = chooseFreeSubnet(c, taken, rnd);
    if (s) picks.add(formatPrefix(s));
  }
  t.same([...picks].sort(), ['10.244.2.0/24', '10.244.3.0/24']);
});

t.test('huge ranges: random probing, then a bounded scan', async (t) => {
  const c = cfg({ Network: '10.0.0.0/8', SubnetLen: 30 });
  t.equal(rangeCount(c), 2 ** 22 - 1);
  const s = chooseFreeSubnet(c, new TakenSubnets(30), lcg(3));
  t.ok(s && isSubnetInRange(c, s));
  // everything taken except the very last subnet: the scan finds it
  const all = new TakenSubnets(30, [P('10.0.0.0/9'), P('10.128.0.0/10'), P('10.192.0.0/11'), P('10.224.0.0/12'), P('10.240.0.0/13'), P('10.248.0.0/14'), P('10.252.0.0/15'), P('10.254.0.0/16'), P('10.255.0.0/17'), P('10.255.128.0/18'), P('10.255.192.0/19'), P('10.255.224.0/20'), P('10.255.240.0/21'), P('10.255.248.0/22'), P('10.255.252.0/23'), P('10.255.254.0/24'), P('10.255.255.0/25'), P('10.255.255.128/26'), P('10.255.255.192/27'), P('10.255.255.224/28'), P('10.255.255.240/29'), P('10.255.255.248/30')]);
  const last = chooseFreeSubnet(c, all, lcg(5));
  t.equal(last && formatPrefix(last), '10.255.255.252/30');
});
