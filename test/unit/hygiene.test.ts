// The headers the relay adds: Date and Message-ID only when missing, and the Received trace line.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Headers } from 'mailsplit';
import { addMissingHeaders, receivedHeader, rfc5322Date } from '../../src/rewrite/hygiene.js';

const NOW = new Date(Date.UTC(2026, 10, 29, 3, 7, 9));

function headers(text: string): Headers {
  return new Headers(Buffer.from(text));
}

describe('rfc5322Date', () => {
  test('formats an RFC 5322 date-time in UTC', () => {
    assert.equal(rfc5322Date(NOW), 'Sun, 29 Nov 2026 03:07:09 +0000');
    assert.equal(Date.parse(rfc5322Date(NOW)), NOW.getTime());
  });
});

describe('addMissingHeaders', () => {
  test('adds Date and Message-ID when both are missing', () => {
    const h = headers('Subject: x\r\n\r\n');
    addMissingHeaders(h, 'relay.test', 'QID123', NOW);
    assert.deepEqual(h.get('date'), ['Date: Sun, 29 Nov 2026 03:07:09 +0000']);
    const [id] = h.get('message-id');
    assert.match(id ?? '', /^Message-ID: <QID123\.[0-9a-f]{12}@relay\.test>$/);
    assert.equal(h.getList()[0]?.key, 'subject', 'added below the existing headers');
  });

  test('keeps existing ones whatever their case, and adds nothing', () => {
    const text = 'DATE: Mon, 01 Jan 2024 00:00:00 +0000\r\nmessage-id: <a@b>\r\n\r\n';
    const h = headers(text);
    addMissingHeaders(h, 'relay.test', 'QID', NOW);
    assert.equal(h.build().toString(), text);
  });

  test('adds only the one that is missing', () => {
    const h = headers('Message-ID: <a@b>\r\n\r\n');
    addMissingHeaders(h, 'relay.test', 'QID', NOW);
    assert.equal(h.get('message-id').length, 1);
    assert.equal(h.get('date').length, 1);
  });

  test('Message-IDs differ between messages', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const h = headers('\r\n');
      addMissingHeaders(h, 'relay.test', 'SAMEQID', NOW);
      ids.add(h.get('message-id')[0] ?? '');
    }
    assert.equal(ids.size, 50);
  });
});

describe('receivedHeader', () => {
  const base = {
    helo: 'printer.lan',
    clientAddress: '10.1.2.3',
    hostname: 'relay.corp.example',
    queueId: 'QID1',
    tls: false,
    authenticated: false,
    recipients: ['a@example.com'],
    date: NOW,
  };

  test('from HELO ([ip]) by host with protocol id; for the single recipient; date', () => {
    assert.equal(
      receivedHeader(base),
      'Received: from printer.lan ([10.1.2.3])\r\n\tby relay.corp.example (smarthost) with ESMTP id QID1' +
        '\r\n\tfor <a@example.com>;\r\n\tSun, 29 Nov 2026 03:07:09 +0000',
    );
  });

  test('ESMTPS with TLS, ESMTPSA with TLS and AUTH; IPv6 tagged', () => {
    assert.match(receivedHeader({ ...base, tls: true }), / with ESMTPS id /);
    assert.match(receivedHeader({ ...base, tls: true, authenticated: true }), / with ESMTPSA id /);
    assert.match(receivedHeader({ ...base, clientAddress: '::1' }), /\(\[IPv6:::1\]\)/);
  });

  test('names no recipient when there are several (no Bcc disclosed)', () => {
    const line = receivedHeader({ ...base, recipients: ['a@example.com', 'hidden@example.com'] });
    assert.doesNotMatch(line, /for </);
    assert.doesNotMatch(line, /hidden/);
  });

  test('names the recipient only as it is: not an internationalised or hostile one, mangled', () => {
    const utf8 = receivedHeader({ ...base, recipients: ['müller@example.com'] });
    assert.doesNotMatch(utf8, /for </, 'no "for <mller@example.com>", a different mailbox');
    const hostile = receivedHeader({ ...base, recipients: ['a@example.com>\r\nBcc: x@example.com'] });
    assert.doesNotMatch(hostile, /for </);
    assert.equal(hostile.split('\r\n').length, 3);
  });

  test('a hostile HELO cannot break out of the header', () => {
    const line = receivedHeader({ ...base, helo: 'evil\r\nBcc: victim@example.com (x) <y>;' });
    const physical = line.split('\r\n');
    assert.equal(physical.length, 4, JSON.stringify(line));
    assert.ok(
      physical.slice(1).every((l) => l.startsWith('\t')),
      'continuation lines only',
    );
    assert.match(physical[0] ?? '', /^Received: from evilBcc:victim@example\.comxy \(/);
    assert.match(receivedHeader({ ...base, helo: undefined }), /^Received: from unknown /);
    assert.match(receivedHeader({ ...base, helo: '\r\n' }), /^Received: from unknown /);
  });
});
