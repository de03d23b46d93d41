// RFC 3464 delivery status notifications: structure, per-recipient status, injection safety,
// and reading just the header block of a stored message.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { buildDsn, readHeaderBlock, statusOf } from '../../src/bounce/dsn.js';
import { makeTempDir } from '../helpers/tmp.js';

const NOW = new Date(Date.UTC(2026, 10, 29, 12, 0, 0));
const ORIGINAL_HEADERS = Buffer.from('From: app@corp.example\r\nSubject: the report\r\n\r\n');

function dsn(failed: Parameters<typeof buildDsn>[0]['failed']): string {
  return buildDsn({
    hostname: 'relay.test',
    queueId: 'Q1',
    to: 'app@corp.example',
    arrivalDate: new Date(Date.UTC(2026, 10, 28, 12, 0, 0)),
    failed,
    originalHeaders: ORIGINAL_HEADERS,
    now: NOW,
  }).toString('latin1');
}

/** The parts of a multipart body, by its boundary. */
function parts(message: string): { headers: string; body: string }[] {
  const boundary = /boundary="([^"]+)"/.exec(message)?.[1];
  assert.ok(boundary, 'a boundary');
  const sections = message.split(`\r\n--${boundary}`);
  assert.equal(sections[sections.length - 1], '--\r\n', 'closed by the final boundary');
  return sections.slice(1, -1).map((section) => {
    const text = section.replace(/^\r\n/, '');
    const end = text.indexOf('\r\n\r\n');
    return { headers: text.slice(0, end), body: text.slice(end + 4) };
  });
}

describe('statusOf', () => {
  test('the enhanced code of a 5xx reply, 5.0.0 without one, 4.4.7 when it expired', () => {
    assert.equal(statusOf({ address: 'a', reply: '550 5.1.1 No such user' }), '5.1.1');
    assert.equal(statusOf({ address: 'a', reply: '552-5.3.4 Too big' }), '5.3.4');
    assert.equal(statusOf({ address: 'a', reply: '550 No such user' }), '5.0.0');
    assert.equal(statusOf({ address: 'a', reply: 'ECONNECTION: refused' }), '5.0.0');
    assert.equal(statusOf({ address: 'a', reply: '451 4.3.0 later', expired: true }), '4.4.7');
    // A 4.x.x code is not a permanent status: never report it as the final one.
    assert.equal(statusOf({ address: 'a', reply: '550 4.2.2 odd server' }), '5.0.0');
  });
});

describe('buildDsn', () => {
  test('a multipart/report with a readable part, the delivery status and the original headers', () => {
    const message = dsn([{ address: 'nobody@example.com', reply: '550 5.1.1 No such user' }]);
    assert.doesNotMatch(message, /(?<!\r)\n/, 'CRLF line ends only');
    const head = message.slice(0, message.indexOf('\r\n\r\n'));
    assert.match(head, /^From: Mail Delivery System <MAILER-DAEMON@relay\.test>$/m);
    assert.match(head, /^To: <app@corp\.example>\r$/m);
    assert.match(head, /^Auto-Submitted: auto-replied\r$/m);
    assert.match(head, /^Date: Sun, 29 Nov 2026 12:00:00 \+0000\r$/m);
    assert.match(head, /^Content-Type: multipart\/report; report-type=delivery-status; boundary="/m);

    const [text, status, original, ...rest] = parts(message);
    assert.equal(rest.length, 0);
    assert.match(text!.headers, /^Content-Type: text\/plain/);
    assert.match(text!.body, /<nobody@example\.com>: 550 5\.1\.1 No such user/);
    assert.equal(status!.headers, 'Content-Type: message/delivery-status');
    const [perMessage, perRecipient] = status!.body.split('\r\n\r\n');
    assert.match(perMessage!, /^Reporting-MTA: dns; relay\.test\r\n/);
    assert.match(perMessage!, /Arrival-Date: Sat, 28 Nov 2026 12:00:00 \+0000/);
    assert.deepEqual(perRecipient!.replace(/(\r\n)+$/, '').split('\r\n'), [
      'Final-Recipient: rfc822; nobody@example.com',
      'Action: failed',
      'Status: 5.1.1',
      'Diagnostic-Code: smtp; 550 5.1.1 No such user',
      'Last-Attempt-Date: Sun, 29 Nov 2026 12:00:00 +0000',
    ]);
    assert.equal(original!.headers, 'Content-Type: text/rfc822-headers');
    assert.match(original!.body, /^From: app@corp\.example\r\nSubject: the report\r\n/);
  });

  test('one status block per failed recipient; an expired one says so', () => {
    const message = dsn([
      { address: 'a@example.com', reply: '550 5.1.1 gone' },
      { address: 'b@example.com', reply: '451 4.4.1 no answer', expired: true },
    ]);
    const status = parts(message)[1]!.body;
    assert.equal(status.match(/^Final-Recipient:/gm)?.length, 2);
    assert.match(status, /Final-Recipient: rfc822; b@example\.com\r\nAction: failed\r\nStatus: 4\.4\.7/);
    assert.match(parts(message)[0]!.body, /<b@example\.com>: could not be delivered for too long/);
  });

  test('addresses and replies cannot inject header lines', () => {
    const message = dsn([
      { address: 'x@example.com\r\nBcc: evil@example.com', reply: '550 no\r\nX-Evil: 1' },
    ]);
    assert.doesNotMatch(message, /^Bcc:/m);
    assert.doesNotMatch(message, /^X-Evil:/m);
  });
});

describe('readHeaderBlock', () => {
  test('reads up to and including the end of the headers, not the body', async () => {
    const dir = await makeTempDir('dsn');
    const file = path.join(dir, 'm.eml');
    await fs.writeFile(file, 'Subject: a\r\nTo: b\r\n\r\nbody\r\n\r\nmore\r\n');
    assert.equal((await readHeaderBlock(file)).toString(), 'Subject: a\r\nTo: b\r\n');
  });

  test('stops at the limit when the headers never end', async () => {
    const dir = await makeTempDir('dsn');
    const file = path.join(dir, 'm.eml');
    await fs.writeFile(file, 'X: '.padEnd(10_000, 'y'));
    assert.equal((await readHeaderBlock(file, 100)).length, 100);
  });
});
