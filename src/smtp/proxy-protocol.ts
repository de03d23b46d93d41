// The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a load balancer sends
// before the client's first byte, carrying the client's real address. Pure parsing of a
// buffer that may hold only part of the header, so the socket side (proxy-reader.ts) can call
// it after each chunk. The header is unauthenticated input from whoever reached the port;
// every field is checked, and anything unexpected is "invalid", never a guess.
import net from 'node:net';

/** v2's fixed 12-byte signature. */
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V1_PREFIX = Buffer.from('PROXY ');
/** v1's longest line is 107 bytes, CRLF included (the spec's limit). */
export const V1_MAX_LENGTH = 107;
/** v2's address block is at most 216 bytes for the families we take; TLVs may add more. */
export const V2_MAX_LENGTH = 16 + 2048;

export type ProxyHeader =
  /** A proxied connection: the client's address as the balancer saw it. */
  | { kind: 'proxy'; version: 1 | 2; address: string; port: number }
  /**
   * No address to take: v2 LOCAL (the balancer's own health check) or v1 `UNKNOWN`, or a v2
   * family other than TCP/IP (UNIX sockets, UDP). The connection keeps its real peer address.
   */
  | { kind: 'local'; version: 1 | 2 };

export type ParseResult =
  | { state: 'incomplete' }
  | { state: 'invalid'; reason: string }
  | { state: 'done'; header: ProxyHeader; length: number };

const INCOMPLETE: ParseResult = { state: 'incomplete' };
const invalid = (reason: string): ParseResult => ({ state: 'invalid', reason });

/** Parses the start of `data`; `length` is how many bytes the header took. */
export function parseProxyHeader(data: Buffer): ParseResult {
  if (data.length === 0) return INCOMPLETE;
  // Decide the version from as many bytes as have arrived: a prefix of both signatures is
  // still undecided, anything else is not a PROXY header at all.
  const v2Prefix = data.subarray(0, V2_SIGNATURE.length);
  if (V2_SIGNATURE.subarray(0, v2Prefix.length).equals(v2Prefix)) {
    return v2Prefix.length < V2_SIGNATURE.length ? INCOMPLETE : parseV2(data);
  }
  const v1Prefix = data.subarray(0, V1_PREFIX.length);
  if (V1_PREFIX.subarray(0, v1Prefix.length).equals(v1Prefix)) {
    return v1Prefix.length < V1_PREFIX.length ? INCOMPLETE : parseV1(data);
  }
  return invalid('not a PROXY protocol header');
}

function parseV1(data: Buffer): ParseResult {
  // The line ends with CRLF; a LF before it (or a bare LF) is a line that cannot be one.
  const lf = data.indexOf(0x0a);
  if (lf >= 0 && data[lf - 1] !== 0x0d) return invalid('v1 header line ends with a bare LF');
  const end = data.indexOf('\r\n');
  if (end < 0) return data.length >= V1_MAX_LENGTH ? invalid('v1 header longer than 107 bytes') : INCOMPLETE;
  if (end + 2 > V1_MAX_LENGTH) return invalid('v1 header longer than 107 bytes');
  const line = data.subarray(0, end).toString('latin1');
  if (!/^[\x20-\x7e]*$/.test(line)) return invalid('v1 header holds control or non-ASCII bytes');
  const fields = line.split(' ');
  const length = end + 2;
  if (fields[1] === 'UNKNOWN') return { state: 'done', header: { kind: 'local', version: 1 }, length };
  if (fields.length !== 6) return invalid('v1 header needs PROXY, a family, two addresses and two ports');
  const [, family, source, destination, sourcePort, destinationPort] = fields as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  const want = family === 'TCP4' ? 4 : family === 'TCP6' ? 6 : 0;
  if (want === 0)
    return invalid(`v1 family ${JSON.stringify(family.slice(0, 16))} is not TCP4, TCP6 or UNKNOWN`);
  if (net.isIP(source) !== want || net.isIP(destination) !== want)
    return invalid(`v1 addresses are not ${family} addresses`);
  const port = v1Port(sourcePort);
  if (port === undefined || v1Port(destinationPort) === undefined) return invalid('v1 port is not 0-65535');
  return {
    state: 'done',
    header: { kind: 'proxy', version: 1, address: source.toLowerCase(), port },
    length,
  };
}

/** A decimal port without sign or leading zeros (the spec's form). */
function v1Port(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

function parseV2(data: Buffer): ParseResult {
  if (data.length < 16) return INCOMPLETE;
  const versionCommand = data[12]!;
  if (versionCommand >> 4 !== 2) return invalid(`v2 version ${versionCommand >> 4} is not 2`);
  const command = versionCommand & 0x0f;
  if (command !== 0 && command !== 1) return invalid(`v2 command ${command} is neither LOCAL nor PROXY`);
  const familyProtocol = data[13]!;
  const blockLength = data.readUInt16BE(14);
  const length = 16 + blockLength;
  if (length > V2_MAX_LENGTH) return invalid(`v2 header of ${length} bytes is longer than ${V2_MAX_LENGTH}`);
  if (data.length < length) return INCOMPLETE;
  // LOCAL: the balancer speaking for itself (health checks); the address block is ignored.
  if (command === 0) return { state: 'done', header: { kind: 'local', version: 2 }, length };
  const block = data.subarray(16, length);
  switch (familyProtocol) {
    case 0x11: // TCP over IPv4: 4 + 4 address bytes, 2 + 2 port bytes, then TLVs (skipped)
      if (block.length < 12) return invalid('v2 TCP4 address block shorter than 12 bytes');
      return proxied(ipv4(block.subarray(0, 4)), block.readUInt16BE(8), length);
    case 0x21: // TCP over IPv6: 16 + 16, 2 + 2
      if (block.length < 36) return invalid('v2 TCP6 address block shorter than 36 bytes');
      return proxied(ipv6(block.subarray(0, 16)), block.readUInt16BE(32), length);
    case 0x00: // UNSPEC: the spec says to use the real connection's address
    case 0x12: // UDP and UNIX sockets carry no TCP client address for us
    case 0x22:
    case 0x31:
    case 0x32:
      return { state: 'done', header: { kind: 'local', version: 2 }, length };
    default:
      return invalid(`v2 family/protocol 0x${familyProtocol.toString(16).padStart(2, '0')} is unknown`);
  }
}

function proxied(address: string, port: number, length: number): ParseResult {
  return { state: 'done', header: { kind: 'proxy', version: 2, address, port }, length };
}

function ipv4(bytes: Buffer): string {
  return [...bytes].join('.');
}

/** The canonical (compressed, lower-case) text form, as net.SocketAddress gives it. */
function ipv6(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  const text = groups.join(':');
  // An IPv4-mapped address is the IPv4 client behind a dual-stack balancer.
  if (/^0:0:0:0:0:ffff:/.test(text)) return ipv4(bytes.subarray(12));
  return new net.SocketAddress({ address: text, family: 'ipv6' }).address;
}
