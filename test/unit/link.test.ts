import t from 'tap';
import { configureTun, tunMtuFor, unconfigureTun, type LinkOps } from '../../src/net/link';
import { parseIp6, parsePrefix6 } from '../../src/net/addr6';
import { LinkError } from '../../src/errors';
import { parseIp, parsePrefix } from '../../src/net/addr';

/** Records every call; fails the call whose text matches `failOn` like ip(8) would. */
function fakeOps(failOn?: RegExp): { ops: LinkOps; calls: string[] } {
  const calls: string[] = [];
  const ops: LinkOps = {
    async ip(args) {
      const cmd = `ip ${args.join(' ')}`;
      calls.push(cmd);
      if (failOn?.test(cmd)) throw new LinkError(cmd, 'RTNETLINK answers: File exists\n');
      return '';
    },
    async sysctl(path, value) {
      calls.push(`sysctl ${path}=${value}`);
      if (failOn?.test(`sysctl ${path}`)) return false;
      return true;
    },
  };
  return { ops, calls };
}

const plan = { name: 'flannel0', address: parseIp('10.244.3.0')!, mtu: 1472, network: parsePrefix('10.244.0.0/16')! };

t.test('configures in order and undoes in reverse', async (t) => {
  const { ops, calls } = fakeOps();
  const state = await configureTun(plan, ops);
  t.same(calls, [
    'sysctl net/ipv6/conf/flannel0/disable_ipv6=1',
    'ip addr replace 10.244.3.0/32 dev flannel0',
    'ip link set dev flannel0 mtu 1472 up',
    'sysctl net/ipv4/conf/flannel0/accept_local=1',
    'ip route replace 10.244.0.0/16 dev flannel0',
  ]);
  calls.length = 0;
  t.same(await unconfigureTun(state), []);
  t.same(calls, ['ip route del 10.244.0.0/16 dev flannel0', 'ip link set dev flannel0 down', 'ip addr del 10.244.3.0/32 dev flannel0']);
  calls.length = 0;
  await unconfigureTun(state);
  t.same(calls, [], 'undo runs once');
});

t.test('a failing step names the command and its stderr, and what was done is undone', async (t) => {
  const { ops, calls } = fakeOps(/^ip route replace/);
  const err = await configureTun(plan, ops).then(() => undefined, (e: unknown) => e);
  t.type(err, LinkError);
  t.equal((err as LinkError).command, 'ip route replace 10.244.0.0/16 dev flannel0');
  t.match((err as LinkError).message, /ip route replace 10\.244\.0\.0\/16 dev flannel0: RTNETLINK answers: File exists/);
  t.same(calls.slice(-2), ['ip link set dev flannel0 down', 'ip addr del 10.244.3.0/32 dev flannel0'], 'undone in reverse');
});

t.test('a missing accept_local sysctl is an error, not silently skipped', async (t) => {
  const { ops, calls } = fakeOps(/^sysctl net\/ipv4/);
  await t.rejects(configureTun(plan, ops), /accept_local/);
  t.notOk(calls.some((c) => c.startsWith('ip route')), 'stopped before routing');
  t.equal(calls[calls.length - 1], 'ip addr del 10.244.3.0/32 dev flannel0');
});

t.test('a missing IPv6 stack is fine', async (t) => {
  const { ops } = fakeOps(/^sysctl net\/ipv6/);
  await t.resolves(configureTun(plan, ops));
});

t.test('dual-stack: IPv6 sysctls before link up, /128 nodad, IPv6Network route; undone in reverse', async (t) => {
  const { ops, calls } = fakeOps();
  const dual = { ...plan, ipv6: { address: parseIp6('fd00:10:244:3::')!, network: parsePrefix6('fd00:10:244::/48')! } };
  const state = await configureTun(dual, ops);
  t.same(calls, [
    'sysctl net/ipv6/conf/flannel0/addr_gen_mode=1',
    'sysctl net/ipv6/conf/flannel0/accept_ra=0',
    'sysctl net/ipv6/conf/flannel0/accept_dad=0',
    'sysctl net/ipv6/conf/flannel0/dad_transmits=0',
    'sysctl net/ipv6/conf/flannel0/router_solicitations=0',
    'sysctl net/ipv6/conf/flannel0/disable_ipv6=0',
    'ip addr replace 10.244.3.0/32 dev flannel0',
    'ip -6 addr replace fd00:10:244:3::/128 dev flannel0 nodad',
    'ip link set dev flannel0 mtu 1472 up',
    'sysctl net/ipv4/conf/flannel0/accept_local=1',
    'ip route replace 10.244.0.0/16 dev flannel0',
    'ip -6 route replace fd00:10:244::/48 dev flannel0',
  ]);
  calls.length = 0;
  t.same(await unconfigureTun(state), []);
  t.same(calls, [
    'ip -6 route del fd00:10:244::/48 dev flannel0', 'ip route del 10.244.0.0/16 dev flannel0', 'ip link set dev flannel0 down',
    'ip -6 addr del fd00:10:244:3::/128 dev flannel0', 'ip addr del 10.244.3.0/32 dev flannel0',
  ]);
});

t.test('dual-stack: a kernel without IPv6 is a clear error before the link goes up', async (t) => {
  const { ops, calls } = fakeOps(/^sysctl net\/ipv6\/conf\/flannel0\/addr_gen_mode/);
  const dual = { ...plan, ipv6: { address: parseIp6('fd00:10:244:3::')!, network: parsePrefix6('fd00:10:244::/48')! } };
  await t.rejects(configureTun(dual, ops), /addr_gen_mode/);
  t.notOk(calls.some((c) => c.startsWith('ip link')), 'never brought up');
});

t.test('tunMtuFor: IPv4 underlay -28, IPv6 underlay -48', async (t) => {
  t.equal(tunMtuFor(1500, false), 1472);
  t.equal(tunMtuFor(1500, true), 1452);
  t.equal(tunMtuFor(9000, true), 8952);
});
