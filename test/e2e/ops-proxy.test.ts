// `listen[].proxyProtocol: true`: behind HAProxy or a cloud load balancer every connection comes
// from the balancer, and the device's real address arrives in a PROXY protocol v1 header. The
// allowlist must judge that address, not the balancer's.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, startRelay, type Relay } from '../helpers/relay.js';
import { waitUntil } from './relay-common.js';

/**
 * Connects from 127.0.0.1, sends `PROXY TCP4 <claimed> 127.0.0.1 <port> 25` first, then each
 * line after the previous reply. Returns the replies, the greeting first.
 */
async function proxiedSession(port: number, claimed: string, lines: string[]): Promise<string[]> {
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
    socket.write(`PROXY TCP4 ${claimed} 127.0.0.1 40000 25\r\n`);
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
          // A documentation address, public as far as the allowlist guard knows: acknowledged.
          { cidr: '192.0.2.10/32', name: 'printer', publicRange: true },
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
});
