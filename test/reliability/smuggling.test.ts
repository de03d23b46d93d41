// Issue 13's acceptance: seven end-of-data look-alikes, each followed by an embedded
// transaction (MAIL/RCPT/DATA, From: CEO), sent by a pinned source through the real relay to a
// lenient upstream that ends DATA on any of them. No second transaction may appear upstream,
// and no message may carry a bare CR or LF.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startLenientUpstream, type LenientUpstream } from '../helpers/lenient-upstream.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { openConversation, waitUntil } from '../e2e/relay-common.js';

const LOOK_ALIKES = ['\r.\r\n', '\r.\n', '\r.\r', '\n.\n', '\n.\r\n', '\r\n.\n', '\n.\r'];

const SMUGGLED =
  'MAIL FROM:<ceo@corp.example>\r\nRCPT TO:<victim1@gmail.example>\r\nRCPT TO:<victim2@gmail.example>\r\n' +
  'DATA\r\nFrom: CEO <ceo@corp.example>\r\nSubject: wire the money\r\n\r\nsmuggled';

describe('SMTP smuggling through the relay', () => {
  let upstream: LenientUpstream;
  let relay: Relay;

  before(async () => {
    upstream = await startLenientUpstream();
    relay = await startRelay({
      config: {
        upstream: { host: '127.0.0.1', port: upstream.port, tls: 'none', timeout: '10s' },
        allowlist: [{ cidr: '127.0.0.1/32', name: 'printer', sender: 'scanner@corp.example' }],
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await upstream?.close();
  });

  test('seven look-alikes: one transaction each upstream, the pinned sender, CRLF only', async () => {
    for (const [i, lookAlike] of LOOK_ALIKES.entries()) {
      const c = await openConversation(relay.port);
      try {
        await c.command('EHLO printer.test');
        assert.match(await c.command('MAIL FROM:<scan@printer.local>'), /^250/);
        assert.match(await c.command('RCPT TO:<office@corp.example>'), /^250/);
        assert.match(await c.command('DATA'), /^354/);
        const reply = await c.command(
          `From: Scanner <scan@printer.local>\r\nSubject: scan ${i}\r\n\r\nhello${lookAlike}${SMUGGLED}\r\n.`,
        );
        // Refused (5.6.0) or accepted: both are fine, as long as nothing is smuggled.
        assert.match(reply, /^(250|5\d\d) /, JSON.stringify(lookAlike));
      } finally {
        c.destroy();
      }
    }
    const queued = await waitUntil(
      'every message at the upstream and the queue empty',
      async () => (upstream.transactions.length >= 1 ? upstream.transactions : undefined),
      20_000,
    );
    // Give any smuggled second transaction time to show.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.ok(
      queued.length <= LOOK_ALIKES.length,
      `${queued.length} transactions for ${LOOK_ALIKES.length} messages`,
    );
    for (const t of upstream.transactions) {
      assert.equal(t.from, 'scanner@corp.example', 'a transaction with another sender: smuggled');
      assert.deepEqual(t.to, ['office@corp.example'], 'a smuggled recipient');
      const text = t.data.toString('latin1');
      assert.doesNotMatch(text, /\r(?!\n)|(?<!\r)\n/, 'a bare CR or LF left the relay');
      // The embedded lines stay text in the body; the header section has the pinned From only.
      const head = text.slice(0, text.indexOf('\r\n\r\n'));
      assert.doesNotMatch(head, /^From: CEO/m, 'the smuggled From became a header');
      assert.match(head, /^From: .*scanner@corp\.example/m);
    }
  });
});
