import t from 'tap';
import { FLANNEL_CONFIG_KEYS, networkConfigWarnings, parseNetworkConfig } from '../../src/control/network-config';

const KEY = '/coreos.com/network/config';

t.test('<prefix>/config: flannel\'s fields pass silently, unknown ones are warned about and ignored', async (t) => {
  const flannelDualStack = JSON.stringify({
    EnableIPv4: true, EnableIPv6: true, EnableNFTables: false, Network: '10.244.0.0/16', IPv6Network: 'fd00:10:244::/56',
    SubnetLen: 24, IPv6SubnetLen: 64, SubnetMin: '10.244.1.0', SubnetMax: '10.244.9.0', IPv6SubnetMin: 'fd00:10:244:1::', IPv6SubnetMax: 'fd00:10:244:9::',
    Backend: { Type: 'udp', Port: 8285 },
  });
  t.same(networkConfigWarnings(flannelDualStack, KEY), []);
  t.equal(FLANNEL_CONFIG_KEYS.length, 12);
  const typo = JSON.stringify({ Network: '10.244.0.0/16', SubnetLenght: 26, Backend: { Type: 'udp' } });
  t.same(networkConfigWarnings(typo, KEY), [`unknown key "SubnetLenght" in ${KEY} (ignored, as flanneld does): did you mean "SubnetLen"?`]);
  t.equal(parseNetworkConfig(typo, KEY).subnetLen, 24, 'still accepted (a cluster shares this key with flanneld nodes)');
  t.same(networkConfigWarnings('{not json', KEY), [], 'parseNetworkConfig reports bad JSON');
  t.same(networkConfigWarnings('[1]', KEY), []);
});
