// `listen[].proxyProtocol: true`: behind HAProxy or a cloud load balancer every connection comes
// from the balancer, and the device's real address arrives in a PROXY protocol header (v1 text,
// or the binary v2 of AWS NLB and `send-proxy-v2`). The allowlist must judge that address, not
// the balancer's.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, startRelay, type Relay } from '../helpers/relay.js';
import { waitUntil } from './relay-common.js';

/** A v1 header claiming `claimed` (an IPv4 address). */
const v1 = (claimed: string) => Buffer.from(`PROXY TCP4 ${claimed} 127.0.0.1 40000 25\r\n`);

/** A v2 header: PROXY over TCP4 or TCP6 from `claimed`, or LOCAL (a health check). */
function v2(claimed: string | 'LOCAL'): Buffer {
  const head = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  if (claimed === 'LOCAL') return Buffer.concat([head, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  const six = claimed.includes(':');
  const address = six ? ipv6Bytes(claimed) : Buffer.from(claimed.split('.').map(Number));
  const ports = Buffer.from([0x9c, 0x40, 0x00, 0x19]); // 40000 → 25
  // A TLV after the addresses (PP2_TYPE_NOOP), which must be skipped.
  const tlv = Buffer.from([0x04, 0x00, 0x02, 0xaa, 0xbb]);
  const block = Buffer.concat([address, address, ports, tlv]);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(block.length);
  return Buffer.concat([head, Buffer.from([0x21, six ? 0x21 : 0x11]), length, block]);
}

function ipv6Bytes(text: string): Buffer {
  const [left, right = ''] = text.split('::') as [string, string?];
  const l = left ? left.split(':') : [];
  const r = right ? right.split(':') : [];
  const groups = [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/**
 * Connects from 127.0.0.1, sends `header` first, then each line after the previous reply.
 * Returns the replies, the greeting first.
 */
async function proxiedSession(port: number, header: string | Buffer, lines: string[]): Promise<string[]> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' });
  socket.on('error', () => undefined);
  socket.setEncoding('latin1');
  const replies: string[] = [];
  let buffer = '';
  let current: string[] = [];
  let waiting: ((reply: string | undefined) => void) | undefined;
  const queued: string[] = [];
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    let index: number;
    while ((index = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, index).replace(/\r$/, '');
      buffer = buffer.slice(index + 1);
      current.push(line);
      if (/^\d{3}-/.test(line)) continue;
      const reply = current.join('\n');
      current = [];
      if (waiting) {
        const w = waiting;
        waiting = undefined;
        w(reply);
      } else queued.push(reply);
    }
  });
  socket.on('close', () => waiting?.(undefined));
  const next = () =>
    new Promise<string | undefined>((resolve, reject) => {
      if (queued.length) return resolve(queued.shift());
      if (socket.destroyed) return resolve(undefined);
      const timer = setTimeout(() => reject(new Error('no reply within 10 s')), 10_000);
      waiting = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
    });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  try {
    socket.write(typeof header === 'string' ? v1(header) : header);
    const greeting = await next();
    if (greeting === undefined) return replies;
    replies.push(greeting);
    for (const line of lines) {
      socket.write(`${line}\r\n`);
      const reply = await next();
      if (reply === undefined) break;
      replies.push(reply);
    }
    return replies;
  } finally {
    socket.destroy();
  }
}

describe('ops: PROXY protocol (listen[].proxyProtocol)', () => {
  let relay: Relay;
  let proxyPort: number;

  before(async () => {
    proxyPort = await freePort();
    relay = await startRelay({
      config: {
        listen: [
          // The first listener is the harness's readiness probe (which sends no PROXY header).
          { host: '127.0.0.1' },
          { host: '127.0.0.1', port: proxyPort, proxyProtocol: true },
        ],
        // 127.0.0.0/8 is allowed: the balancer's own address must not be what lets mail in.
        allowlist: [
          { cidr: '127.0.0.0/8', name: 'localhost' },
          // Documentation addresses, public as far as the allowlist guard knows: acknowledged.
          { cidr: '192.0.2.10/32', name: 'printer', publicRange: true },
          { cidr: '2001:db8::10/128', name: 'printer6', publicRange: true },
        ],
      },
    });
  });

  after(async () => {
    await relay?.stop();
  });

  test('a device outside the allowlist is refused with 5.7.1 although the socket is 127.0.0.1', async () => {
    const replies = await proxiedSession(proxyPort, '198.51.100.7', [
      'EHLO device.test',
      'MAIL FROM:<scanner@corp.example>',
      'QUIT',
    ]);
    assert.match(replies[0] ?? '', /^220 /);
    assert.match(replies[2] ?? '', /^550 5\.7\.1 .*198\.51\.100\.7/);
  });

  test('an allowlisted device behind the balancer is accepted as its own source', async () => {
    const replies = await proxiedSession(proxyPort, '192.0.2.10', [
      'EHLO printer.test',
      'MAIL FROM:<scanner@corp.example>',
      'RCPT TO:<alice@example.com>',
      'DATA',
      'Subject: via the balancer\r\n\r\nhello\r\n.',
      'QUIT',
    ]);
    assert.match(replies[2] ?? '', /^250 /, replies.join('\n'));
    const queued = /queued as (\S+)/.exec(replies[5] ?? '')?.[1];
    assert.ok(queued, `no queue id in ${replies[5]}`);
    // Captured in the outbox: the source is the printer's entry, the trace line its address.
    const meta = path.join(relay.spoolDir, 'outbox', `${queued}.json`);
    await waitUntil(meta, () =>
      fs.access(meta).then(
        () => true,
        () => false,
      ),
    );
    const envelope = JSON.parse(await fs.readFile(meta, 'utf8')) as { source: string };
    assert.equal(envelope.source, 'printer');
    const body = await fs.readFile(path.join(relay.spoolDir, 'outbox', `${queued}.eml`), 'latin1');
    assert.match(body, /^Received: from printer\.test \(\[192\.0\.2\.10\]\)/);
  });

  /** The source the relay recorded for a message sent through the balancer with `header`. */
  async function sourceOf(header: Buffer): Promise<string> {
    const replies = await proxiedSession(proxyPort, header, [
      'EHLO printer.test',
      'MAIL FROM:<scanner@corp.example>',
      'RCPT TO:<alice@example.com>',
      'DATA',
      'Subject: via the balancer, v2\r\n\r\nhello\r\n.',
      'QUIT',
    ]);
    const queued = /queued as (\S+)/.exec(replies[5] ?? '')?.[1];
    assert.ok(queued, `no queue id in:\n${replies.join('\n')}`);
    const meta = path.join(relay.spoolDir, 'outbox', `${queued}.json`);
    await waitUntil(meta, () =>
      fs.access(meta).then(
        () => true,
        () => false,
      ),
    );
    return (JSON.parse(await fs.readFile(meta, 'utf8')) as { source: string }).source;
  }

  test('v2 over TCP4 (AWS NLB, send-proxy-v2): the device is its own source, TLVs skipped', async () => {
    assert.equal(await sourceOf(v2('192.0.2.10')), 'printer');
  });

  test('v2 over TCP6: the IPv6 device is its own source', async () => {
    assert.equal(await sourceOf(v2('2001:db8::10')), 'printer6');
  });

  test('v2 outside the allowlist is refused with 5.7.1', async () => {
    const replies = await proxiedSession(proxyPort, v2('198.51.100.7'), [
      'EHLO d.test',
      'MAIL FROM:<a@corp.example>',
    ]);
    assert.match(replies[2] ?? '', /^550 5\.7\.1 .*198\.51\.100\.7/);
  });

  test('v2 LOCAL (a balancer health check) is the balancer itself', async () => {
    // The balancer is 127.0.0.1, allowlisted as "localhost" here.
    assert.equal(await sourceOf(v2('LOCAL')), 'localhost');
  });

  test('a missing or malformed header closes the connection, with a log line naming the peer', async () => {
    const bad = [
      Buffer.from('EHLO no-header.test\r\n'),
      Buffer.from('PROXY TCP4 not-an-ip 127.0.0.1 1 25\r\n'),
      Buffer.concat([v2('192.0.2.10').subarray(0, 12), Buffer.from([0x31, 0x11, 0xff, 0xff])]),
    ];
    for (const header of bad) {
      const since = relay.output().length;
      const replies = await proxiedSession(proxyPort, header, ['EHLO x.test']);
      assert.deepEqual(replies, [], `expected no reply to ${JSON.stringify(header.toString('latin1'))}`);
      const line = await relay.waitForOutput(/^.*proxy_rejected.*$/m, 10_000, { since });
      assert.match(line[0], /127\.0\.0\.1/);
    }
  });
});
