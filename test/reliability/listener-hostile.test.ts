// Hostile input for the listener's own parsers and limits (issue 13): envelope paths built to
// confuse the path reader (quotes, brackets, no brackets, huge), floods of refused commands,
// slow clients trickling bytes, hostile AUTH usernames. Throughout, an allowlisted device keeps
// sending, and every one of its messages must be accepted; the relay must still run at the end.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { rawSmtpSession, sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { sleep } from './common.js';

let relay: Relay;

before(async () => {
  relay = await startRelay({
    config: {
      allowlist: [{ cidr: '127.0.0.1/32', name: 'device' }],
      defaults: { allowInsecureAuth: true },
      limits: {
        maxConnections: 40,
        maxUntrustedConnections: 10,
        maxConnectionsPerIp: 40,
        untrustedCommandTimeout: '2s',
        commandTimeout: '4s',
        dataTimeout: '5s',
      },
      log: { level: 'info' },
    },
  });
});

after(async () => {
  await relay?.kill();
});

let sent = 0;
async function deviceSends(): Promise<void> {
  const result = await sendMail({ port: relay.port, from: 'device@corp.test', to: ['a@corp.test'] });
  assert.ok(result.ok, `the device's message ${sent}: ${result.response}`);
  sent += 1;
}

test('hostile envelope paths: each answered, the session goes on', async () => {
  const paths = [
    `"${'"'.repeat(5000)}@corp.test`,
    `<"${'a'.repeat(300)}"@corp.test>`,
    '<"a\\">',
    '<"a\0b"@corp.test>',
    '<"a\r"@corp.test>',
    'a@b.test c@d.test',
    '"x"@',
    '<"x"@>',
    '<"ünï cödé"@corp.test>',
    '<"a b"@[127.0.0.1]>',
    '<"a b"@[IPv6:::1]> SIZE=1',
    '<"a b"@xn--bcher-kva.example>',
    '"unclosed',
    '<>>',
    '<a@b.test>>',
    `${'x'.repeat(2000)}@corp.test`,
    '<@a,@b:"q q"@corp.test>',
  ];
  const lines = ['EHLO hostile.test'];
  for (const p of paths) lines.push('RSET', `MAIL FROM:${p}`, 'MAIL FROM:<device@corp.test>', `RCPT TO:${p}`);
  lines.push('QUIT');
  const replies = await rawSmtpSession(relay.port, lines, { timeoutMs: 20_000 });
  assert.equal(replies.length, lines.length + 1, `every line answered:\n${replies.slice(-3).join('\n')}`);
  for (const reply of replies) assert.match(reply, /^[2-5]\d\d[ -]/);
  assert.match(replies.at(-1)!, /^221 /);
  for (const reply of replies) assert.ok(reply.length < 1000, `a bounded reply: ${reply.slice(0, 80)}...`);
  // A path past the command-line limit ends the session, as any such line does.
  const long = await rawSmtpSession(relay.port, [
    'EHLO a.test',
    `MAIL FROM:${'x'.repeat(100_000)}@corp.test`,
  ]);
  assert.match(long[2] ?? '', /^421 /);
  await deviceSends();
});

test('ten strangers flooding refused commands: each cut off after 10, the device sends', async () => {
  const floods = Array.from({ length: 10 }, (_, i) =>
    rawSmtpSession(
      relay.port,
      ['EHLO flood.test', ...Array.from({ length: 50 }, () => 'MAIL FROM:<x@example.net>')],
      { localAddress: `127.0.1.${i + 1}` },
    ),
  );
  await deviceSends();
  for (const replies of await Promise.all(floods)) {
    assert.match(replies.at(-1) ?? '', /^421 4\.7\.0 Too many refused commands/, replies.at(-1));
    assert.ok(replies.length <= 13, `cut off after 10 refusals, not ${replies.length - 2}`);
  }
});

test('thirty slow strangers trickling bytes: they get their share, are cut off, the device sends', async () => {
  const sockets: net.Socket[] = [];
  const closed: Promise<string>[] = [];
  for (let i = 0; i < 30; i++) {
    const socket = net.connect({ host: '127.0.0.1', port: relay.port, localAddress: `127.0.2.${i + 1}` });
    socket.on('error', () => undefined);
    sockets.push(socket);
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    const timer = setInterval(() => {
      if (!socket.destroyed) socket.write('N');
    }, 300);
    closed.push(
      new Promise((resolve) =>
        socket.once('close', () => {
          clearInterval(timer);
          resolve(text);
        }),
      ),
    );
  }
  await sleep(500);
  await deviceSends();
  const guard = setTimeout(() => sockets.forEach((s) => s.destroy()), 30_000);
  const texts = await Promise.all(closed);
  clearTimeout(guard);
  const timedOut = texts.filter((t) => /421 4\.4\.2 Timeout: no complete command/.test(t)).length;
  const turnedAway = texts.filter((t) => /421 4\.7\.0 Too many connections/.test(t)).length;
  assert.equal(timedOut + turnedAway, 30, texts.filter((t) => !/421/.test(t)).join('\n---\n'));
  assert.ok(timedOut <= 10 && timedOut > 0, `${timedOut} within the untrusted share of 10`);
  await deviceSends();
});

test('hostile AUTH usernames are logged cut and escaped', async () => {
  const since = relay.output().length;
  // smtp-server refuses C0/C1 control characters in AUTH itself; U+2028 (a line break to many
  // log viewers) gets through to the relay.
  const user = `evil\u2028{"event":"auth","user":"admin"}${'u'.repeat(5000)}`;
  const auth = `AUTH PLAIN ${Buffer.from(`\0${user}\0pw`).toString('base64')}`;
  const replies = await rawSmtpSession(relay.port, ['EHLO a.test', auth, 'QUIT'], {
    localAddress: '127.0.3.1',
  });
  assert.match(replies[2] ?? '', /^535 /);
  const [line] = await relay.waitForOutput(/.*"auth_failed".*/, 10_000, { since });
  assert.ok(line.length < 600, `the log line is bounded (${line.length})`);
  assert.match(line, /evil\\\\u2028/);
  assert.doesNotMatch(line, /\u2028/);
  assert.match(line, /\(\d+ characters\)/);
  await deviceSends();
});

test('the relay is still running, and every device message was taken', () => {
  assert.ok(relay.running);
  assert.equal(sent, 5);
});
