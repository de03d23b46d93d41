// A corpus of hostile input, all at once: 10 MB lines, NUL bytes, malformed commands,
// pipelining abuse, header injection attempts, invalid UTF-8, truncated sessions and slow
// clients (slowloris). Throughout, a well-behaved device keeps sending: every one of its
// messages must be accepted and delivered, and the relay must still be running at the end.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { rawSmtpSession } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { filesIn, isWhole, sendTagged, sleep, token, tokenOf, upstreamFor, waitUntil } from './common.js';

let esp: Esp;
let relay: Relay;

before(async () => {
  esp = await startEsp();
  relay = await startRelay({
    config: {
      // The device is 127.0.0.1; every other loopback address is a stranger.
      allowlist: [{ cidr: '127.0.0.1/32', name: 'device' }],
      upstream: upstreamFor(esp),
      limits: { maxMessageSize: '20MB' },
      log: { level: 'info' },
    },
  });
});

after(async () => {
  await relay?.kill();
  await esp?.close();
});

/** A raw connection: write what you like, collect what comes back until close or `ms`. */
function rawExchange(
  port: number,
  script: (socket: net.Socket) => Promise<void> | void,
  opts: { localAddress?: string; ms?: number } = {},
): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: opts.localAddress });
    let text = '';
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(finish, opts.ms ?? 15_000);
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    socket.on('error', finish);
    socket.on('close', finish);
    socket.once('data', async () => {
      try {
        await script(socket);
      } catch {
        // the server closing on us is an acceptable answer
      }
    });
  });
}

const write = (socket: net.Socket, data: string | Buffer) =>
  new Promise<void>((resolve) => {
    if (socket.destroyed) return resolve();
    socket.write(data, () => resolve());
  });

const envelope = ['EHLO hostile.test', 'MAIL FROM:<device@corp.test>', 'RCPT TO:<someone@example.com>'];

const attacks: Record<string, () => Promise<unknown>> = {
  async 'a 10 MB command line'() {
    const reply = await rawExchange(relay.port, async (s) => {
      await write(s, Buffer.alloc(10 * 1024 * 1024, 'A'));
      await write(s, '\r\nQUIT\r\n');
    });
    return reply;
  },
  async 'a 10 MB line inside DATA'() {
    return rawExchange(relay.port, async (s) => {
      await write(s, `${envelope.join('\r\n')}\r\nDATA\r\n`);
      await sleep(200);
      await write(s, 'Subject: long line\r\n\r\n');
      await write(s, Buffer.alloc(10 * 1024 * 1024, 'B'));
      await write(s, '\r\n.\r\nQUIT\r\n');
    });
  },
  async 'NUL bytes in commands and data'() {
    await rawSmtpSession(relay.port, [
      'EHLO nul\0host',
      'MAIL FROM:<dev\0ice@corp.test>',
      'MAIL FROM:<device@corp.test>',
      'RCPT TO:<some\0one@example.com>',
      'RCPT TO:<someone@example.com>',
      'DATA',
      `Subject: nul\r\n\r\nbinary \0\0\0 zeros\r\n.`,
      'QUIT',
    ]);
  },
  async 'malformed commands'() {
    await rawSmtpSession(relay.port, [
      'HELO',
      'EHLO',
      'MAIL',
      'MAIL FROM',
      'MAIL FROM:',
      'MAIL FROM:<<<>>>',
      'MAIL FROM:<device@corp.test> SIZE=abc',
      'MAIL FROM:<device@corp.test> SIZE=-1',
      'MAIL FROM:<device@corp.test> BODY=NONSENSE',
      'RCPT TO:<someone@example.com>',
      'DATA',
      'BDAT 10 LAST',
      'AUTH NONSENSE',
      'AUTH PLAIN !!!notbase64!!!',
      'STARTTLS extra',
      'VRFY root',
      'EXPN staff',
      'XCLIENT ADDR=10.0.0.1',
      'XFORWARD ADDR=10.0.0.1',
      'GET / HTTP/1.1',
      'x'.repeat(4000),
      'QUIT',
    ]).catch(() => undefined);
  },
  async 'pipelining abuse (everything in one write, DATA before 354)'() {
    return rawExchange(relay.port, async (s) => {
      const noise = 'NOOP\r\nRSET\r\n'.repeat(500);
      await write(
        s,
        `${noise}${envelope.join('\r\n')}\r\nDATA\r\nSubject: ${token('piped')}\r\n\r\nhello\r\n.\r\n` +
          'MAIL FROM:<device@corp.test>\r\n'.repeat(200) +
          'QUIT\r\n',
      );
    });
  },
  async 'header injection through EHLO, addresses and AUTH'() {
    // Bare CR / LF inside a command is the classic way into the Received line.
    await rawExchange(relay.port, async (s) => {
      await write(
        s,
        'EHLO evil\rX-Injected: helo\r\nMAIL FROM:<device@corp.test>\r\nRCPT TO:<someone@example.com>\r\nDATA\r\n',
      );
      await sleep(300);
      await write(s, `Subject: reliability ${token('inject')}\r\n\r\nbody\r\n.\r\nQUIT\r\n`);
    });
    await rawExchange(relay.port, async (s) => {
      await write(
        s,
        'EHLO ok.test\r\nMAIL FROM:<device@corp.test>\r\nRCPT TO:<some\rX-Injected: rcpt\r@example.com>\r\n' +
          'RCPT TO:<someone@example.com>\r\nDATA\r\n',
      );
      await sleep(300);
      await write(s, `Subject: reliability ${token('inject')}\r\n\r\nbody\r\n.\r\nQUIT\r\n`);
    });
  },
  async 'invalid UTF-8'() {
    await rawExchange(relay.port, async (s) => {
      await write(
        s,
        Buffer.concat([
          Buffer.from('EHLO \xff\xfe.test\r\nMAIL FROM:<', 'latin1'),
          Buffer.from([0xc3, 0x28, 0xa0, 0xa1]),
          Buffer.from(
            '@corp.test> SMTPUTF8\r\nMAIL FROM:<device@corp.test>\r\nRCPT TO:<someone@example.com>\r\nDATA\r\n',
          ),
        ]),
      );
      await sleep(300);
      await write(
        s,
        Buffer.concat([
          Buffer.from(`Subject: reliability ${token('utf8')} `),
          Buffer.from([0xf0, 0x28, 0x8c, 0x28, 0xed, 0xa0, 0x80]),
          Buffer.from('\r\n\r\nbody \xc0\xaf\xe0\x80\xaf\r\n.\r\nQUIT\r\n', 'latin1'),
        ]),
      );
    });
  },
  async 'truncated sessions'() {
    // Gone at once, after EHLO, after MAIL, and in the middle of DATA.
    await rawExchange(relay.port, (s) => void s.destroy(), { ms: 2000 });
    await rawExchange(relay.port, async (s) => {
      await write(s, 'EHLO cut.test\r\n');
      s.destroy();
    });
    await rawExchange(relay.port, async (s) => {
      await write(s, `${envelope.join('\r\n')}\r\n`);
      await sleep(100);
      s.destroy();
    });
    for (let i = 0; i < 5; i++) {
      await rawExchange(relay.port, async (s) => {
        await write(s, `${envelope.join('\r\n')}\r\nDATA\r\n`);
        await sleep(200);
        await write(s, `Subject: reliability truncated-${i}\r\n\r\n${'half a message\r\n'.repeat(2000)}`);
        s.destroy();
      });
    }
  },
  async 'slowloris: 40 clients dribbling a byte at a time'() {
    const sockets = await Promise.all(
      Array.from(
        { length: 40 },
        (_, i) =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect({
              host: '127.0.0.1',
              port: relay.port,
              localAddress: `127.0.0.${10 + (i % 4)}`,
            });
            s.on('error', () => undefined);
            s.once('connect', () => resolve(s));
            s.once('error', () => resolve(s));
          }),
      ),
    );
    const text = 'EHLO slow.test\r\nMAIL FROM:<a@b.test>\r\n';
    for (let i = 0; i < 12; i++) {
      for (const s of sockets) if (!s.destroyed) s.write(text[i % text.length]!);
      await sleep(500);
    }
    for (const s of sockets) s.destroy();
  },
};

test(
  'hostile input: the relay stays up and serves a well-behaved device throughout',
  { timeout: 240_000 },
  async (t) => {
    const canary: { tok: string; ok: boolean; response: string }[] = [];
    let attacking = true;
    const device = (async () => {
      while (attacking) {
        const tok = token('canary');
        const result = await sendTagged(relay.port, tok, { timeoutMs: 30_000 });
        canary.push({ tok, ok: result.ok, response: result.response });
        await sleep(100);
      }
    })();

    const outcomes = await Promise.allSettled(
      Object.entries(attacks).map(async ([name, attack]) => {
        await attack();
        t.diagnostic(`${name}: done, relay ${relay.running ? 'up' : 'DOWN'}`);
      }),
    );
    attacking = false;
    await device;
    for (const [i, outcome] of outcomes.entries()) {
      if (outcome.status === 'rejected') t.diagnostic(`${Object.keys(attacks)[i]} threw: ${outcome.reason}`);
    }

    assert.ok(relay.running, 'the relay survived');
    assert.doesNotMatch(relay.output(), /uncaught|unhandled|FATAL|heap out of memory/i);
    assert.ok(canary.length >= 5, `the device got a turn (${canary.length} messages)`);
    const failed = canary.filter((c) => !c.ok);
    assert.deepEqual(failed, [], 'the well-behaved device was refused during the attack');
    await waitUntil(
      'every canary message delivered',
      () => canary.every((c) => esp.messages.some((m) => isWhole(m) && tokenOf(m) === c.tok)),
      60_000,
    );

    // After the dust settles: no truncated message was queued or delivered, nothing half-written left.
    await sleep(500);
    assert.equal(
      esp.messages.filter((m) => /truncated-\d/.test(m.raw.toString('latin1'))).length,
      0,
      'a truncated DATA was delivered',
    );
    await waitUntil(
      'tmp/ to be empty',
      async () => (await filesIn(path.join(relay.spoolDir, 'tmp'))).length === 0,
      10_000,
    );
    // Nothing injected a header line into what left the relay.
    for (const m of esp.messages) {
      assert.doesNotMatch(m.raw.toString('latin1'), /^X-Injected:/im, 'a header line was injected');
    }
    // Bytes pass through untouched: invalid UTF-8 in a header arrives as sent (never re-encoded).
    const utf8 = esp.messages.find((m) => /reliability utf8-/.test(m.raw.toString('latin1')));
    if (utf8) assert.ok(utf8.raw.includes(Buffer.from([0xf0, 0x28, 0x8c, 0x28, 0xed, 0xa0, 0x80])));
    const injected = esp.messages.filter((m) => /reliability inject-/.test(m.raw.toString('latin1')));
    t.diagnostic(
      `${canary.length} canary messages, all accepted and delivered; ESP got ${esp.messages.length} in all, ` +
        `${injected.length} from the injection attempts; invalid UTF-8 ${utf8 ? 'delivered byte for byte' : 'refused'}`,
    );
    for (const m of injected) {
      const received = /^Received:.*(\r\n[ \t].*)*/m.exec(m.raw.toString('latin1'))?.[0];
      t.diagnostic(`an injection attempt went through as: ${JSON.stringify(received)}`);
    }
  },
);
