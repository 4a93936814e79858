import t from 'tap';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureIpForward, ensureIpv6Forward } from '../../src/ops/ip-forward';
import { ConfigError } from '../../src/errors';

/** A fake /proc/sys/net/ipv6/conf: dev -> accept_ra, plus all/forwarding. */
function confDir(forwarding: string, ra: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'ovl-ip6fwd-'));
  for (const dev of ['all', 'default', ...Object.keys(ra)]) mkdirSync(join(d, dev));
  writeFileSync(join(d, 'all', 'forwarding'), `${forwarding}\n`);
  writeFileSync(join(d, 'all', 'accept_ra'), '1\n');
  writeFileSync(join(d, 'default', 'accept_ra'), '1\n');
  for (const [dev, v] of Object.entries(ra)) writeFileSync(join(d, dev, 'accept_ra'), `${v}\n`);
  return d;
}
const read = (d: string, f: string): string => readFileSync(join(d, f), 'utf8').trim();

t.test('IPv6 forwarding off: accept_ra 1 -> 2 first, then forwarding on; 0 and 2 untouched, all/default untouched', async (t) => {
  const d = confDir('0', { eth0: '1', eth1: '0', wlan0: '2', lo: '1' });
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  const r = await ensureIpv6Forward(d);
  t.equal(r.state, 'enabled');
  t.same(r.acceptRa2, ['eth0', 'lo']);
  t.equal(read(d, 'all/forwarding'), '1');
  t.equal(read(d, 'eth0/accept_ra'), '2');
  t.equal(read(d, 'lo/accept_ra'), '2');
  t.equal(read(d, 'eth1/accept_ra'), '0');
  t.equal(read(d, 'wlan0/accept_ra'), '2');
  t.equal(read(d, 'all/accept_ra'), '1');
  t.equal(read(d, 'default/accept_ra'), '1');
});

t.test('IPv6 forwarding already on: nothing is written', async (t) => {
  const d = confDir('1', { eth0: '1' });
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  t.same(await ensureIpv6Forward(d), { state: 'already', acceptRa2: [] });
  t.equal(read(d, 'eth0/accept_ra'), '1');
});

t.test('IPv6 disabled (no conf dir): ConfigError naming the sysctl', async (t) => {
  const e = await ensureIpv6Forward('/nonexistent-ovl/conf').then(() => undefined, (err: unknown) => err);
  t.ok(e instanceof ConfigError, 'a ConfigError');
  t.match((e as Error).message, /net\.ipv6\.conf\.all\.forwarding/);
});

t.test('IPv4: ip_forward 0 -> 1; an unwritable file is a ConfigError naming the sysctl', async (t) => {
  const d = mkdtempSync(join(tmpdir(), 'ovl-ipfwd-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  const f = join(d, 'ip_forward');
  writeFileSync(f, '0\n');
  t.equal(await ensureIpForward(f), 'enabled');
  t.equal(readFileSync(f, 'utf8').trim(), '1');
  t.equal(await ensureIpForward(f), 'already');
  const e = await ensureIpForward(join(d, 'missing')).then(() => undefined, (err: unknown) => err);
  t.ok(e instanceof ConfigError, 'a ConfigError');
  t.match((e as Error).message, /net\.ipv4\.ip_forward/);
  // a directory in place of the file: reading fails the same way as a missing /proc entry
});
