// BODY=8BITMIME (RFC 6152) on the way out, through the real relay: a message with 8-bit bytes
// leaves with the parameter whether its client declared it or (as many devices do) did not,
// also when its body is read back from the disk (past 64 KB, or after a retry split its
// files); an all-ASCII message leaves without it; an ESP that does not offer 8BITMIME gets
// the message as it is, byte for byte.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEsp, type Esp, type EspMessage } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { explained, openConversation, upstreamFor, waitUntil } from './relay-common.js';

/** One message over a raw session, the body written as UTF-8; returns the final reply. */
async function send(port: number, mailFrom: string, body: string): Promise<string> {
  const c = await openConversation(port);
  try {
    await c.command('EHLO device.test');
    for (const line of [mailFrom, 'RCPT TO:<desk@example.com>', 'DATA']) {
      const reply = await c.command(line);
      if (!/^(250|354)/.test(reply)) return reply;
    }
    const reply = await c.command(`${body}\r\n.`);
    await c.command('QUIT').catch(() => undefined);
    return reply;
  } finally {
    c.destroy();
  }
}

const message = (subject: string, text: string) =>
  `Subject: ${subject}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${text}`;

const config = (esp: Esp) => ({ upstream: upstreamFor(esp), queue: { retry: ['1s'] } });

async function delivered(relay: Relay, esp: Esp, subject: string): Promise<EspMessage> {
  return explained(
    relay,
    waitUntil(`"${subject}" at the ESP`, () =>
      esp.messages.find((m) => m.raw.toString('latin1').includes(`Subject: ${subject}\r\n`)),
    ),
  );
}

describe('BODY=8BITMIME to an ESP that offers 8BITMIME', () => {
  let esp: Esp;
  let relay: Relay;
  let refuseOnce: string | undefined;

  before(async () => {
    esp = await startEsp();
    esp.onData = (m) => {
      if (!refuseOnce || !m.raw.toString('latin1').includes(refuseOnce)) return undefined;
      refuseOnce = undefined;
      return { code: 451, message: '4.3.0 try again later' };
    };
    relay = await startRelay({ config: config(esp) });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('declared by the client: passed on', async () => {
    const reply = await send(
      relay.port,
      'MAIL FROM:<scan@corp.test> BODY=8BITMIME',
      message('declared', 'Grüße'),
    );
    assert.match(reply, /^250/);
    const m = await delivered(relay, esp, 'declared');
    assert.equal(m.bodyType, '8bitmime');
    assert.ok(m.raw.includes(Buffer.from('Grüße')), 'the 8-bit text arrived as sent');
  });

  test('not declared, 8-bit bytes in the body: declared on the way out', async () => {
    const reply = await send(relay.port, 'MAIL FROM:<scan@corp.test>', message('undeclared', 'Çà et là'));
    assert.match(reply, /^250/);
    assert.equal((await delivered(relay, esp, 'undeclared')).bodyType, '8bitmime');
  });

  test('all ASCII, not declared: no BODY parameter', async () => {
    const reply = await send(relay.port, 'MAIL FROM:<scan@corp.test>', message('ascii-only', 'plain text'));
    assert.match(reply, /^250/);
    assert.equal((await delivered(relay, esp, 'ascii-only')).bodyType, '7bit');
  });

  test('past 64 KB, the one 8-bit byte last: found, and the body read from disk', async () => {
    const text = `${'seven bits only, line after line\r\n'.repeat(3000)}fin: é`;
    const reply = await send(relay.port, 'MAIL FROM:<scan@corp.test>', message('large-8bit', text));
    assert.match(reply, /^250/);
    const m = await delivered(relay, esp, 'large-8bit');
    assert.equal(m.bodyType, '8bitmime');
    assert.ok(m.raw.length > 100_000, `the whole body arrived (${m.raw.length} bytes)`);
  });

  test('after a retry (the message split into .json and .eml): still declared', async () => {
    refuseOnce = 'Subject: retried';
    const reply = await send(relay.port, 'MAIL FROM:<scan@corp.test>', message('retried', 'naïve'));
    assert.match(reply, /^250/);
    const m = await delivered(relay, esp, 'retried');
    assert.equal(refuseOnce, undefined, 'the first attempt was refused');
    assert.equal(m.bodyType, '8bitmime');
  });
});

describe('an ESP that does not offer 8BITMIME', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp({ eightBitMime: false });
    relay = await startRelay({ config: config(esp) });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('gets the message as it is, without the parameter', async () => {
    const reply = await send(
      relay.port,
      'MAIL FROM:<scan@corp.test> BODY=8BITMIME',
      message('no-8bitmime', 'Grüße'),
    );
    assert.match(reply, /^250/);
    const m = await delivered(relay, esp, 'no-8bitmime');
    assert.equal(m.bodyType, '7bit');
    assert.ok(m.raw.includes(Buffer.from('Grüße')), 'the text arrived unchanged');
  });
});
