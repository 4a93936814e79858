import t from 'tap';
import { parseBoolText, parseFlags } from '../../src/cli-flags';
import { ConfigError } from '../../src/errors';
import { didYouMean, editDistance, nearest } from '../../src/suggest';

const FLAGS = {
  'name': { type: 'string' },
  'many': { type: 'string', repeatable: true },
  'on': { type: 'boolean' },
  'help': { type: 'boolean', alias: 'h' },
} as const;

t.test('Go flag package forms', async (t) => {
  const g = parseFlags(['-name', 'a', '--on', '-many=1', '--many', '2', '-many', '-3'], FLAGS);
  t.same(g.get('name'), ['a']);
  t.equal(g.get('on'), true);
  t.same(g.get('many'), ['1', '2', '-3']);
  t.same(parseFlags(['--name=x=y'], FLAGS).get('name'), ['x=y'], 'the value keeps later "="');
  t.same(parseFlags(['--name='], FLAGS).get('name'), [''], 'an empty value');
  t.same(parseFlags(['-name=a', '-name=b'], FLAGS).get('name'), ['b'], 'last wins');
  t.equal(parseFlags(['-on=false'], FLAGS).get('on'), false);
  t.equal(parseFlags(['-h'], FLAGS).get('help'), true, 'alias');
  t.equal(parseFlags(['--h'], FLAGS).get('help'), true, 'alias with two dashes');
  t.same([...parseFlags(['--'], FLAGS).keys()], []);
  t.same([...parseFlags([], FLAGS).keys()], []);
});

t.test('mistakes are one-line ConfigErrors', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--nmae', 'x'], /^unknown flag --nmae: did you mean --name\? \(see overlayd --help\)$/],
    [['--zzzzzzzz'], /^unknown flag --zzzzzzzz \(see overlayd --help\)$/],
    [['---name=x'], /^bad flag syntax: ---name=x/],
    [['-=x'], /^bad flag syntax: -=x/],
    [['--name'], /^--name needs a value/],
    [['stray'], /^unexpected argument "stray"/],
    [['-'], /^unexpected argument "-"/],
    [['--', 'stray'], /^unexpected argument "stray"/],
    [['--on', 'false'], /^unexpected argument "false"; --on is a boolean flag: write --on=false/],
    [['--on=2'], /^--on: "2" is not a boolean/],
  ];
  for (const [argv, re] of cases) {
    t.throws(() => parseFlags(argv, FLAGS), ConfigError, argv.join(' '));
    t.throws(() => parseFlags(argv, FLAGS), re, argv.join(' '));
    try {
      parseFlags(argv, FLAGS);
    } catch (err) {
      t.notMatch((err as Error).message, /\n/, 'one line');
    }
  }
  t.throws(() => parseFlags(['--bogus'], FLAGS, {}, 'see overlayd status --help'), /\(see overlayd status --help\)$/, 'the usage hint is the caller\'s');
});

t.test('refused flags carry their reason; a refused boolean set to false is accepted', async (t) => {
  const refused = { 'kube': { type: 'boolean', reason: 'no kube here' }, 'kube-url': { type: 'string', reason: 'no kube url' } } as const;
  t.throws(() => parseFlags(['-kube'], FLAGS, refused), /^--kube is not supported: no kube here$/);
  t.throws(() => parseFlags(['-kube=true'], FLAGS, refused), /^--kube is not supported/);
  t.throws(() => parseFlags(['-kube-url', 'http://x'], FLAGS, refused), /^--kube-url is not supported: no kube url$/);
  t.same([...parseFlags(['-kube=false', '-on'], FLAGS, refused).keys()], ['on']);
});

t.test('booleans: Go strconv.ParseBool spellings plus yes/no/on/off', async (t) => {
  for (const v of ['1', 't', 'T', 'TRUE', 'true', 'True', 'yes', 'on']) t.equal(parseBoolText(v), true, v);
  for (const v of ['0', 'f', 'F', 'FALSE', 'false', 'False', 'no', 'off']) t.equal(parseBoolText(v), false, v);
  for (const v of ['', '2', 'truthy', 'y']) t.equal(parseBoolText(v), undefined, JSON.stringify(v));
});

t.test('nearest names', async (t) => {
  t.equal(editDistance('kitten', 'sitting'), 3);
  t.equal(editDistance('PublicIp', 'PublicIP'), 0, 'case-insensitive');
  t.equal(nearest('Peer', ['Subnet', 'PublicIP', 'Peers']), 'Peers');
  t.equal(nearest('PublicIp', ['Subnet', 'PublicIP', 'Peers']), 'PublicIP');
  t.equal(nearest('OVERLAYD_ETCD_ENDPOINT', ['OVERLAYD_ETCD_ENDPOINTS', 'OVERLAYD_ETCD_PREFIX']), 'OVERLAYD_ETCD_ENDPOINTS');
  t.equal(nearest('Colour', ['Subnet', 'PublicIP', 'Peers']), undefined);
  t.equal(didYouMean('Peer', ['Peers']), ': did you mean "Peers"?');
  t.equal(didYouMean('--nmae', ['--name'], false), ': did you mean --name?');
  t.equal(didYouMean('x', []), '');
});
