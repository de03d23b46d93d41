// Legacy conformance through the real relay (issue 13, point 6): the envelope without angle
// brackets (and `strictEnvelopes: true` restoring the 501), the postmaster recipient delivered
// to bounces.to, quoted local parts, 530 for AUTH before STARTTLS, one ESMTP in the greeting,
// and a failed TLS handshake logged once with the client's address.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { parseQueueId, rawSmtpSession } from '../helpers/client.js';
import { freePort, startRelay, type Relay } from '../helpers/relay.js';
import { waitUntil } from './relay-common.js';

const BOUNCES_TO = 'mail-admin@corp.example';

/** The outbox envelope (capture mode) of a queued message, once it is there. */
async function outboxEnvelope(relay: Relay, reply: string): Promise<{ from: string; to: string[] }> {
  const id = parseQueueId(reply);
  assert.ok(id, `a queue id in ${reply}`);
  const file = path.join(relay.spoolDir, 'outbox', `${id}.json`);
  const text = await waitUntil(`outbox envelope of ${id}`, () => fs.readFile(file, 'utf8').catch(() => ''));
  return JSON.parse(text) as { from: string; to: string[] };
}

describe('listener: legacy conformance', () => {
  let relay: Relay;
  let strictPort: number;
  let plainPort: number;

  before(async () => {
    strictPort = await freePort();
    plainPort = await freePort();
    relay = await startRelay({
      config: {
        listen: [
          { host: '127.0.0.1' },
          { host: '127.0.0.1', port: strictPort, strictEnvelopes: true },
          { host: '127.0.0.1', port: plainPort, starttls: false },
        ],
        allowlist: [{ cidr: '127.0.0.1/32', name: 'printers', allowedRecipientDomains: ['corp.example'] }],
        bounces: { to: BOUNCES_TO },
      },
    });
  });

  after(async () => {
    await relay?.stop();
  });

  test('the greeting has exactly one ESMTP', async () => {
    const [greeting = ''] = await rawSmtpSession(relay.port, ['QUIT']);
    assert.match(greeting, /^220 relay\.test ESMTP /);
    assert.equal(greeting.match(/ESMTP/g)?.length, 1, greeting);
  });

  test('MAIL FROM:addr and RCPT TO:addr without brackets are taken (250), and delivered as given', async () => {
    const replies = await rawSmtpSession(relay.port, [
      'EHLO printer.test',
      'MAIL FROM:scanner@corp.example SIZE=100',
      'RCPT TO:someone@corp.example',
      'DATA',
      'Subject: legacy\r\n\r\nscan\r\n.',
      'QUIT',
    ]);
    assert.match(replies[2] ?? '', /^250 /, 'MAIL FROM without brackets');
    assert.match(replies[3] ?? '', /^250 /, 'RCPT TO without brackets');
    assert.match(replies[5] ?? '', /^250 2\.0\.0 Ok: queued as /);
    const envelope = await outboxEnvelope(relay, replies[5]!);
    assert.equal(envelope.from, 'scanner@corp.example');
    assert.deepEqual(envelope.to, ['someone@corp.example']);
  });

  test('strictEnvelopes: true on a listener restores the 501 for a path without brackets', async () => {
    const replies = await rawSmtpSession(strictPort, [
      'EHLO printer.test',
      'MAIL FROM:scanner@corp.example',
      'MAIL FROM:<scanner@corp.example>',
      'RCPT TO:someone@corp.example',
      'RCPT TO:<someone@corp.example>',
      'QUIT',
    ]);
    assert.match(replies[2] ?? '', /^501 /);
    assert.match(replies[3] ?? '', /^250 /);
    assert.match(replies[4] ?? '', /^501 /);
    assert.match(replies[5] ?? '', /^250 /);
  });

  test('RCPT TO:<postmaster> and postmaster@ our hostname: 250, delivered to bounces.to', async () => {
    for (const postmaster of ['<postmaster>', '<Postmaster@relay.test>', 'postmaster']) {
      const replies = await rawSmtpSession(relay.port, [
        'EHLO printer.test',
        'MAIL FROM:<scanner@corp.example>',
        `RCPT TO:${postmaster}`,
        'DATA',
        'Subject: to the postmaster\r\n\r\nhello\r\n.',
        'QUIT',
      ]);
      assert.match(replies[3] ?? '', /^250 /, `RCPT TO:${postmaster}`);
      assert.match(replies[5] ?? '', /^250 2\.0\.0 Ok: queued as /);
      const envelope = await outboxEnvelope(relay, replies[5]!);
      assert.deepEqual(envelope.to, [BOUNCES_TO], postmaster);
    }
  });

  test('postmaster is for admitted sources only; a stranger is refused at MAIL', async () => {
    const replies = await rawSmtpSession(
      relay.port,
      ['EHLO stranger.test', 'MAIL FROM:<x@example.net>', 'RCPT TO:<postmaster>', 'QUIT'],
      { localAddress: '127.0.0.2' },
    );
    assert.match(replies[2] ?? '', /^550 5\.7\.1 /);
    assert.match(replies[3] ?? '', /^5\d\d /);
  });

  test('quoted local parts are read per RFC 5321, spaces and all', async () => {
    const replies = await rawSmtpSession(relay.port, [
      'EHLO printer.test',
      'MAIL FROM:<"scan desk"@corp.example> BODY=8BITMIME',
      'RCPT TO:<"john doe"@corp.example> NOTIFY=NEVER',
      'RCPT TO:"jane \\"j\\" doe"@corp.example',
      'DATA',
      'Subject: quoted\r\n\r\nhi\r\n.',
      'QUIT',
    ]);
    assert.match(replies[2] ?? '', /^250 /, replies[2]);
    assert.match(replies[3] ?? '', /^250 /, replies[3]);
    assert.match(replies[4] ?? '', /^250 /, replies[4]);
    const envelope = await outboxEnvelope(relay, replies[6]!);
    assert.equal(envelope.from, '"scan desk"@corp.example');
    assert.deepEqual(envelope.to, ['"john doe"@corp.example', '"jane \\"j\\" doe"@corp.example']);
  });

  test('a quoted local part holding @ is still a routing form (553), an unclosed quote a 501', async () => {
    const replies = await rawSmtpSession(relay.port, [
      'EHLO printer.test',
      'MAIL FROM:<scanner@corp.example>',
      'RCPT TO:<"a@b"@corp.example>',
      'RCPT TO:<"unclosed@corp.example>',
      'QUIT',
    ]);
    assert.match(replies[3] ?? '', /^553 5\.1\.3 .*quoted local parts/);
    assert.match(replies[4] ?? '', /^501 /);
  });

  test('AUTH before STARTTLS: 530 5.7.0 where STARTTLS is offered, 538 where there is none', async () => {
    const auth = `AUTH PLAIN ${Buffer.from('\0crm\0pw').toString('base64')}`;
    const replies = await rawSmtpSession(relay.port, ['EHLO client.test', auth, 'QUIT'], {
      localAddress: '127.0.0.2',
    });
    assert.doesNotMatch(replies[1] ?? '', /AUTH/, 'AUTH not offered before TLS');
    assert.equal(replies[2], '530 5.7.0 Must issue a STARTTLS command first');
    const plain = await rawSmtpSession(plainPort, ['EHLO client.test', auth, 'QUIT'], {
      localAddress: '127.0.0.2',
    });
    assert.match(plain[2] ?? '', /^538 5\.7\.11 /);
  });

  test('a failed TLS handshake is logged once, with the client address', async () => {
    const since = relay.output().length;
    await new Promise<void>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port: relay.port, localAddress: '127.0.0.5' });
      let buffer = '';
      socket.on('error', () => undefined);
      socket.on('close', () => resolve());
      socket.on('data', (chunk: Buffer) => {
        buffer += chunk.toString('latin1');
        if (/^220 .*\r\n$/.test(buffer)) socket.write('EHLO client.test\r\n');
        else if (/250 SIZE.*\r\n$/.test(buffer)) socket.write('STARTTLS\r\n');
        else if (/220 .*Ready to start TLS\r\n$/.test(buffer)) {
          // Not a TLS ClientHello: the handshake fails on the server's side.
          socket.write('this is not TLS at all\r\n\r\n');
          buffer = '';
        }
      });
      setTimeout(() => socket.destroy(), 3000).unref();
    });
    const [line] = await relay.waitForOutput(/.*"tls_failed".*/, 10_000, { since });
    assert.match(line, /"client":"127\.0\.0\.5"/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const lines = relay
      .output()
      .slice(since)
      .split('\n')
      .filter((l) => l.includes('"tls_failed"') || l.includes('"listener_error"'));
    assert.equal(lines.length, 1, lines.join('\n'));
    // A client that completes the handshake is not logged as a failure.
    const ok = await rawSmtpSession(relay.port, ['EHLO a.test', 'STARTTLS', 'EHLO a.test', 'QUIT'], {
      tls: { minVersion: 'TLSv1.2' } as tls.ConnectionOptions,
    });
    assert.match(ok[3] ?? '', /^250[- ]/);
  });
});
