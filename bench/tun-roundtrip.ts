/**
 * Ring transfer through the addon with the kernel in the loop (root, run inside a network
 * namespace of the benchmark run by bench/micro.ts, never on its own in the host namespace):
 *
 *   JS TunPort.write() -> tx ring -> I/O thread write(tun) -> kernel forwards the packet
 *   (ip_forward, TTL 64 -> 63) back out of the same TUN -> I/O thread read(tun) -> rx ring
 *   -> onReadable -> JS TunPort.readBatch()
 *
 * The TUN has 10.77.0.1/32 and a route 10.78.0.0/16; the packets are UDP 10.78.0.2 ->
 * 10.78.0.3, so they only ever circulate between this process and this namespace's kernel.
 * At most IN_FLIGHT packets are outstanding (written, not yet read back). Runs for a fixed
 * time and prints one JSON object: packets/s read back, bytes/s, writes refused, strays.
 *
 * usage: node tun-roundtrip.js TUN_NAME PACKET_BYTES SECONDS
 */
import { loadAddon } from '../src/dataplane/addon';
import { ipv4HeaderChecksum } from '../src/net/ipv4';
import { must } from '../src/lab/exec';

const SLOT_SIZE = 1536; //   bytes
const RING_SLOTS = 1024; //  slots per direction
const BATCH = 64; //         packets per write() and per readBatch()
const IN_FLIGHT = 256; //    packets outstanding at most (64..960 measured alike; 256 was best)

function udpPacket(bytes: number): Buffer {
  const p = Buffer.alloc(bytes);
  p[0] = 0x45;
  p.writeUInt16BE(bytes, 2);
  p[8] = 64;
  p[9] = 17;
  p.writeUInt32BE(0x0a4e0002, 12); // 10.78.0.2
  p.writeUInt32BE(0x0a4e0003, 16); // 10.78.0.3
  p.writeUInt16BE(ipv4HeaderChecksum(p, 20), 10);
  p.writeUInt16BE(4000, 20);
  p.writeUInt16BE(4001, 22);
  p.writeUInt16BE(bytes - 20, 24);
  return p;
}

async function main(): Promise<void> {
  const [name = 'bt0', bytesArg = '64', secondsArg = '2'] = process.argv.slice(2);
  const bytes = Number(bytesArg);
  const seconds = Number(secondsArg);
  if (!(bytes >= 28 && bytes <= SLOT_SIZE) || !(seconds > 0 && seconds <= 60)) throw new Error('bad arguments');
  const addon = loadAddon();
  let readable = false;
  let wake: (() => void) | undefined;
  const port = addon.openTun(name, { slotSize: SLOT_SIZE, ringSlots: RING_SLOTS }, () => {
    readable = true;
    wake?.();
  });
  try {
    for (const [k, v] of [['all.rp_filter', '0'], [`${name}.rp_filter`, '0'], ['all.send_redirects', '0'], [`${name}.send_redirects`, '0'], ['ip_forward', '1']]) {
      must('sysctl', ['-qw', k === 'ip_forward' ? `net.ipv4.ip_forward=${v}` : `net.ipv4.conf.${k}=${v}`]);
    }
    must('sysctl', ['-qw', `net.ipv6.conf.${name}.disable_ipv6=1`]);
    must('ip', ['addr', 'add', '10.77.0.1/32', 'dev', name]);
    must('ip', ['link', 'set', name, 'mtu', '1500', 'up']);
    must('ip', ['route', 'add', '10.78.0.0/16', 'dev', name]);

    const pkt = udpPacket(bytes);
    const batch = Array.from({ length: BATCH }, () => pkt);
    const buf = Buffer.alloc(SLOT_SIZE * BATCH);
    const lens = new Uint32Array(BATCH);
    let written = 0, refused = 0, got = 0, gotBytes = 0, strays = 0;
    const t0 = process.hrtime.bigint();
    const end = t0 + BigInt(Math.round(seconds * 1e9));
    let now = t0;
    // bounded by time: every turn either moves packets or waits (at most 10 ms) for onReadable
    while (now < end) {
      while (written - got - refused <= IN_FLIGHT - BATCH) {
        const n = port.write(batch);
        written += BATCH;
        refused += BATCH - n;
        if (n < BATCH) break;
      }
      for (let round = 0; round < 64; round++) {
        readable = false;
        const n = port.readBatch(buf, lens);
        for (let i = 0; i < n; i++) {
          const off = i * SLOT_SIZE;
          if (lens[i] === bytes && buf[off + 8] === 63 && buf[off + 9] === 17) { got++; gotBytes += bytes; } else strays++;
        }
        if (n < BATCH) break;
      }
      // room for another batch: write it before waiting (waiting first would idle the path)
      if (written - got - refused <= IN_FLIGHT - BATCH) {
        now = process.hrtime.bigint();
        continue;
      }
      if (!readable) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => { wake = undefined; resolve(); }, 10);
          wake = () => { clearTimeout(timer); wake = undefined; resolve(); };
        });
      }
      now = process.hrtime.bigint();
    }
    const dt = Number(now - t0) / 1e9;
    // what the kernel dropped (rather than forwarded) shows as the difference written - refused - got
    process.stdout.write(`${JSON.stringify({
      packetBytes: bytes, seconds: dt, packets: got, pps: got / dt, bytesPerSec: gotBytes / dt,
      written, refused, lostOrInFlight: written - refused - got, strays,
    })}\n`);
  } finally {
    port.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`tun-roundtrip: ${String(err instanceof Error ? err.stack : err)}\n`);
  process.exitCode = 1;
});
