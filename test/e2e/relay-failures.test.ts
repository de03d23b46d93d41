// Acceptance 5 of issue 2: the upstream's refusals. A 451 at DATA is retried later and the
// message delivered; a 550 to one of three recipients bounces that one (an RFC 3464 report to
// the envelope sender, through the ESP) while the other two are delivered exactly once, and
// the message is kept in <spool>/failed/.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp, type EspMessage } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { explained, header, queuedIds, sleep, splitMessage, upstreamFor, waitUntil } from './relay-common.js';

describe('relay: upstream refusals', () => {
  let esp: Esp;
  let relay: Relay;
  const dataAttempts = new Map<string, number>();

  before(async () => {
    esp = await startEsp();
    esp.onData = (message) => {
      const subject = header(message.raw, 'subject') ?? '';
      const n = (dataAttempts.get(subject) ?? 0) + 1;
      dataAttempts.set(subject, n);
      if (subject === 'tempfail-at-data' && n === 1) {
        return { code: 451, message: '4.3.0 Temporary local problem, try again' };
      }
      return undefined;
    };
    esp.onRcpt = (address) =>
      address === 'nobody@example.com' ? { code: 550, message: '5.1.1 No such user here' } : undefined;
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        queue: { retry: ['1s'] },
        bounces: { to: 'postmaster@corp.example' },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  const withSubject = (subject: string): EspMessage[] =>
    esp.messages.filter((m) => header(m.raw, 'subject') === subject);

  test('451 at DATA: deferred, retried later, delivered once', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'app@corp.example',
      to: ['someone@example.com'],
      subject: 'tempfail-at-data',
    });
    assert.ok(sent.ok, sent.response);
    const got = await explained(
      relay,
      waitUntil('the retried message', () => withSubject('tempfail-at-data')[0], 20_000),
    );
    assert.deepEqual(got.to, ['someone@example.com']);
    assert.equal(dataAttempts.get('tempfail-at-data'), 2, 'refused once, accepted at the second attempt');
    const deferred = await relay.waitForOutput(
      new RegExp(`^.*"event":"deferred".*"id":"${sent.queueId}".*$`, 'm'),
    );
    assert.match(deferred[0], /451/);
    await waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0);
    await sleep(1500);
    assert.equal(withSubject('tempfail-at-data').length, 1);
    assert.equal(dataAttempts.get('tempfail-at-data'), 2);
  });

  test('550 to one of three recipients: that one bounced to the sender, the others delivered once', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'sender@corp.example',
      to: ['good1@example.com', 'nobody@example.com', 'good2@example.com'],
      subject: 'one-bad-recipient',
    });
    assert.ok(sent.ok, sent.response);
    const id = sent.queueId!;

    const dsn = await explained(
      relay,
      waitUntil('the bounce at the ESP', () =>
        esp.messages.find((m) => m.to.includes('sender@corp.example')),
      ),
    );
    assert.equal(dsn.from, '', 'a bounce has the null sender');
    assert.deepEqual(dsn.to, ['sender@corp.example']);
    assert.match(header(dsn.raw, 'content-type') ?? '', /^multipart\/report;.*report-type=delivery-status/i);
    const report = splitMessage(dsn.raw).body;
    assert.match(report, /Content-Type: message\/delivery-status/);
    assert.match(report, /^Final-Recipient: rfc822; ?nobody@example\.com\r$/m);
    assert.match(report, /^Action: failed\r$/m);
    assert.match(report, /^Status: 5\.1\.1\r$/m);
    assert.match(report, /Diagnostic-Code: smtp; 550 5\.1\.1 No such user here/);
    assert.doesNotMatch(report, /Final-Recipient: rfc822; ?good[12]@example\.com/);
    // The original's headers ride along, so the sender can tell which message it was.
    assert.match(report, /Subject: one-bad-recipient/);

    const delivered = await waitUntil('the original at the ESP', () => withSubject('one-bad-recipient')[0]);
    assert.deepEqual(delivered.to, ['good1@example.com', 'good2@example.com']);

    // Kept as a dead letter with the reason, and no longer queued.
    const failedDir = path.join(relay.spoolDir, 'failed');
    const deadFile = path.join(failedDir, `${id}.json`);
    // The move's last step is the queue's .json: once it is gone, both dead-letter files are there.
    await waitUntil(
      `${id} moved to failed/`,
      async () =>
        !(await queuedIds(relay.spoolDir)).includes(id) && (await fs.readdir(failedDir)).length === 2,
    );
    const dead = JSON.parse(await fs.readFile(deadFile, 'utf8')) as {
      reason: string;
      recipients: { address: string; status: string }[];
    };
    assert.match(dead.reason, /nobody@example\.com: 550 5\.1\.1/);
    assert.deepEqual(
      dead.recipients.map((r) => [r.address, r.status]),
      [
        ['good1@example.com', 'delivered'],
        ['nobody@example.com', 'failed'],
        ['good2@example.com', 'delivered'],
      ],
    );
    assert.equal(
      header(await fs.readFile(path.join(failedDir, `${id}.eml`)), 'subject'),
      'one-bad-recipient',
    );

    // No second delivery to the good recipients, no second bounce.
    await waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0);
    await sleep(1500);
    const originals = withSubject('one-bad-recipient');
    assert.equal(originals.length, 1);
    assert.equal(esp.messages.filter((m) => m.to.includes('sender@corp.example')).length, 1);
    assert.equal(dataAttempts.get('one-bad-recipient'), 1);
  });
});
