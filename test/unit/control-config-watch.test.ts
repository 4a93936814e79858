/** classifyConfigChange (src/control/config-watch.ts): which config changes are fatal. */
import t from 'tap';
import { classifyConfigChange } from '../../src/control/config-watch';
import { parseNetworkConfig } from '../../src/control/network-config';
import { parsePrefix } from '../../src/net/addr';

const KEY = '/coreos.com/network/config';
const running = parseNetworkConfig('{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}', KEY);
const own = parsePrefix('10.244.12.0/24', true)!;
const classify = (text: string | undefined) => classifyConfigChange(running, own, KEY, text);

t.test('same config, other spelling: same', async (t) => {
  t.same(classify('{ "SubnetMax":"10.244.20.0", "Network": "10.244.0.0/16", "SubnetMin":"10.244.10.0",\n "Backend": {"Type":"UDP","Port":8285}, "EnableIPv6": false }'), { kind: 'same' });
  t.same(classify('{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","Backend":{"Type":"udp","DirectRouting":false}}'), { kind: 'same' }, 'DirectRouting false spelled out');
});

t.test('range changed but still containing our subnet: harmless', async (t) => {
  const c = classify('{"Network":"10.244.0.0/16","SubnetMin":"10.244.12.0","SubnetMax":"10.244.12.0"}');
  t.equal(c.kind, 'harmless');
  t.match(c.kind === 'harmless' ? c.what : '', /SubnetMin\/SubnetMax \[10\.244\.10\.0\.\.10\.244\.20\.0\] -> \[10\.244\.12\.0\.\.10\.244\.12\.0\] \(still contains 10\.244\.12\.0\/24\)/);
});

t.test('changes that matter: fatal, naming old and new', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['{"Network":"10.0.0.0/8","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}', /Network 10\.244\.0\.0\/16 -> 10\.0\.0\.0\/8/],
    ['{"Network":"10.244.0.0/16","SubnetLen":25}', /SubnetLen 24 -> 25/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","Backend":{"Port":9000}}', /Backend\.Port 8285 -> 9000/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', /Backend\.Type changed from "udp"/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.13.0"}', /which no longer contains this node's subnet 10\.244\.12\.0\/24/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","Backend":{"Type":"udp","DirectRouting":true}}', /Backend\.DirectRouting false -> true/],
  ];
  for (const [text, re] of cases) {
    const c = classify(text);
    t.equal(c.kind, 'fatal', text);
    t.match(c.kind === 'fatal' ? c.message : '', re);
    t.match(c.kind === 'fatal' ? c.message : '', `etcd key ${KEY}`);
  }
  const two = classify('{"Network":"10.245.0.0/16","SubnetLen":26,"Backend":{"Port":1}}');
  t.match(two.kind === 'fatal' ? two.message : '', /Network .*; SubnetLen 24 -> 26; Backend\.Port 8285 -> 1/, 'every change named');
});

t.test('unusable or deleted: kept running', async (t) => {
  t.equal(classify('{"Network":').kind, 'invalid');
  t.equal(classify('{"Network":"10.244.0.0/16","SubnetLen":"x"}').kind, 'invalid');
  t.same(classify(undefined), { kind: 'deleted' });
});
