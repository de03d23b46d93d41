// SMTPUTF8 (RFC 6531) on the way out, through the real relay: passed on MAIL to an ESP that
// offers it; to one that does not, a message that needs it (a non-ASCII address or header
// field) fails for good with a 5.6.7 bounce instead of being sent raw, and an all-ASCII message
// that merely asked for it is delivered.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { explained, header, openConversation, sleep, upstreamFor, waitUntil } from './relay-common.js';

/** One message over a raw session (UTF-8 on the wire); returns the reply to each command. */
async function converse(port: number, lines: string[], body: string): Promise<string[]> {
  const c = await openConversation(port);
  const replies: string[] = [];
  try {
    replies.push(await c.command('EHLO client.test'));
    for (const line of lines) replies.push(await c.command(line));
    if (replies.every((r) => r.startsWith('250'))) {
      replies.push(await c.command('DATA'));
      replies.push(await c.command(`${body}\r\n.`));
    }
    await c.command('QUIT').catch(() => undefined);
  } finally {
    c.destroy();
  }
  return replies;
}

const config = (esp: Esp) => ({
  upstream: upstreamFor(esp),
  senders: { domains: ['corp.example'] },
  queue: { retry: ['1s'] },
});

const bodyText = (m: { raw: Buffer }) => m.raw.toString('utf8');

describe('SMTPUTF8 to an ESP that does not offer it', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp({ smtpUtf8: false });
    relay = await startRelay({ config: config(esp) });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('a non-ASCII address: not sent, a 5.6.7 bounce says why', async () => {
    const replies = await converse(
      relay.port,
      ['MAIL FROM:<app@corp.example> SMTPUTF8', 'RCPT TO:<josé@example.com>'],
      'Subject: utf8-address\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const bounce = await explained(
      relay,
      waitUntil('the bounce', () =>
        esp.messages.find((m) => m.from === '' && bodyText(m).includes('utf8-address')),
      ),
    );
    assert.deepEqual(bounce.to, ['app@corp.example']);
    const text = bodyText(bounce);
    assert.match(text, /^Status: 5\.6\.7\r$/m);
    assert.match(text, /the upstream does not support SMTPUTF8; the message has non-ASCII addresses/);
    assert.ok(
      !esp.messages.some((m) => header(m.raw, 'subject') === 'utf8-address'),
      'the message itself was sent raw',
    );
  });

  test('non-ASCII header fields with ASCII addresses: not sent either', async () => {
    const replies = await converse(
      relay.port,
      ['MAIL FROM:<app@corp.example> SMTPUTF8', 'RCPT TO:<b@example.com>'],
      'Subject: utf8-header\r\nTo: Zoë <b@example.com>\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const bounce = await explained(
      relay,
      waitUntil('the bounce', () =>
        esp.messages.find((m) => m.from === '' && bodyText(m).includes('utf8-header')),
      ),
    );
    assert.match(bodyText(bounce), /the message has non-ASCII header fields/);
    assert.ok(!esp.messages.some((m) => header(m.raw, 'subject') === 'utf8-header'));
  });

  test('all ASCII, SMTPUTF8 only asked for: delivered, without it', async () => {
    const replies = await converse(
      relay.port,
      ['MAIL FROM:<app@corp.example> SMTPUTF8', 'RCPT TO:<c@example.com>'],
      'Subject: utf8-ascii\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const got = await explained(
      relay,
      waitUntil('the message', () => esp.messages.find((m) => header(m.raw, 'subject') === 'utf8-ascii')),
    );
    assert.equal(got.smtpUtf8, false);
    await sleep(500);
    assert.ok(!esp.messages.some((m) => m.from === '' && bodyText(m).includes('utf8-ascii')), 'bounced');
  });
});

describe('SMTPUTF8 to an ESP that offers it', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({ config: config(esp) });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('passed on MAIL; the UTF-8 address and header arrive as sent', async () => {
    const replies = await converse(
      relay.port,
      ['MAIL FROM:<app@corp.example> SMTPUTF8', 'RCPT TO:<josé@example.com>'],
      'Subject: utf8-pass\r\nTo: José <josé@example.com>\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const got = await explained(
      relay,
      waitUntil('the message', () => esp.messages.find((m) => header(m.raw, 'subject') === 'utf8-pass')),
    );
    assert.equal(got.smtpUtf8, true);
    assert.deepEqual(got.to, ['josé@example.com']);
    assert.match(bodyText(got), /^To: José <josé@example\.com>\r$/m);
  });

  test('all ASCII: SMTPUTF8 still passed on, as the client asked', async () => {
    const replies = await converse(
      relay.port,
      ['MAIL FROM:<app@corp.example> SMTPUTF8', 'RCPT TO:<d@example.com>'],
      'Subject: utf8-ascii-pass\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const got = await explained(
      relay,
      waitUntil('the message', () =>
        esp.messages.find((m) => header(m.raw, 'subject') === 'utf8-ascii-pass'),
      ),
    );
    assert.equal(got.smtpUtf8, true);
  });
});
