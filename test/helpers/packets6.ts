/**
 * Test-side IPv6 packet builders and an ICMPv6 checksum written independently of src/net
 * (plain Buffer reads and arithmetic), so tests check the code against a second implementation.
 */
import { refChecksum } from './packets';

/** 16 network-order bytes of a textual IPv6 address, parsed here without src/net/addr6. */
export function ip6Bytes(s: string): Buffer {
  const [head, tail] = s.includes('::') ? s.split('::') as [string, string] : [s, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined ? [] : tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) throw new Error(`bad test address ${s}`);
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

export interface Ipv6Spec {
  src?: string;
  dst?: string;
  hopLimit?: number;
  /** next header of the fixed header; default: the first of `ext`, else `proto` */
  next?: number;
  /** extension headers, raw bytes each, chained in order (their next-header byte is set here) */
  ext?: { type: number; bytes: Buffer }[];
  /** upper-layer protocol after the extension headers; default 17 */
  proto?: number;
  payload?: Uint8Array;
  /** payload length field override */
  payloadLen?: number;
  /** raw first byte override */
  b0?: number;
}

/** Builds an IPv6 packet: fixed header, extension headers, payload. */
export function buildIpv6(s: Ipv6Spec = {}): Buffer {
  const ext = s.ext ?? [];
  const proto = s.proto ?? 17;
  const parts: Buffer[] = [];
  ext.forEach((e, i) => {
    const b = Buffer.from(e.bytes);
    b[0] = i + 1 < ext.length ? ext[i + 1]!.type : proto;
    parts.push(b);
  });
  const payload = Buffer.from(s.payload ?? Buffer.alloc(0));
  const body = Buffer.concat([...parts, payload]);
  const h = Buffer.alloc(40);
  h[0] = s.b0 ?? 0x60;
  h.writeUInt16BE(s.payloadLen ?? body.length, 4);
  h[6] = s.next ?? (ext.length > 0 ? ext[0]!.type : proto);
  h[7] = s.hopLimit ?? 64;
  ip6Bytes(s.src ?? 'fd00:10:244:2::5').copy(h, 8);
  ip6Bytes(s.dst ?? 'fd00:10:244:3::7').copy(h, 24);
  return Buffer.concat([h, body]);
}

/** An extension header of `len8` 8-byte units (options/routing style), padded with `fill`. */
export function extHeader(type: number, len8 = 1, fill = 1): { type: number; bytes: Buffer } {
  const b = Buffer.alloc(len8 * 8, fill);
  b[1] = len8 - 1;
  return { type, bytes: b };
}

/** A Fragment header with offset `offset8` (8-byte units) and the M flag. */
export function fragHeader(offset8: number, more: boolean): { type: number; bytes: Buffer } {
  const b = Buffer.alloc(8);
  b.writeUInt16BE((offset8 << 3) | (more ? 1 : 0), 2);
  b.writeUInt32BE(0xabcd, 4);
  return { type: 44, bytes: b };
}

/** Verifies the upper-layer checksum of an IPv6 packet whose next header is the upper layer: true when the sum is correct. */
export function ref6ChecksumOk(pkt: Buffer): boolean {
  const ul = pkt.subarray(40);
  const pseudo = Buffer.alloc(40);
  pkt.copy(pseudo, 0, 8, 40);
  pseudo.writeUInt32BE(ul.length, 32);
  pseudo[39] = pkt[6]!;
  return refChecksum(Buffer.concat([pseudo, ul])) === 0;
}

/** An ICMPv6 echo request (type 128) body with a correct checksum for the given addresses. */
export function icmp6Echo(src: string, dst: string, data: Buffer): Buffer {
  const m = Buffer.alloc(8 + data.length);
  m[0] = 128;
  m.writeUInt16BE(0x77, 4);
  data.copy(m, 8);
  const pseudo = Buffer.alloc(40);
  ip6Bytes(src).copy(pseudo, 0);
  ip6Bytes(dst).copy(pseudo, 16);
  pseudo.writeUInt32BE(m.length, 32);
  pseudo[39] = 58;
  m.writeUInt16BE(refChecksum(Buffer.concat([pseudo, m])), 2);
  return m;
}
