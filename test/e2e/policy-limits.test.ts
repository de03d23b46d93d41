// Per-source limits through the real protocol (issue 3, acceptance 3 and 6, and the limits of
// the config): message and recipient rates, recipient domains, senders, sizes and counts,
// connections in total and per address, and the lockout after failed logins. Every refusal
// must carry its enhanced code and name the source or the limit.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { hashPassword } from '../../src/policy/passwords.js';
import { rawSmtpSession, sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { sleep, waitUntil } from './relay-common.js';

const PASSWORD = 'crm-password-3';
const authPlain = (user: string, pass: string) =>
  `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;

/** Opens a connection and waits for its first reply line; the socket stays open. */
function connect(port: number, localAddress: string): Promise<{ socket: net.Socket; greeting: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      const end = buffer.indexOf('\r\n');
      if (end !== -1) resolve({ socket, greeting: buffer.slice(0, end) });
    });
    socket.once('error', reject);
    socket.once('close', () => resolve({ socket, greeting: buffer }));
  });
}

describe('policy: per-source limits', () => {
  let relay: Relay;
  const held: net.Socket[] = [];

  before(async () => {
    relay = await startRelay({
      config: {
        // No upstream (capture mode): only what the relay accepts or refuses matters here.
        limits: { maxConnections: 8, maxConnectionsPerIp: 3, maxAuthFailures: 3 },
        allowlist: [
          { cidr: '127.0.0.1/32', name: 'burst', rateLimit: '10/min' },
          {
            cidr: '127.0.0.3/32',
            name: 'floor3-printers',
            allowedRecipientDomains: ['corp.example'],
            maxRecipients: 2,
            maxMessageSize: '10KB',
          },
          { cidr: '127.0.0.4/32', name: 'fast', rateLimit: '2/s' },
          { cidr: '127.0.0.8/32', name: 'legacy-auth', allowInsecureAuth: true },
          { cidr: '127.0.0.10/32', name: 'bulk', recipientRateLimit: '3/hour' },
          { cidr: '127.0.0.20/30', name: 'crowd' },
        ],
        users: [{ name: 'crm', password: await hashPassword(PASSWORD), allowedSenders: ['*@corp.example'] }],
      },
    });
  });

  after(async () => {
    for (const socket of held) socket.destroy();
    await relay?.stop();
  });

  test('10/min and a burst of 15 messages: exactly 10 accepted, 5 refused with 450 4.7.1', async () => {
    const results = [];
    for (let i = 0; i < 15; i++)
      results.push(await sendMail({ port: relay.port, from: 'a@corp.example', to: ['b@corp.example'] }));
    const accepted = results.filter((r) => r.ok);
    const refused = results.filter((r) => !r.ok);
    assert.equal(accepted.length, 10);
    assert.equal(refused.length, 5);
    assert.equal(new Set(accepted.map((r) => r.ok && r.queueId)).size, 10, 'ten queued messages');
    for (const r of refused) {
      assert.equal(r.code, 450);
      assert.match(
        r.response,
        /^450 4\.7\.1 Rate limit 10\/min exceeded for source burst, try again in \d+ seconds$/,
      );
    }
  });

  test('refused for the rate, a client may send again once the time it was told has passed', async () => {
    const send = () =>
      sendMail({
        port: relay.port,
        localAddress: '127.0.0.4',
        from: 'a@corp.example',
        to: ['b@corp.example'],
      });
    // Three MAIL commands in one plain session, so no handshake time lets the bucket refill
    // between them, however loaded the machine.
    const replies = await rawSmtpSession(
      relay.port,
      [
        'EHLO client.test',
        ...Array.from({ length: 3 }, () => ['MAIL FROM:<a@corp.example>', 'RSET']).flat(),
        'QUIT',
      ],
      { localAddress: '127.0.0.4' },
    );
    const mails = [replies[2], replies[4], replies[6]];
    assert.match(mails[0] ?? '', /^250 /);
    assert.match(mails[1] ?? '', /^250 /);
    const third = mails[2] ?? '';
    assert.match(third, /^450 4\.7\.1 /, 'the third within the second is refused');
    const wait = /try again in (\d+) seconds/.exec(third);
    assert.ok(wait, third);
    await sleep(Number(wait[1]) * 1000 + 100);
    const again = await send();
    assert.ok(again.ok, again.response);
  });

  test('allowedRecipientDomains: another domain refused with 550 5.7.1 naming domain and source', async () => {
    const replies = await rawSmtpSession(
      relay.port,
      [
        'EHLO client.test',
        'MAIL FROM:<scan@corp.example>',
        'RCPT TO:<someone@gmail.com>',
        'RCPT TO:<alice@corp.example>',
        'QUIT',
      ],
      { localAddress: '127.0.0.3' },
    );
    assert.equal(replies[3], '550 5.7.1 Recipient domain gmail.com not allowed for source floor3-printers');
    assert.match(replies[4] ?? '', /^250 /);
  });

  test('per-source maxRecipients and maxMessageSize', async () => {
    const big = `Subject: big\r\n\r\n${'x'.repeat(20 * 1024)}\r\n.`;
    const replies = await rawSmtpSession(
      relay.port,
      [
        'EHLO client.test',
        'MAIL FROM:<scan@corp.example>',
        'RCPT TO:<a@corp.example>',
        'RCPT TO:<b@corp.example>',
        'RCPT TO:<c@corp.example>',
        'DATA',
        big,
        'MAIL FROM:<scan@corp.example> SIZE=20480',
        'QUIT',
      ],
      { localAddress: '127.0.0.3' },
    );
    assert.match(
      replies[5] ?? '',
      /^452 4\.5\.3 Too many recipients: at most 2 per message for source floor3-printers/,
    );
    assert.match(
      replies[7] ?? '',
      /^552 5\.3\.4 Message too big: the limit for source floor3-printers is 10KB/,
    );
    assert.match(
      replies[8] ?? '',
      /^552 5\.3\.4 Message too big: the limit for source floor3-printers is 10KB/,
    );
  });

  test('recipientRateLimit: the 4th recipient within the hour gets 450 4.7.1 naming the rate', async () => {
    const replies = await rawSmtpSession(
      relay.port,
      [
        'EHLO client.test',
        'MAIL FROM:<a@corp.example>',
        ...[1, 2, 3, 4].map((i) => `RCPT TO:<r${i}@corp.example>`),
        'QUIT',
      ],
      { localAddress: '127.0.0.10' },
    );
    for (const i of [3, 4, 5]) assert.match(replies[i] ?? '', /^250 /);
    assert.match(
      replies[6] ?? '',
      /^450 4\.7\.1 Recipient rate limit 3\/hour exceeded for source bulk, try again in \d+ seconds$/,
    );
  });

  test('allowedSenders: a logged-in user may only use its patterns', async () => {
    const common = {
      port: relay.port,
      localAddress: '127.0.0.2',
      auth: { user: 'crm', pass: PASSWORD },
      requireTls: true,
      to: ['x@example.com'],
    };
    const ok = await sendMail({ ...common, from: 'crm@corp.example' });
    assert.ok(ok.ok, ok.response);
    const refused = await sendMail({ ...common, from: 'ceo@gmail.com' });
    assert.ok(!refused.ok);
    assert.equal(
      refused.response,
      '550 5.7.1 Sender <ceo@gmail.com> not allowed for source crm (see its allowedSenders)',
    );
  });

  test('maxConnectionsPerIp and maxConnections: 421 4.7.0 naming the limit', async () => {
    for (let i = 0; i < 3; i++) {
      const { socket, greeting } = await connect(relay.port, '127.0.0.20');
      held.push(socket);
      assert.match(greeting, /^220 /);
    }
    const fourth = await connect(relay.port, '127.0.0.20');
    held.push(fourth.socket);
    assert.equal(
      fourth.greeting,
      '421 4.7.0 Too many connections from 127.0.0.20: at most 3 at once (limits.maxConnectionsPerIp), try again in a moment',
    );
    for (let i = 0; i < 3; i++) {
      const { socket, greeting } = await connect(relay.port, '127.0.0.21');
      held.push(socket);
      assert.match(greeting, /^220 /);
    }
    for (let i = 0; i < 2; i++) {
      const { socket, greeting } = await connect(relay.port, '127.0.0.22');
      held.push(socket);
      assert.match(greeting, /^220 /);
    }
    const ninth = await connect(relay.port, '127.0.0.23');
    held.push(ninth.socket);
    assert.match(
      ninth.greeting,
      /^421 4\.7\.0 Too many connections: the relay serves at most 8 at once \(limits\.maxConnections\)/,
    );
    // Closed connections are counted out: room again.
    for (const socket of held.splice(0)) socket.destroy();
    // The relay counts them out as it sees them close: a busy machine may take a moment.
    const greeting = await waitUntil(
      'a 220 greeting again',
      async () => {
        const after = await connect(relay.port, '127.0.0.20');
        after.socket.destroy();
        return /^220 /.test(after.greeting) ? after.greeting : undefined;
      },
      10_000,
      100,
    );
    assert.match(greeting, /^220 /);
  });

  test('AUTH before TLS only for the source that opted in (legacy-auth)', async () => {
    const legacy = await rawSmtpSession(
      relay.port,
      ['EHLO client.test', authPlain('crm', PASSWORD), 'QUIT'],
      {
        localAddress: '127.0.0.8',
      },
    );
    assert.match(legacy[1] ?? '', /AUTH PLAIN LOGIN/);
    assert.match(legacy[2] ?? '', /^235 /);
    const other = await rawSmtpSession(relay.port, ['EHLO client.test', authPlain('crm', PASSWORD), 'QUIT'], {
      localAddress: '127.0.0.3',
    });
    assert.doesNotMatch(other[1] ?? '', /AUTH/);
    assert.doesNotMatch(other[2] ?? '', /^235 /);
  });

  test('3 failed logins lock an allowlisted address out of AUTH only: its mail goes on', async () => {
    const bad = authPlain('crm', 'wrong');
    const replies = await rawSmtpSession(relay.port, ['EHLO client.test', bad, bad, bad, 'NOOP'], {
      localAddress: '127.0.0.8',
    });
    assert.match(replies[2] ?? '', /^535 5\.7\.8 /);
    assert.match(replies[3] ?? '', /^535 5\.7\.8 /);
    assert.match(
      replies[4] ?? '',
      /^454 4\.7\.0 Too many failed logins from 127\.0\.0\.8 \(3 within 10m, limits\.maxAuthFailures\): AUTH refused for 15m/,
    );
    assert.match(replies[5] ?? '', /^250 /, 'the connection stays open');
    // A new connection is greeted, unauthenticated relaying works, AUTH stays refused.
    const again = await rawSmtpSession(
      relay.port,
      [
        'EHLO client.test',
        'MAIL FROM:<printer@corp.example>',
        'RCPT TO:<a@corp.example>',
        authPlain('crm', PASSWORD),
      ],
      { localAddress: '127.0.0.8' },
    );
    assert.match(again[0] ?? '', /^220 /);
    assert.match(again[2] ?? '', /^250 /, 'MAIL from the allowlisted address');
    assert.match(again[3] ?? '', /^250 /, 'RCPT from the allowlisted address');
    assert.match(again[4] ?? '', /^(454|503) /, 'no AUTH while locked out');
    const [line] = await relay.waitForOutput(/.*auth_lockout.*/);
    assert.match(line, /127\.0\.0\.8/);
    assert.doesNotMatch(relay.output(), /wrong/, 'the password tried is never logged');
  });

  test('3 failed logins lock a stranger out of AUTH and of connecting; others unaffected', async () => {
    const lines = ['EHLO client.test', 'STARTTLS', 'EHLO client.test'];
    for (const user of ['guess1', 'guess2', 'guess3']) lines.push(authPlain(user, 'wrong'));
    lines.push('NOOP');
    const replies = await rawSmtpSession(relay.port, lines, { localAddress: '127.0.0.9' });
    assert.match(replies[4] ?? '', /^535 /);
    assert.match(replies[5] ?? '', /^535 /);
    assert.match(replies[6] ?? '', /^421 4\.7\.0 Too many failed logins from 127\.0\.0\.9 .*refused for 15m/);
    assert.equal(replies.length, 7, 'the connection is closed after the lockout');
    const again = await connect(relay.port, '127.0.0.9');
    again.socket.destroy();
    assert.match(again.greeting, /^421 4\.7\.0 Too many failed logins from 127\.0\.0\.9/);
    const other = await connect(relay.port, '127.0.0.11');
    other.socket.destroy();
    assert.match(other.greeting, /^220 /);
  });

  test('failed logins for one username from many addresses lock that username out', async () => {
    const tryLogin = (ip: string, pass: string) =>
      rawSmtpSession(
        relay.port,
        ['EHLO client.test', 'STARTTLS', 'EHLO client.test', authPlain('spread', pass), 'QUIT'],
        { localAddress: ip },
      ).then((r) => r[4] ?? '');
    assert.match(await tryLogin('127.0.0.12', 'x1'), /^535 /);
    assert.match(await tryLogin('127.0.0.13', 'x2'), /^535 /);
    assert.match(await tryLogin('127.0.0.14', 'x3'), /^454 4\.7\.0 Too many failed logins for this user/);
    assert.match(await tryLogin('127.0.0.15', 'x4'), /^454 4\.7\.0 Too many failed logins for this user/);
    // Another user from the same addresses is not affected.
    const other = await rawSmtpSession(
      relay.port,
      ['EHLO client.test', 'STARTTLS', 'EHLO client.test', authPlain('other-user', 'x'), 'QUIT'],
      { localAddress: '127.0.0.15' },
    );
    assert.match(other[4] ?? '', /^535 /);
  });
});
