// CIDR arithmetic for the allowlist editor: parse and normalise a range, tell whether two
// ranges overlap, and whether a range reaches beyond private address space (which would make
// the relay an open relay for the internet).
import { isIP, isIPv4 } from 'node:net';

export interface Range {
  family: 4 | 6;
  /** The first address (host bits cleared). */
  start: bigint;
  end: bigint;
  prefix: number;
  /** Canonical text: network address / prefix. */
  text: string;
  /** The input had host bits set (10.1.2.3/24). */
  hostBitsSet: boolean;
}

function v4ToBig(address: string): bigint {
  return address.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function v6ToBig(address: string): bigint {
  let text = address.toLowerCase();
  // An embedded IPv4 tail (::ffff:10.1.2.3) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const n = v4ToBig(v4[1]);
    text = text.slice(0, -v4[1].length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - headParts.length - tailParts.length;
  const groups = [...headParts, ...Array<string>(fill).fill('0'), ...tailParts];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g || '0', 16)), 0n);
}

function bigToV4(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((n >> shift) & 0xffn)).join('.');
}

function bigToV6(n: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  // RFC 5952: the longest run (of at least two) of zero groups becomes "::".
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len && j - i >= 2) best = { at: i, len: j - i };
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.at < 0) return hex.join(':');
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.len).join(':')}`;
}

/** Parses "10.1.2.0/24", "10.1.2.3" (one address) or "fd00::/64"; undefined when malformed. */
export function parseRange(input: string): Range | undefined {
  const [address = '', bits, ...rest] = input.trim().split('/');
  if (rest.length) return undefined;
  const kind = isIP(address);
  if (!kind) return undefined;
  const family: 4 | 6 = isIPv4(address) ? 4 : 6;
  const width = family === 4 ? 32 : 128;
  if (bits !== undefined && !/^\d{1,3}$/.test(bits)) return undefined;
  const prefix = bits === undefined ? width : Number(bits);
  if (prefix > width) return undefined;
  const value = family === 4 ? v4ToBig(address) : v6ToBig(address);
  const hostMask = (1n << BigInt(width - prefix)) - 1n;
  const start = value & ~hostMask & ((1n << BigInt(width)) - 1n);
  const end = start | hostMask;
  const text = `${family === 4 ? bigToV4(start) : bigToV6(start)}/${prefix}`;
  return { family, start, end, prefix, text, hostBitsSet: (value & hostMask) !== 0n };
}

export function contains(outer: Range, inner: Range): boolean {
  return outer.family === inner.family && outer.start <= inner.start && inner.end <= outer.end;
}

export function overlaps(a: Range, b: Range): boolean {
  return a.family === b.family && a.start <= b.end && b.start <= a.end;
}

/** Address space that never routes to or from the internet: what an allowlist should hold. */
const PRIVATE_V4 = [
  '10.0.0.0/8', // RFC 1918
  '172.16.0.0/12', // RFC 1918
  '192.168.0.0/16', // RFC 1918
  '127.0.0.0/8', // loopback
  '169.254.0.0/16', // link-local
  '100.64.0.0/10', // CGNAT (RFC 6598)
];
const PRIVATE_V6 = [
  '::1/128', // loopback
  'fe80::/10', // link-local
  'fc00::/7', // unique local (ULA)
  // IPv4-mapped forms of the private IPv4 ranges.
  ...PRIVATE_V4.map((cidr) => {
    const [address, bits] = cidr.split('/');
    return `::ffff:${address}/${96 + Number(bits)}`;
  }),
];
const PRIVATE = [...PRIVATE_V4, ...PRIVATE_V6].map((c) => parseRange(c)!);

/** True when some address in the range is outside the private ranges above. */
export function includesPublic(range: Range): boolean {
  const covering = PRIVATE.filter((p) => overlaps(p, range)).sort((a, b) =>
    a.start < b.start ? -1 : a.start > b.start ? 1 : 0,
  );
  let next = range.start;
  for (const p of covering) {
    if (p.start > next) return true;
    if (p.end >= next) next = p.end + 1n;
    if (next > range.end) return false;
  }
  return next <= range.end;
}

/** The number of addresses, as text ("256", "2^64"). */
export function sizeOf(range: Range): string {
  const bits = (range.family === 4 ? 32 : 128) - range.prefix;
  return bits <= 32 ? String(2 ** bits) : `2^${bits}`;
}
