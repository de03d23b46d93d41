// Sender rewriting through the real protocol (issue 3, acceptance 1 and 2): a client talks
// SMTP to the relay process, the relay delivers to the ESP stand-in, and the test looks at
// what the ESP received: envelope, From (display name kept), Reply-To, Date/Message-ID, body.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp, type EspMessage } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { header, headerValues, splitMessage, upstreamFor, waitUntil } from './relay-common.js';

const BODY = [
  'Scan attached.',
  '.a line starting with a dot',
  'Grüße: ünïcödé',
  'trailing spaces   ',
  'x'.repeat(500),
  'From: not a header, body text',
  '',
].join('\r\n');

function message(headers: string[]): Buffer {
  return Buffer.from(`${headers.join('\r\n')}\r\n\r\n${BODY}`, 'utf8');
}

describe('policy: sender rewriting (relay → ESP)', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        senders: { domains: ['corp.example'], default: 'noreply@corp.example' },
        allowlist: [
          { cidr: '127.0.0.1/32', name: 'floor3-printers', sender: 'scanner@corp.example' },
          { cidr: '127.0.0.3/32', name: 'apps' },
        ],
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  async function deliveredWithSubject(subject: string): Promise<EspMessage> {
    return waitUntil(`the ESP to receive "${subject}"`, () =>
      esp.messages.find((m) => header(m.raw, 'subject') === subject),
    );
  }

  test('fixed sender: envelope and From become scanner@corp.example, name kept, original in Reply-To, body identical', async () => {
    const raw = message([
      'From: Scanner <scan@printer.local>',
      'To: alice@corp.example',
      'Subject: acceptance-1',
    ]);
    const sent = await sendMail({
      port: relay.port,
      from: 'scan@printer.local',
      to: ['alice@corp.example'],
      raw,
    });
    assert.ok(sent.ok, sent.response);
    const got = await deliveredWithSubject('acceptance-1');
    assert.equal(got.from, 'scanner@corp.example');
    assert.deepEqual(got.to, ['alice@corp.example']);
    assert.deepEqual(addressparser(header(got.raw, 'from') ?? '', { flatten: true }), [
      { name: 'Scanner', address: 'scanner@corp.example' },
    ]);
    assert.deepEqual(
      addressparser(header(got.raw, 'reply-to') ?? '', { flatten: true }).map((m) => m.address),
      ['scan@printer.local'],
    );
    assert.equal(headerValues(got.raw, 'from').length, 1);
    assert.match(header(got.raw, 'date') ?? '', /^\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$/);
    assert.match(header(got.raw, 'message-id') ?? '', /^<[^<>@\s]+@relay\.test>$/);
    // splitMessage reads the bytes as latin1: back to bytes, compared with what was sent.
    const body = Buffer.from(splitMessage(got.raw).body, 'latin1');
    assert.ok(body.equals(Buffer.from(BODY, 'utf8')), `body byte-identical:\n${body.toString('utf8')}`);
  });

  test('an RFC 2047 encoded, folded display name is kept', async () => {
    const raw = message([
      'From: =?UTF-8?Q?=C3=89tage_3_MFP?=',
      ' <scan@printer.local>',
      'Subject: encoded-name',
    ]);
    const sent = await sendMail({
      port: relay.port,
      from: 'scan@printer.local',
      to: ['alice@corp.example'],
      raw,
    });
    assert.ok(sent.ok, sent.response);
    const got = await deliveredWithSubject('encoded-name');
    const [from] = addressparser(header(got.raw, 'from') ?? '', { flatten: true });
    assert.equal(from?.address, 'scanner@corp.example');
    const { default: libmime } = await import('libmime');
    assert.equal(libmime.decodeWords(from?.name ?? ''), 'Étage 3 MFP');
  });

  test('a sender already in senders.domains is not rewritten', async () => {
    const raw = message([
      'From: "Alice A." <alice@corp.example>',
      'Subject: acceptance-2',
      'Date: Mon, 01 Jan 2024 10:00:00 +0100',
    ]);
    const sent = await sendMail({
      port: relay.port,
      localAddress: '127.0.0.3',
      from: 'alice@corp.example',
      to: ['bob@example.com'],
      raw,
    });
    assert.ok(sent.ok, sent.response);
    const got = await deliveredWithSubject('acceptance-2');
    assert.equal(got.from, 'alice@corp.example');
    assert.equal(header(got.raw, 'from'), '"Alice A." <alice@corp.example>');
    assert.equal(header(got.raw, 'reply-to'), undefined);
    assert.equal(header(got.raw, 'date'), 'Mon, 01 Jan 2024 10:00:00 +0100');
  });

  test('a sender outside senders.domains becomes senders.default; an existing Reply-To is kept', async () => {
    const raw = message([
      'From: Bob <bob@other.example>',
      'Reply-To: helpdesk@corp.example',
      'Subject: default-sender',
    ]);
    const sent = await sendMail({
      port: relay.port,
      localAddress: '127.0.0.3',
      from: 'bob@other.example',
      to: ['x@example.com'],
      raw,
    });
    assert.ok(sent.ok, sent.response);
    const got = await deliveredWithSubject('default-sender');
    assert.equal(got.from, 'noreply@corp.example');
    assert.deepEqual(addressparser(header(got.raw, 'from') ?? '', { flatten: true }), [
      { name: 'Bob', address: 'noreply@corp.example' },
    ]);
    assert.deepEqual(headerValues(got.raw, 'reply-to'), ['helpdesk@corp.example']);
  });

  test('the null sender stays null', async () => {
    const raw = message(['From: Scanner <scan@printer.local>', 'Subject: null-sender']);
    const sent = await sendMail({ port: relay.port, from: '', to: ['alice@corp.example'], raw });
    assert.ok(sent.ok, sent.response);
    const got = await deliveredWithSubject('null-sender');
    assert.equal(got.from, '');
    assert.equal(
      addressparser(header(got.raw, 'from') ?? '', { flatten: true })[0]?.address,
      'scanner@corp.example',
    );
  });

  test('the rewrite is logged with the queue id', async () => {
    const [line] = await relay.waitForOutput(/.*sender rewritten.*/);
    assert.match(line, /scan@printer\.local/);
  });
});
