// Tests of the end-to-end harness itself: certificates, the ESP stand-in, the SMTP clients and
// the relay process wrapper (against a tiny fake relay, so these pass whatever state src/ is in).
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { makeSelfSignedCert, writeCertFiles } from './helpers/certs.js';
import { rawSmtpSession, sendMail } from './helpers/client.js';
import { startEsp, type Esp } from './helpers/esp.js';
import { freePort, makeTempDir, RelayStartError, startRelay } from './helpers/relay.js';

function tlsConnect(host: string, port: number, ca: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, ca, rejectUnauthorized: true }, () => {
      const authorized = socket.authorized;
      socket.end();
      resolve(authorized);
    });
    socket.once('error', reject);
  });
}

describe('certs', () => {
  test('a client trusting exactly the cert verifies 127.0.0.1 and localhost', async () => {
    const { key, cert } = await makeSelfSignedCert();
    assert.match(cert, /BEGIN CERTIFICATE/);
    assert.equal(await makeSelfSignedCert(), await makeSelfSignedCert(), 'cached');
    const server = tls.createServer({ key, cert }, (socket) => socket.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      assert.equal(await tlsConnect('127.0.0.1', port, cert), true);
      assert.equal(await tlsConnect('localhost', port, cert), true);
      // And a client that trusts nothing else refuses a different certificate.
      const other = await makeSelfSignedCert(['other.test']);
      await assert.rejects(tlsConnect('127.0.0.1', port, other.cert));
    } finally {
      server.close();
    }
  });

  test('writeCertFiles writes key and cert', async () => {
    const dir = await makeTempDir('certs');
    const files = await writeCertFiles(dir);
    assert.equal(await fs.readFile(files.certFile, 'utf8'), files.cert);
    assert.equal(await fs.readFile(files.keyFile, 'utf8'), files.key);
    assert.equal((await fs.stat(files.keyFile)).mode & 0o777, 0o600);
  });
});

describe('ESP stand-in', () => {
  let esp: Esp;
  before(async () => {
    esp = await startEsp();
  });
  after(async () => {
    await esp.close();
  });

  const auth = () => ({ user: esp.user, pass: esp.pass });
  const trustEsp = () => ({ ca: esp.cert, rejectUnauthorized: true });

  test('refuses MAIL and AUTH before STARTTLS', async () => {
    const replies = await rawSmtpSession(esp.port, [
      'EHLO client.test',
      'AUTH PLAIN AGFwaWtleQBzZWNyZXQtcGFzcw==',
      'MAIL FROM:<a@example.test>',
      'QUIT',
    ]);
    assert.match(replies[0] ?? '', /^220 /);
    assert.match(replies[1] ?? '', /STARTTLS/);
    assert.ok((replies[1] ?? '').split('\n').length > 1, 'multi-line EHLO reply kept whole');
    assert.match(replies[2] ?? '', /^538 /);
    assert.match(replies[3] ?? '', /^530 5\.7\.0 /);
    assert.match(replies[4] ?? '', /^221 /);
  });

  test('refuses MAIL without AUTH after STARTTLS', async () => {
    const replies = await rawSmtpSession(esp.port, [
      'EHLO client.test',
      'STARTTLS',
      'EHLO client.test',
      'MAIL FROM:<a@example.test>',
    ]);
    assert.match(replies[2] ?? '', /^220 /);
    assert.match(replies[3] ?? '', /AUTH PLAIN LOGIN/);
    assert.match(replies[4] ?? '', /^530 5\.7\.0 Authentication required/);
    const result = await sendMail({ port: esp.port, from: 'a@example.test', to: ['b@example.test'] });
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.code, 530);
  });

  test('refuses a wrong password with 535', async () => {
    const before = esp.authFailures;
    const result = await sendMail({
      port: esp.port,
      from: 'a@example.test',
      to: ['b@example.test'],
      auth: { user: esp.user, pass: 'wrong' },
    });
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.code, 535);
    assert.equal(esp.authFailures, before + 1);
  });

  test('accepts with STARTTLS and AUTH, verifying its cert through ca', async () => {
    esp.reset();
    const result = await sendMail({
      port: esp.port,
      from: 'a@example.test',
      to: ['b@example.test'],
      subject: 'hello',
      auth: auth(),
      requireTls: true,
      tls: trustEsp(),
    });
    assert.ok(result.ok, JSON.stringify(result));
    assert.match(result.response, /^250 /);
    await esp.waitFor(1, 2000);
    const [message] = esp.messages;
    assert.ok(message);
    assert.equal(message.from, 'a@example.test');
    assert.deepEqual(message.to, ['b@example.test']);
    assert.equal(message.secure, true);
    assert.equal(message.user, esp.user);
    assert.match(message.raw.toString(), /^Subject: hello\r$/m);
    assert.equal(await fs.readFile(esp.caFile, 'utf8'), esp.cert);
  });

  test('sends a raw message as is and reports the queue id', async () => {
    esp.reset();
    const raw = 'From: a@example.test\r\nTo: b@example.test\r\nSubject: raw\r\n\r\nbody\r\n';
    const result = await sendMail({
      port: esp.port,
      from: 'a@example.test',
      to: ['b@example.test'],
      raw,
      auth: auth(),
    });
    assert.ok(result.ok);
    assert.match(result.queueId ?? '', /^ESP\d+$/);
    await esp.waitFor(1, 2000);
    assert.equal(esp.messages[0]?.raw.toString(), raw);
  });

  test('onRcpt can refuse one recipient of three', async () => {
    esp.reset();
    esp.onRcpt = (address) =>
      address === 'bad@example.test' ? { code: 550, message: '5.1.1 No such user' } : undefined;
    try {
      const result = await sendMail({
        port: esp.port,
        from: 'a@example.test',
        to: ['one@example.test', 'bad@example.test', 'three@example.test'],
        auth: auth(),
      });
      assert.ok(result.ok);
      assert.deepEqual(result.rejected, ['bad@example.test']);
      assert.deepEqual(result.accepted, ['one@example.test', 'three@example.test']);
      await esp.waitFor(1, 2000);
      assert.deepEqual(esp.messages[0]?.to, ['one@example.test', 'three@example.test']);
    } finally {
      esp.onRcpt = undefined;
    }
  });

  test('onMail and onData refusals come back as codes; a refused DATA is not recorded', async () => {
    esp.reset();
    esp.onMail = () => ({ code: 451, message: '4.7.1 Try again later' });
    const mail = await sendMail({
      port: esp.port,
      from: 'a@example.test',
      to: ['b@example.test'],
      auth: auth(),
    });
    assert.equal(mail.ok, false);
    assert.equal(!mail.ok && mail.code, 451);
    assert.match(mail.response, /4\.7\.1 Try again later/);
    esp.onMail = undefined;

    esp.onData = async () => ({ code: 554, message: '5.7.1 Message rejected as spam' });
    const data = await sendMail({
      port: esp.port,
      from: 'a@example.test',
      to: ['b@example.test'],
      auth: auth(),
    });
    assert.equal(data.ok, false);
    assert.equal(!data.ok && data.code, 554);
    assert.equal(!data.ok && data.command, 'DATA');
    assert.equal(esp.dataAttempts, 1);
    assert.equal(esp.messages.length, 0);
    esp.onData = undefined;
  });

  test('waitFor rejects with a clear error on timeout', async () => {
    esp.reset();
    await assert.rejects(esp.waitFor(1, 50), /waited 50 ms for 1 message\(s\), got 0/);
  });

  test('stop() drops the port and start() listens on the same one again', async () => {
    esp.reset();
    const port = esp.port;
    await esp.stop();
    assert.equal(esp.listening, false);
    const down = await sendMail({ port, from: 'a@example.test', to: ['b@example.test'], auth: auth() });
    assert.equal(down.ok, false);
    assert.equal(!down.ok && down.code, undefined);
    await esp.start();
    assert.equal(esp.port, port);
    const up = await sendMail({ port, from: 'a@example.test', to: ['b@example.test'], auth: auth() });
    assert.ok(up.ok, JSON.stringify(up));
    await esp.waitFor(1, 2000);
  });

  test('stop() drops open connections at once', async () => {
    esp.reset();
    let release = () => {};
    let held = false;
    esp.onRcpt = () => {
      held = true;
      return new Promise((resolve) => (release = () => resolve(undefined)));
    };
    try {
      const session = rawSmtpSession(esp.port, [
        'EHLO client.test',
        'STARTTLS',
        'EHLO client.test',
        'AUTH PLAIN AGFwaWtleQBzZWNyZXQtcGFzcw==',
        'MAIL FROM:<a@example.test>',
        'RCPT TO:<b@example.test>',
        'QUIT',
      ]);
      // Held at RCPT: the session is open, in the middle of a transaction.
      for (let i = 0; !held && i < 500; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.ok(held, 'the session never reached RCPT');
      const started = Date.now();
      await esp.stop();
      // Not the 60 s socket timeout (a busy machine may take a moment).
      assert.ok(Date.now() - started < 5000, 'stop() does not wait for the session');
      const replies = await session;
      assert.match(replies[4] ?? '', /^235 /);
      assert.match(replies[5] ?? '', /^250 /);
      assert.equal(replies.length, 6, 'no reply to RCPT: the connection was dropped');
    } finally {
      release();
      esp.onRcpt = undefined;
      await esp.start();
    }
  });
});

describe('ESP options', () => {
  test('requireAuth and requireTls can be turned off', async () => {
    const esp = await startEsp({ requireAuth: false, requireTls: false, offerTls: false });
    try {
      const replies = await rawSmtpSession(esp.port, [
        'EHLO client.test',
        'MAIL FROM:<>',
        'RCPT TO:<b@example.test>',
        'DATA',
        'Subject: plain\r\n\r\nhi\r\n.',
        'QUIT',
      ]);
      assert.doesNotMatch(replies[1] ?? '', /STARTTLS/);
      assert.deepEqual(
        replies.slice(2).map((r) => r.slice(0, 3)),
        ['250', '250', '354', '250', '221'],
      );
      await esp.waitFor(1, 2000);
      assert.equal(esp.messages[0]?.from, '');
      assert.equal(esp.messages[0]?.secure, false);
    } finally {
      await esp.close();
    }
  });
});

// A stand-in for bin/smarthost.js: reads the port from the config, answers SMTP, logs, and
// exits 0 on SIGTERM (or 3 at once with FAKE_FAIL=1).
const FAKE_RELAY = `
import fs from 'node:fs';
import net from 'node:net';
const file = process.argv[process.argv.indexOf('-c') + 1];
if (process.env.FAKE_FAIL === '1') { console.error('config error: listen[0].port: bad'); process.exit(3); }
const port = Number(/listen:[\\s\\S]*?port: (\\d+)/.exec(fs.readFileSync(file, 'utf8'))[1]);
const server = net.createServer((s) => {
  s.write('220 fake.test ESMTP smarthost (fake)\\r\\n');
  s.on('data', (d) => { if (/^QUIT/i.test(String(d))) s.end('221 bye\\r\\n'); else s.write('250 ok\\r\\n'); });
  s.on('error', () => {});
});
server.listen(port, '127.0.0.1', () => console.log('fake relay listening on ' + port + '\\nsmarthost started (config: ' + file + ')'));
process.on('SIGTERM', () => { console.log('fake relay stopping'); server.close(); process.exit(0); });
setTimeout(() => console.log('fake relay tick'), 300);
`;

describe('relay process wrapper (fake relay)', () => {
  let bin: string;
  before(async () => {
    const dir = await makeTempDir('fake-relay');
    bin = path.join(dir, 'fake-smarthost.mjs');
    await fs.writeFile(bin, FAKE_RELAY);
  });

  test('freePort gives a bindable port', async () => {
    const port = await freePort();
    assert.ok(port > 0 && port < 65536);
  });

  test('writes the config with defaults, waits for SMTP, stops, restarts and kills', async () => {
    const relay = await startRelay({ bin, config: { upstream: { host: '127.0.0.1', port: 2 } } });
    try {
      const written = await fs.readFile(relay.configFile, 'utf8');
      assert.match(written, /hostname: relay\.test/);
      assert.match(written, new RegExp(`port: ${relay.port}`));
      assert.match(written, /level: debug/);
      assert.equal(relay.spoolDir, path.join(relay.dir, 'data'));
      assert.equal(path.dirname(relay.configFile), relay.dir);
      await relay.waitForOutput(/fake relay listening on \d+/, 2000);
      await relay.waitForOutput(/fake relay tick/, 2000);
      await assert.rejects(relay.waitForOutput(/never printed/, 50), RelayStartError);
      const replies = await rawSmtpSession(relay.port, ['EHLO x', 'QUIT']);
      assert.deepEqual(
        replies.map((r) => r.slice(0, 3)),
        ['220', '250', '221'],
      );

      assert.equal(await relay.stop(), 0);
      assert.match(relay.output(), /fake relay stopping/);
      const firstPid = relay.process.pid;

      await relay.restart();
      assert.notEqual(relay.process.pid, firstPid);
      assert.ok(relay.running);
      // A fresh run: output before the restart does not satisfy waitForOutput.
      await assert.rejects(relay.waitForOutput(/fake relay stopping/, 50));
      await relay.waitForOutput(/fake relay listening/, 2000);

      await relay.kill();
      assert.equal(relay.running, false);
      assert.equal(relay.process.signalCode, 'SIGKILL');
    } finally {
      await relay.kill();
    }
  });

  test('rejects with the output when the relay exits during start-up', async () => {
    await assert.rejects(
      startRelay({ bin, config: {}, env: { FAKE_FAIL: '1' } }),
      (err: unknown) =>
        err instanceof RelayStartError && err.exitCode === 3 && /listen\[0\]\.port: bad/.test(err.output),
    );
  });
});
