// Envelope address hygiene through the real protocol (issue 3, acceptance 5): the 16
// sender/recipient pairs of nmap's smtp-open-relay script, sent the way the script sends
// them (EHLO, then RSET / MAIL / RCPT for each pair). From a client outside the allowlist
// every one is refused and nothing is queued; from an allowlisted client and from a logged-in
// user, every routing form is refused with 553 5.1.3 and a reason.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hashPassword } from '../../src/policy/passwords.js';
import { rawSmtpSession } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { filesIn, queuedIds } from './relay-common.js';

const DOMAIN = 'nmap.scanme.org';
const IP = '127.0.0.1';
const SRV = 'relay.test';
const PASSWORD = 'crm-password-2';

/** nmap's smtp-open-relay.nse test list, in its order. */
const NMAP_PAIRS: [string, string][] = [
  ['<>', `<relaytest@${DOMAIN}>`],
  [`<antispam@${DOMAIN}>`, `<relaytest@${DOMAIN}>`],
  [`<antispam@${SRV}>`, `<relaytest@${DOMAIN}>`],
  [`<antispam@[${IP}]>`, `<relaytest@${DOMAIN}>`],
  [`<antispam@[${IP}]>`, `<relaytest%${DOMAIN}@[${IP}]>`],
  [`<antispam@[${IP}]>`, `<relaytest%${DOMAIN}@${SRV}>`],
  [`<antispam@[${IP}]>`, `<"relaytest@${DOMAIN}">`],
  [`<antispam@[${IP}]>`, `<"relaytest%${DOMAIN}">`],
  [`<antispam@[${IP}]>`, `<relaytest@${DOMAIN}@[${IP}]>`],
  [`<antispam@[${IP}]>`, `<"relaytest@${DOMAIN}"@[${IP}]>`],
  [`<antispam@[${IP}]>`, `<relaytest@${DOMAIN}@${SRV}>`],
  [`<antispam@[${IP}]>`, `<@[${IP}]:relaytest@${DOMAIN}>`],
  [`<antispam@[${IP}]>`, `<@${SRV}:relaytest@${DOMAIN}>`],
  [`<antispam@[${IP}]>`, `<${DOMAIN}!relaytest>`],
  [`<antispam@[${IP}]>`, `<${DOMAIN}!relaytest@[${IP}]>`],
  [`<antispam@[${IP}]>`, `<${DOMAIN}!relaytest@${SRV}>`],
];
/** Pairs 5 to 16 carry a routing form in the recipient; 1 to 4 are plain addresses. */
const ROUTING = NMAP_PAIRS.slice(4);

function probeLines(pairs: [string, string][]): string[] {
  return pairs.flatMap(([from, to]) => ['RSET', `MAIL FROM:${from}`, `RCPT TO:${to}`]);
}

describe('policy: routing forms and the nmap open-relay probe', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({
      config: {
        // No upstream: capture mode; anything accepted would show in the queue or the outbox.
        allowlist: [{ cidr: '127.0.0.1/32', name: 'this-host' }],
        users: [{ name: 'crm', password: await hashPassword(PASSWORD) }],
        // RFC 5321 4.5.1: the postmaster recipient is accepted (and delivered here).
        bounces: { to: 'postmaster-box@corp.example' },
        // The whole probe in one session, as nmap sends it (the cut-off after 10 refused
        // commands has its own test, test/e2e/listener-fairness).
        limits: { maxRefusedCommands: 100 },
      },
    });
  });

  after(async () => {
    await relay?.stop();
  });

  async function assertNothingQueued(): Promise<void> {
    assert.deepEqual(await queuedIds(relay.spoolDir), []);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'outbox')), []);
  }

  test('from a client outside the allowlist: all 16 refused, nothing queued', async () => {
    const replies = await rawSmtpSession(
      relay.port,
      [`EHLO ${DOMAIN}`, ...probeLines(NMAP_PAIRS), 'DATA', 'QUIT'],
      { localAddress: '127.0.0.2' },
    );
    assert.equal(replies.length, 1 + 1 + NMAP_PAIRS.length * 3 + 2, replies.join('\n'));
    for (const [i, [from, to]] of NMAP_PAIRS.entries()) {
      const mail = replies[2 + i * 3 + 1] ?? '';
      const rcpt = replies[2 + i * 3 + 2] ?? '';
      assert.match(mail, /^550 5\.7\.1 Client 127\.0\.0\.2 is not allowed/, `MAIL FROM:${from}`);
      assert.match(rcpt, /^5\d\d /, `RCPT TO:${to} after ${from}: ${rcpt}`);
    }
    assert.match(replies.at(-2) ?? '', /^5\d\d /, 'DATA refused');
    await assertNothingQueued();
  });

  test('from an allowlisted client: every routing form refused with 553 5.1.3, plain ones accepted', async () => {
    const replies = await rawSmtpSession(relay.port, [`EHLO ${DOMAIN}`, ...probeLines(NMAP_PAIRS), 'QUIT']);
    for (const [i, [from, to]] of NMAP_PAIRS.entries()) {
      assert.match(replies[2 + i * 3 + 1] ?? '', /^250 /, `MAIL FROM:${from}`);
      const rcpt = replies[2 + i * 3 + 2] ?? '';
      if (i < 4) assert.match(rcpt, /^250 /, `plain RCPT TO:${to}`);
      else assert.match(rcpt, /^553 5\.1\.3 Address ".+" rejected: \S/, `RCPT TO:${to}`);
    }
    await assertNothingQueued();
  });

  test('each routing form is named for what it is', async () => {
    const replies = await rawSmtpSession(relay.port, [
      'EHLO client.test',
      'MAIL FROM:<a@corp.example>',
      `RCPT TO:<@[${IP}]:relaytest@${DOMAIN}>`,
      `RCPT TO:<relaytest%${DOMAIN}@${SRV}>`,
      `RCPT TO:<${DOMAIN}!relaytest>`,
      `RCPT TO:<"relaytest@${DOMAIN}"@${SRV}>`,
      `RCPT TO:<relaytest@${DOMAIN}@${SRV}>`,
      'RCPT TO:<nodomain>',
      'RCPT TO:<postmaster>',
      'QUIT',
    ]);
    assert.match(replies[3] ?? '', /^553 5\.1\.3 .*source routes/);
    assert.match(replies[4] ?? '', /^553 5\.1\.3 .*% hack/);
    assert.match(replies[5] ?? '', /^553 5\.1\.3 .*bang paths/);
    assert.match(replies[6] ?? '', /^553 5\.1\.3 .*quoted local parts/);
    assert.match(replies[7] ?? '', /^553 5\.1\.3 .*more than one @/);
    assert.match(replies[8] ?? '', /^553 5\.1\.3 .*no domain/);
    // The one address without a domain that is taken (RFC 5321 4.5.1): to bounces.to.
    assert.match(replies[9] ?? '', /^250 /);
  });

  test('routing forms as the sender are refused too', async () => {
    const senders = [
      `<@${SRV}:a@corp.example>`,
      '<a%b@corp.example>',
      '<host!a@corp.example>',
      '<"a@b"@corp.example>',
      '<nodomain>',
    ];
    const replies = await rawSmtpSession(relay.port, [
      'EHLO client.test',
      ...senders.flatMap((s) => ['RSET', `MAIL FROM:${s}`]),
      'QUIT',
    ]);
    for (const [i, sender] of senders.entries())
      assert.match(replies[2 + i * 2 + 1] ?? '', /^553 5\.1\.3 /, `MAIL FROM:${sender}`);
  });

  test('from a logged-in user (STARTTLS + AUTH, outside the allowlist): routing forms refused with 553', async () => {
    const auth = `AUTH PLAIN ${Buffer.from(`\0crm\0${PASSWORD}`).toString('base64')}`;
    const replies = await rawSmtpSession(
      relay.port,
      ['EHLO client.test', 'STARTTLS', 'EHLO client.test', auth, ...probeLines(ROUTING), 'QUIT'],
      { localAddress: '127.0.0.2' },
    );
    assert.match(replies[4] ?? '', /^235 /, 'logged in');
    for (const [i, [, to]] of ROUTING.entries()) {
      assert.match(replies[5 + i * 3 + 1] ?? '', /^250 /);
      assert.match(replies[5 + i * 3 + 2] ?? '', /^553 5\.1\.3 /, `RCPT TO:${to}`);
    }
    await assertNothingQueued();
  });
});
