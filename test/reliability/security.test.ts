// Never an open relay: the 16 sender/recipient forms of nmap's smtp-open-relay script, from an
// address outside the allowlist and without a login, are all refused and nothing is queued or
// sent. And AUTH brute force: after limits.maxAuthFailures failures the address is locked out,
// even for the right password, while other addresses can still log in.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { hashPassword } from '../../src/policy/passwords.js';
import { rawSmtpSession } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { filesIn, sleep, upstreamFor } from './common.js';
import path from 'node:path';

const PASSWORD = 'correct horse battery staple';
let esp: Esp;
let relay: Relay;

before(async () => {
  esp = await startEsp();
  relay = await startRelay({
    config: {
      hostname: 'relay.test',
      allowlist: [{ cidr: '127.0.0.1/32', name: 'device' }],
      users: [
        { name: 'scanner', password: await hashPassword(PASSWORD) },
        { name: 'monitor', password: await hashPassword(PASSWORD) },
      ],
      upstream: upstreamFor(esp),
      limits: { maxAuthFailures: 3, authFailureWindow: '10m', authLockout: '15m' },
      log: { level: 'info' },
    },
  });
});

after(async () => {
  await relay?.kill();
  await esp?.close();
});

/** nmap smtp-open-relay's tests: [MAIL FROM, RCPT TO], with the server's IP and name filled in. */
function nmapForms(ip: string, name: string): [string, string][] {
  const from = `antispam@[${ip}]`;
  return [
    ['', 'relaytest@nmap.scanme.org'],
    ['antispam@nmap.scanme.org', 'relaytest@nmap.scanme.org'],
    [`antispam@${name}`, 'relaytest@nmap.scanme.org'],
    [from, 'relaytest@nmap.scanme.org'],
    [from, `relaytest%nmap.scanme.org@[${ip}]`],
    [from, `relaytest%nmap.scanme.org@${name}`],
    [from, '"relaytest@nmap.scanme.org"'],
    [from, '"relaytest%nmap.scanme.org"'],
    [from, `relaytest@nmap.scanme.org@[${ip}]`],
    [from, `"relaytest@nmap.scanme.org"@[${ip}]`],
    [from, `relaytest@nmap.scanme.org@${name}`],
    [from, `@[${ip}]:relaytest@nmap.scanme.org`],
    [from, `@${name}:relaytest@nmap.scanme.org`],
    [from, 'nmap.scanme.org!relaytest'],
    [from, `nmap.scanme.org!relaytest@[${ip}]`],
    [from, `nmap.scanme.org!relaytest@${name}`],
  ];
}

test("nmap smtp-open-relay's 16 forms from an unauthorised address: all refused, nothing queued", async (t) => {
  const forms = nmapForms('127.0.0.1', 'relay.test');
  assert.equal(forms.length, 16);
  for (const [from, to] of forms) {
    const replies = await rawSmtpSession(
      relay.port,
      [
        'EHLO nmap.scanme.org',
        `MAIL FROM:<${from}>`,
        `RCPT TO:<${to}>`,
        'DATA',
        'Subject: relay test\r\n\r\nrelay test\r\n.',
        'QUIT',
      ],
      { localAddress: '127.0.0.2' },
    );
    const [, , mail, rcpt, data] = replies;
    const what = `MAIL FROM:<${from}> -> RCPT TO:<${to}>: ${JSON.stringify(replies.slice(2))}`;
    // Refused at MAIL or at RCPT, with a permanent 5xx and an enhanced code; never a 354.
    const refusal = mail?.startsWith('250') ? rcpt : mail;
    assert.match(refusal ?? '', /^5\d\d [245]\.\d+\.\d+ /, what);
    assert.ok(!rcpt?.startsWith('250'), `recipient accepted: ${what}`);
    assert.ok(!data?.startsWith('354'), `DATA accepted: ${what}`);
  }
  t.diagnostic(`16/16 refused (an open relay scores 16/16 the other way)`);
  await sleep(300);
  const queued = await filesIn(path.join(relay.spoolDir, 'queue'));
  assert.deepEqual(queued, [], 'nothing queued');
  assert.equal(esp.messages.length, 0, 'nothing sent upstream');
});

function authPlain(user: string, pass: string): string {
  return `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;
}

test('AUTH brute force: locked out after limits.maxAuthFailures, even with the right password', async () => {
  const attacker = '127.0.0.3';
  const tries: string[] = [];
  // Three wrong passwords (limits.maxAuthFailures: 3), over TLS as the relay requires for AUTH.
  for (let i = 0; i < 3; i++) {
    const replies = await rawSmtpSession(
      relay.port,
      ['EHLO brute.test', 'STARTTLS', 'EHLO brute.test', authPlain('scanner', `guess-${i}`), 'QUIT'],
      { localAddress: attacker },
    );
    tries.push(replies[4] ?? '(closed)');
    // The failure that reaches the limit may already be answered with the lockout.
    const expected = i < 2 ? /^535 5\.7\.8 / : /^(535 5\.7\.8|421 4\.7\.0) /;
    assert.match(replies[4] ?? '', expected, `wrong password ${i + 1} refused: ${JSON.stringify(replies)}`);
  }
  // Now even the right password is refused: the address is locked out (421 4.7.0), at connect or at AUTH.
  const locked = await rawSmtpSession(
    relay.port,
    ['EHLO brute.test', 'STARTTLS', 'EHLO brute.test', authPlain('scanner', PASSWORD), 'QUIT'],
    { localAddress: attacker },
  );
  assert.ok(
    locked.some((reply) => /^421 4\.7\.0 /.test(reply)),
    `locked out after 3 failures: ${JSON.stringify(locked)}`,
  );
  assert.ok(
    !locked.some((reply) => reply.startsWith('235')),
    `logged in despite the lockout: ${JSON.stringify(locked)}`,
  );

  // Failures are counted per username too, across addresses: guesses at "scanner" spread over
  // many addresses are locked as well, so from another address that user's AUTH is refused
  // (454 4.7.0, AUTH only: the connection stays)...
  const sameUser = await rawSmtpSession(
    relay.port,
    ['EHLO other.test', 'STARTTLS', 'EHLO other.test', authPlain('scanner', PASSWORD), 'QUIT'],
    { localAddress: '127.0.0.4' },
  );
  assert.match(
    sameUser[4] ?? '',
    /^454 4\.7\.0 /,
    `the user is locked everywhere: ${JSON.stringify(sameUser)}`,
  );
  // ...while another user, from another address, logs in fine.
  const other = await rawSmtpSession(
    relay.port,
    ['EHLO other.test', 'STARTTLS', 'EHLO other.test', authPlain('monitor', PASSWORD), 'QUIT'],
    { localAddress: '127.0.0.5' },
  );
  assert.match(other[4] ?? '', /^235 /, `another user logs in: ${JSON.stringify(other)}`);
});
