// Acceptance 2 and 3 of issue 2, through the real protocol: the relay (a child process) delivers
// to the ESP stand-in over STARTTLS + AUTH, trusting its certificate through `upstream.ca`.
//  2. a message from an allowlisted address arrives with the same envelope and the message
//     unchanged apart from the trace headers (Received prepended; Date and Message-ID added
//     only when missing);
//  3. a client outside the allowlist is refused with 5.7.1 unless it authenticates over TLS,
//     and AUTH is neither offered nor accepted on a plain connection.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hashPassword } from '../../src/policy/passwords.js';
import { rawSmtpSession, sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import {
  filesIn,
  headerFields,
  openConversation,
  queuedIds,
  upstreamFor,
  waitUntil,
} from './relay-common.js';

const CRM_PASSWORD = 'crm-password-1';

function authPlain(user: string, pass: string): string {
  return `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;
}

/** A message with the things a careless relay breaks: folding, odd spacing, dots, 8-bit text. */
function trickyMessage(subject: string, withDateAndId: boolean): Buffer {
  const lines = [
    'From: Scanner Floor 3 <scanner@corp.example>',
    'To: alice@example.com,',
    '  bob@example.com',
    `Subject: ${subject}`,
    ...(withDateAndId
      ? ['Date: Mon, 01 Jan 2024 10:00:00 +0100', `Message-ID: <${subject}@corp.example>`]
      : []),
    'X-Odd-Spacing:    kept   as   is   ',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'First line.',
    '.a line starting with a dot',
    '..and one with two',
    '.',
    'Grüße aus dem Büro: ünïcödé',
    'trailing spaces   ',
    '\tleading tab',
    'x'.repeat(900),
    '',
    'Received: this is body text, not a header',
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'utf8');
}

describe('relay: delivery to an upstream requiring STARTTLS and AUTH', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        allowlist: [{ cidr: '127.0.0.1/32', name: 'this-host' }],
        users: [{ name: 'crm', password: await hashPassword(CRM_PASSWORD) }],
        queue: { retry: ['1s'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  const bySubject = (subject: string) =>
    esp.messages.filter((m) => headerFields(m.raw).some((f) => f.name === 'subject' && f.value === subject));

  test('same envelope; the message unchanged but for a Received line on top (Date, Message-ID kept)', async () => {
    const original = trickyMessage('unchanged-with-date', true);
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['alice@example.com', 'bob@example.com'],
      raw: original,
    });
    assert.ok(sent.ok, sent.response);
    const got = await waitUntil('the message at the ESP', () => bySubject('unchanged-with-date')[0]);
    assert.equal(got.from, 'scanner@corp.example');
    assert.deepEqual(got.to, ['alice@example.com', 'bob@example.com']);
    assert.equal(got.secure, true, 'delivered over TLS');
    assert.equal(got.user, esp.user, 'delivered with AUTH');

    const raw = got.raw.toString('latin1');
    const fields = headerFields(got.raw);
    assert.equal(fields[0]?.name, 'received', 'a Received header comes first');
    assert.match(fields[0]!.value, /^from client\.test \(\[127\.0\.0\.1\]\) by relay\.test .* id /);
    assert.ok(fields[0]!.value.includes(sent.queueId!), 'the trace line names the queue id');
    assert.equal(fields.filter((f) => f.name === 'received').length, 1);
    // Take the trace line off: what is left is the message byte for byte.
    assert.equal(raw.slice(fields[0]!.raw.length + 2), original.toString('latin1'));
    assert.ok(got.raw.subarray(fields[0]!.raw.length + 2).equals(original));
  });

  test('Date and Message-ID are added when missing, and only those', async () => {
    const original = trickyMessage('without-date', false);
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['carol@example.com'],
      raw: original,
    });
    assert.ok(sent.ok, sent.response);
    const got = await waitUntil('the message at the ESP', () => bySubject('without-date')[0]);
    assert.equal(got.from, 'scanner@corp.example');
    assert.deepEqual(got.to, ['carol@example.com']);

    const fields = headerFields(got.raw);
    assert.equal(fields[0]?.name, 'received');
    // With one recipient the trace line may name it (RFC 5321 "for").
    assert.match(fields[0]!.value, /for <carol@example\.com>/);
    const dates = fields.filter((f) => f.name === 'date');
    const ids = fields.filter((f) => f.name === 'message-id');
    assert.equal(dates.length, 1, 'one Date added');
    assert.equal(ids.length, 1, 'one Message-ID added');
    assert.ok(!Number.isNaN(Date.parse(dates[0]!.value)), `a valid date: ${dates[0]!.value}`);
    assert.match(ids[0]!.value, /^<[^<>@\s]+@relay\.test>$/);

    // Without the three added fields, the headers and the body are exactly the original.
    const added = new Set([fields[0], dates[0], ids[0]]);
    const kept = fields.filter((f) => !added.has(f)).map((f) => f.raw);
    const originalFields = headerFields(original).map((f) => f.raw);
    assert.deepEqual(kept, originalFields);
    const bodyAt = got.raw.indexOf('\r\n\r\n');
    assert.ok(bodyAt > 0);
    assert.ok(got.raw.subarray(bodyAt).equals(original.subarray(original.indexOf('\r\n\r\n'))), 'same body');
  });

  test('an old device with bare LF line ends and an SMTPUTF8 envelope: CRLF out, envelope as given', async () => {
    const session = await openConversation(relay.port);
    try {
      assert.match(await session.command('EHLO old-device'), /SMTPUTF8/);
      assert.match(await session.command('MAIL FROM:<josé@corp.example> SMTPUTF8'), /^250 /);
      assert.match(await session.command('RCPT TO:<müller@example.com>'), /^250 /);
      assert.match(await session.command('DATA'), /^354 /);
      session.write('Subject: bare-lf\nFrom: josé@corp.example\n\nline one\n.line two\n\nend\r\n');
      assert.match(await session.command('.'), /^250 2\.0\.0 /);
      assert.match(await session.command('QUIT'), /^221 /);
    } finally {
      session.destroy();
    }
    const got = await waitUntil('the message at the ESP', () => bySubject('bare-lf')[0]);
    assert.equal(got.from, 'josé@corp.example');
    assert.deepEqual(got.to, ['müller@example.com']);
    const raw = got.raw.toString('utf8');
    assert.doesNotMatch(raw, /(?<!\r)\n/, 'no bare LF reaches the ESP');
    assert.match(raw, /\r\nSubject: bare-lf\r\nFrom: josé@corp\.example\r\n/);
    assert.match(raw, /\r\n\r\nline one\r\n\.line two\r\n\r\nend\r\n$/);
  });

  /** The earlier tests' messages leave queue/ only once the ESP's 250 is read: wait for that. */
  const queueDrained = () =>
    waitUntil(
      'the earlier messages out of the queue',
      async () => (await queuedIds(relay.spoolDir)).length === 0,
    );

  test('a client outside the allowlist without AUTH is refused with 5.7.1 and nothing is queued', async () => {
    await queueDrained();
    const sent = await sendMail({
      port: relay.port,
      localAddress: '127.0.0.2',
      from: 'intruder@corp.example',
      to: ['victim@example.com'],
      subject: 'refused-no-auth',
    });
    assert.equal(sent.ok, false, 'an outsider must not be able to send');
    assert.ok(!sent.ok);
    assert.equal(sent.code, 550, sent.response);
    assert.match(sent.response, /\b5\.7\.1\b/);
    // A refusal is final before any 250, so nothing can be on its way to the disk.
    assert.deepEqual(await queuedIds(relay.spoolDir), []);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'tmp')), []);

    // The same outsider, plain SMTP to the end: every step refused, DATA never reached.
    const replies = await rawSmtpSession(
      relay.port,
      ['EHLO outsider.test', 'MAIL FROM:<intruder@corp.example>', 'RCPT TO:<victim@example.com>', 'DATA'],
      { localAddress: '127.0.0.2' },
    );
    assert.match(replies[2] ?? '', /^550 5\.7\.1 /);
    assert.match(replies[3] ?? '', /^5\d\d /);
    assert.match(replies[4] ?? '', /^5\d\d /);
    assert.deepEqual(await queuedIds(relay.spoolDir), []);
  });

  test('the same client is accepted once it authenticates over STARTTLS, and the mail is delivered', async () => {
    const wrong = await sendMail({
      port: relay.port,
      localAddress: '127.0.0.2',
      requireTls: true,
      auth: { user: 'crm', pass: 'not-the-password' },
      from: 'crm@corp.example',
      to: ['customer@example.com'],
      subject: 'refused-bad-password',
    });
    assert.equal(wrong.ok, false);
    assert.ok(!wrong.ok);
    assert.equal(wrong.code, 535, wrong.response);

    const sent = await sendMail({
      port: relay.port,
      localAddress: '127.0.0.2',
      requireTls: true,
      auth: { user: 'crm', pass: CRM_PASSWORD },
      from: 'crm@corp.example',
      to: ['customer@example.com'],
      subject: 'accepted-with-auth',
    });
    assert.ok(sent.ok, sent.response);
    const got = await waitUntil(
      'the authenticated message at the ESP',
      () => bySubject('accepted-with-auth')[0],
    );
    assert.equal(got.from, 'crm@corp.example');
    assert.deepEqual(got.to, ['customer@example.com']);
    assert.match(headerFields(got.raw)[0]!.value, /\[127\.0\.0\.2\].* with ESMTPSA /);
    // Neither refused message went anywhere.
    assert.equal(bySubject('refused-no-auth').length, 0);
    assert.equal(bySubject('refused-bad-password').length, 0);
  });

  test('AUTH is not offered on a plain connection, and an attempt is refused', async () => {
    await queueDrained();
    const plain = await rawSmtpSession(relay.port, ['EHLO outsider.test', authPlain('crm', CRM_PASSWORD)], {
      localAddress: '127.0.0.2',
    });
    assert.match(plain[1] ?? '', /STARTTLS/, 'STARTTLS is offered');
    assert.doesNotMatch(plain[1] ?? '', /AUTH/, 'AUTH is not advertised before TLS');
    assert.match(plain[2] ?? '', /^5\d\d /, `AUTH in clear text must fail, got ${plain[2]}`);

    // Also with a real client that does not do TLS.
    const cleartext = await sendMail({
      port: relay.port,
      localAddress: '127.0.0.2',
      ignoreTls: true,
      auth: { user: 'crm', pass: CRM_PASSWORD },
      from: 'crm@corp.example',
      to: ['customer@example.com'],
      subject: 'refused-cleartext-auth',
    });
    assert.equal(cleartext.ok, false, 'AUTH without TLS must not let the client send');

    // The control: after STARTTLS the same AUTH succeeds.
    const secure = await rawSmtpSession(
      relay.port,
      ['EHLO outsider.test', 'STARTTLS', 'EHLO outsider.test', authPlain('crm', CRM_PASSWORD), 'QUIT'],
      { localAddress: '127.0.0.2' },
    );
    assert.match(secure[3] ?? '', /AUTH PLAIN LOGIN/);
    assert.match(secure[4] ?? '', /^235 /);
    assert.deepEqual(await queuedIds(relay.spoolDir), []);
    assert.equal(bySubject('refused-cleartext-auth').length, 0);
  });
});
