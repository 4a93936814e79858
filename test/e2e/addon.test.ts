/**
 * The native addon against a real TUN device (root only). A child node process runs
 * fixtures/tun-addon.js inside a namespace created here (per-run prefix, always deleted),
 * so every packet stays inside that namespace; this file asserts on what it reports.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { NetnsSet } from '../helpers/netns';

const FIXTURE = path.join(__dirname, 'fixtures', 'tun-addon.js');
const ADDON = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'overlayd.node');
const CHILD_TIMEOUT_MS = 40_000;

interface ErrInfo {
  name?: string;
  code?: string;
  syscall?: string;
  message?: string;
}

if (!isRoot) {
  t.skip('e2e addon test needs root (network namespace, /dev/net/tun)', () => undefined);
} else {
  const netns = new NetnsSet('ovta');

  t.test('addon on a real TUN inside a network namespace', async (t) => {
    t.ok(existsSync(ADDON), `addon built at ${ADDON} (npm ci / npm run build:native)`);
    t.ok(existsSync('/dev/net/tun'), '/dev/net/tun exists');
    t.teardown(() => {
      netns.cleanup();
    });
    const ns = netns.add('tun');

    const started = Date.now();
    const res = netns.tryExec(ns, process.execPath, [FIXTURE], CHILD_TIMEOUT_MS);
    const elapsed = Date.now() - started;
    const line = res.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    t.ok(line, 'fixture reported a result', { stderr: res.stderr, stdout: res.stdout });
    if (!line) return;
    const r = JSON.parse(line.slice('RESULT '.length)) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    t.notOk(r.error, 'fixture ran to the end', { error: r.error });
    if (r.error) return;
    t.equal(res.status, 0, 'the child exited by itself with status 0 (a TUN left open does not hold the loop)', {
      stderr: res.stderr,
    });
    t.ok(elapsed < CHILD_TIMEOUT_MS, `child finished in ${elapsed} ms`);

    t.equal(r.name, 'ovte2e0', 'the device got the requested name');
    t.same(r.counterNames, [
      'tun_rx_packets', 'tun_rx_bytes', 'tun_tx_packets', 'tun_tx_bytes', 'rx_ring_full_drops', 'rx_oversize_drops',
      'tun_read_errors', 'tun_write_errors', 'tun_read_stopped', 'wakeups', 'rx_notifies', 'polls',
    ], 'tunCounterNames');

    const busy = r.busy as ErrInfo | null;
    t.match(busy, { code: 'EBUSY', syscall: 'ioctl(TUNSETIFF)' }, 'a second open of the busy device: EBUSY');

    // kernel -> TUN -> readBatch
    t.ok(r.udpSeen, 'the UDP datagram sent to an address routed via the TUN came out of readBatch');
    t.match(r.udp, {
      src: '10.213.0.1', dst: '10.213.1.2', headerOk: true, lengthOk: true, payload: r.marker,
      udpLength: 8 + String(r.marker).length,
    }, 'and it is intact (addresses, header checksum, lengths, payload)');

    // write -> TUN -> kernel (echo replies come back out)
    t.equal(r.writeAccepted, 3, 'write() accepted the 3 echo requests');
    t.ok(r.repliesSeen, 'the kernel answered all 3 echo requests written into the TUN');
    for (const [i, rep] of (r.replies as unknown[]).entries()) {
      t.match(rep, { src: '10.213.0.1', dst: '10.213.1.2', headerOk: true, icmpOk: true, payloadOk: true },
        `echo reply ${i + 1} intact`);
    }

    t.match(r.oversize, { name: 'RangeError' }, 'write() of a packet longer than slotSize: RangeError');
    t.ok(r.oversizeQueuedNothing, 'and nothing of that batch was queued');
    t.equal(r.emptyWrite, 0, 'write([]) accepts 0');

    // counters
    const c = r.countersOpen as Record<string, string>;
    t.ok(BigInt(c.tun_rx_packets!) >= 4n, `tun_rx_packets ${c.tun_rx_packets} >= 4 (1 UDP + 3 replies)`);
    t.ok(BigInt(c.tun_rx_bytes!) > 0n, 'tun_rx_bytes moved');
    t.equal(c.tun_tx_packets, '3', 'tun_tx_packets 3');
    t.equal(c.tun_tx_bytes, String(r.requestBytes), 'tun_tx_bytes = bytes of the 3 requests');
    t.equal(c.tun_write_errors, '0', 'no write errors');
    t.equal(c.tun_read_errors, '0', 'no read errors');
    t.equal(c.rx_ring_full_drops, '0', 'no ring-full drops');
    t.ok(BigInt(c.rx_notifies!) >= 1n && r.readableCalls >= 1, 'onReadable was called');
    t.ok(BigInt(c.wakeups!) >= 1n, 'the I/O thread was woken for tx');
    t.equal(r.readErrors, 0, 'readBatch never threw while open');
    t.equal(String(r.receivedPackets), c.tun_rx_packets, 'JS received every packet the I/O thread queued');

    // close
    t.match(r.readAfterClose, { code: 'ERR_TUN_CLOSED' }, 'readBatch after close: ERR_TUN_CLOSED');
    t.match(r.writeAfterClose, { code: 'ERR_TUN_CLOSED' }, 'write after close: ERR_TUN_CLOSED');
    t.equal(r.closeAgain, null, 'close() again is a no-op');
    const closed = r.countersClosed as Record<string, string>;
    t.same(
      Object.fromEntries(Object.entries(closed).filter(([k]) => k.startsWith('tun_'))),
      Object.fromEntries(Object.entries(c).filter(([k]) => k.startsWith('tun_'))),
      'packet counters readable after close, same as before it',
    );
    t.same(r.countersLater, closed, 'and frozen: unchanged later');
    t.ok(r.linkGoneAfterClose, 'the kernel removed the device: the fd was closed');

    // openTun errors
    t.match(r.tooLong, { code: 'ENAMETOOLONG', syscall: 'ioctl(TUNSETIFF)', message: /20 bytes.*at most 15/ },
      'a 20-character name: ENAMETOOLONG with syscall and an informative message');
    t.match(r.badChars, { code: 'EINVAL', syscall: 'ioctl(TUNSETIFF)' }, "a name with '/': EINVAL from the kernel");
    t.match(r.badSlot, { name: 'RangeError', message: /slotSize/ }, 'slotSize 100: RangeError');
    t.match(r.badRing, { name: 'RangeError', message: /ringSlots/ }, 'ringSlots 100: RangeError');
    t.match(r.badCb, { name: 'TypeError', message: /onReadable/ }, 'onReadable not a function: TypeError');
    t.equal(r.leftOpen, 'ovte2e1', 'a second device was left open for the exit check');
  });

  t.test('no namespace of this run is left', async (t) => {
    netns.cleanup(); // idempotent: the subtest's teardown already ran
    t.same(netns.leftovers(), [], `no ${netns.prefix}-* namespace left`);
  });
}
