// Issue 12's DSN acceptance (RFC 3461), through the real relay with a raw client: EHLO offers
// DSN; RET/ENVID and NOTIFY/ORCPT reach a DSN-capable ESP on its MAIL and RCPT lines;
// NOTIFY=NEVER with a 550 from the ESP makes no bounce; an unknown parameter gets 555 5.5.4;
// a rewritten sender's bounce goes to bounces.to, and a bounce that fails is never bounced.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { explained, header, openConversation, sleep, upstreamFor, waitUntil } from './relay-common.js';
import { sendMail } from '../helpers/client.js';

/** One message over a raw session; returns the reply to each command. */
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

describe('DSN (RFC 3461)', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp({ dsn: true });
    esp.onRcpt = (address) =>
      address.startsWith('nobody') ? { code: 550, message: '5.1.1 No such user here' } : undefined;
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        senders: { domains: ['corp.example'], default: 'noreply@corp.example' },
        bounces: { to: 'postmaster@corp.example' },
        queue: { retry: ['1s'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('EHLO lists DSN; an unknown parameter gets 555 5.5.4 naming it', async () => {
    const c = await openConversation(relay.port);
    try {
      const ehlo = await c.command('EHLO client.test');
      assert.match(ehlo, /^250[ -]DSN$/m);
      const mail = await c.command('MAIL FROM:<app@corp.example> FOO=bar');
      assert.match(mail, /^555 5\.5\.4 .*FOO/);
      const ok = await c.command('MAIL FROM:<app@corp.example>');
      assert.match(ok, /^250/);
      const rcpt = await c.command('RCPT TO:<a@example.com> BAR=1');
      assert.match(rcpt, /^555 5\.5\.4 .*BAR/);
    } finally {
      c.destroy();
    }
  });

  test('RET, ENVID, NOTIFY and ORCPT reach the ESP', async () => {
    const replies = await converse(
      relay.port,
      [
        'MAIL FROM:<app@corp.example> RET=HDRS ENVID=x',
        'RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.com',
      ],
      'Subject: dsn-pass\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const got = await explained(
      relay,
      waitUntil('the message at the ESP', () =>
        esp.messages.find((m) => header(m.raw, 'subject') === 'dsn-pass'),
      ),
    );
    assert.equal(got.dsn?.ret, 'HDRS');
    assert.equal(got.dsn?.envid, 'x');
    assert.deepEqual(got.dsn?.recipients[0]?.notify, ['SUCCESS', 'FAILURE']);
    assert.match(got.dsn?.recipients[0]?.orcpt ?? '', /^rfc822;a@example\.com$/i);
  });

  test('two recipients: each RCPT TO line carries its own NOTIFY and ORCPT, xtext kept', async () => {
    const replies = await converse(
      relay.port,
      [
        'MAIL FROM:<app@corp.example>',
        'RCPT TO:<one@example.com> NOTIFY=SUCCESS ORCPT=rfc822;first+2B41@example.com',
        'RCPT TO:<two@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;second+3Dx@example.com',
        'RCPT TO:<three@example.com>',
      ],
      'Subject: dsn-each\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const got = await explained(
      relay,
      waitUntil('the message at the ESP', () =>
        esp.messages.find((m) => header(m.raw, 'subject') === 'dsn-each'),
      ),
    );
    assert.deepEqual(got.to, ['one@example.com', 'two@example.com', 'three@example.com']);
    // The ESP decodes xtext: "+41" arrives as sent only if the relay encoded its "+" again.
    assert.deepEqual(got.dsn?.recipients, [
      { notify: ['SUCCESS'], orcpt: 'rfc822;first+41@example.com' },
      { notify: ['FAILURE', 'DELAY'], orcpt: 'rfc822;second=x@example.com' },
      { notify: undefined, orcpt: undefined },
    ]);
  });

  test('NOTIFY=NEVER and a 550 from the ESP: no bounce', async () => {
    const replies = await converse(
      relay.port,
      ['MAIL FROM:<app@corp.example>', 'RCPT TO:<nobody1@example.com> NOTIFY=NEVER'],
      'Subject: dsn-never\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const id = /queued as (\S+)/.exec(replies.at(-1)!)![1]!;
    await relay.waitForOutput(
      new RegExp(`bounce_not_requested[^\\n]*${id}|${id}[^\\n]*bounce_not_requested`),
      20_000,
    );
    await sleep(1500);
    assert.ok(
      !esp.messages.some((m) => m.from === '' && m.raw.toString('latin1').includes(id)),
      'a bounce was sent for NOTIFY=NEVER',
    );
  });

  test('a rewritten sender: the bounce goes to bounces.to, with ENVID and ORCPT echoed', async () => {
    const replies = await converse(
      relay.port,
      [
        'MAIL FROM:<scan@printer.local> ENVID=scan-42',
        'RCPT TO:<nobody2@example.com> ORCPT=rfc822;nobody2@example.com',
      ],
      'Subject: dsn-rewritten\r\n\r\nhello',
    );
    assert.match(replies.at(-1)!, /^250/, replies.join('\n'));
    const bounce = await explained(
      relay,
      waitUntil('the bounce', () =>
        esp.messages.find((m) => m.from === '' && m.raw.toString('latin1').includes('dsn-rewritten')),
      ),
    );
    assert.deepEqual(bounce.to, ['postmaster@corp.example']);
    const text = bounce.raw.toString('latin1');
    assert.match(text, /^Original-Envelope-Id: scan-42\r$/m);
    assert.match(text, /^Original-Recipient: rfc822;nobody2@example\.com\r$/m);
  });

  test('an in-domain sender left as it was gets its own bounce', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'app@corp.example',
      to: ['nobody3@example.com'],
      subject: 'dsn-own',
    });
    assert.ok(sent.ok, sent.response);
    const bounce = await explained(
      relay,
      waitUntil('the bounce', () =>
        esp.messages.find((m) => m.from === '' && m.raw.toString('latin1').includes('dsn-own')),
      ),
    );
    assert.deepEqual(bounce.to, ['app@corp.example']);
  });

  test('hostile parameters: each refused with a 5xx, the session goes on', async () => {
    const c = await openConversation(relay.port);
    try {
      await c.command('EHLO client.test');
      for (const line of [
        'MAIL FROM:<app@corp.example> ENVID=a+0D+0AMAIL',
        'MAIL FROM:<app@corp.example> RET=HDRS RET=FULL',
        `MAIL FROM:<app@corp.example> ENVID=${'x'.repeat(5000)}`,
        'MAIL FROM:<app@corp.example> =x',
        'MAIL FROM:<app@corp.example> RET=',
        'MAIL FROM:<app@corp.example> RET=BOTH',
      ]) {
        assert.match(await c.command(line), /^5\d\d 5\.\d\.\d /, line.slice(0, 60));
      }
      assert.match(await c.command('MAIL FROM:<app@corp.example>'), /^250/);
      for (const line of [
        'RCPT TO:<a@example.com> NOTIFY=NEVER,SUCCESS',
        'RCPT TO:<a@example.com> NOTIFY=SOMETIMES',
        'RCPT TO:<a@example.com> ORCPT=a@example.com',
        'RCPT TO:<a@example.com> NOTIFY=FAILURE NOTIFY=DELAY',
      ]) {
        assert.match(await c.command(line), /^5\d\d 5\.\d\.\d /, line);
      }
      assert.match(await c.command('RCPT TO:<a@example.com> NOTIFY=FAILURE'), /^250/);
    } finally {
      c.destroy();
    }
  });
});
