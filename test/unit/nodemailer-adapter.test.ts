// Pins everything the relay uses of nodemailer beyond its documented options
// (src/delivery/nodemailer-adapter.ts): each private method and field, and what comes out on
// the wire through it, against a raw SMTP server that records every line. A nodemailer upgrade
// that changes any of it fails here, by name, rather than in production with DSN parameters
// silently dropped or a UTF-8 message sent raw.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { decide } from '../../src/delivery/classify.js';
import {
  advertisedSize,
  connectWithoutDelay,
  envelopeWithExtras,
  factsOf,
  installConnectionPatches,
  orcptArg,
  rejectedErrorsOf,
  stepOf,
  type ConnectionInternals,
  type SmtpFailure,
  type TransactionExtras,
} from '../../src/delivery/nodemailer-adapter.js';

/** A raw SMTP server: records each line, answers from `reply` (or a plain 250). */
interface RawServer {
  port: number;
  lines: string[];
  /** EHLO's extensions, e.g. ['PIPELINING', 'DSN']. */
  extensions: string[];
  /** The greeting, default "220 raw.test ESMTP". */
  greeting?: string;
  /** A reply to the line instead of the default; DROP closes the connection instead. */
  reply: (line: string) => string | undefined;
  close(): Promise<void>;
}

async function rawServer(): Promise<RawServer> {
  const sockets = new Set<net.Socket>();
  const state: RawServer = {
    port: 0,
    lines: [],
    extensions: [],
    reply: () => undefined,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffer = '';
    let inData = false;
    socket.write(`${state.greeting ?? '220 raw.test ESMTP'}\r\n`);
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      for (let nl = buffer.indexOf('\r\n'); nl !== -1; nl = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            socket.write(`${state.reply('.') ?? '250 2.0.0 Ok'}\r\n`);
          }
          continue;
        }
        state.lines.push(line);
        const verb = line.slice(0, 4).toUpperCase();
        const custom = state.reply(line);
        if (custom === DROP) {
          socket.destroy();
          return;
        }
        if (verb === 'EHLO' && !custom) {
          const ext = ['raw.test', ...state.extensions];
          socket.write(ext.map((e, i) => `250${i === ext.length - 1 ? ' ' : '-'}${e}\r\n`).join(''));
        } else if (verb === 'QUIT') {
          socket.end('221 Bye\r\n');
        } else {
          if (verb === 'DATA' && !custom) inData = true;
          socket.write(`${custom ?? (verb === 'DATA' ? '354 Go on' : '250 Ok')}\r\n`);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as net.AddressInfo).port;
  return state;
}

function transport(port: number) {
  return nodemailer.createTransport({
    pool: true,
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    maxConnections: 1,
    logger: false,
    getSocket: connectWithoutDelay,
  } as nodemailer.TransportOptions);
}

const RAW = Buffer.from('Subject: pin\r\n\r\nhello\r\n');
const DROP = '<drop>';

describe('nodemailer internals the adapter relies on', { timeout: 30_000 }, () => {
  let server: RawServer;

  before(async () => {
    server = await rawServer();
  });

  after(async () => {
    await server.close();
  });

  const send = async (extensions: string[], to: string[], extras: TransactionExtras, dsn?: object) => {
    server.extensions = extensions;
    server.lines.length = 0;
    const t = transport(server.port);
    try {
      return await t.sendMail({
        envelope: envelopeWithExtras({ from: 'app@corp.example', to, ...(dsn ? { dsn } : {}) }, extras),
        raw: RAW,
      });
    } finally {
      t.close();
    }
  };
  const lines = (verb: string) => server.lines.filter((l) => l.toUpperCase().startsWith(verb));

  test('SMTPConnection has the private methods the patches wrap, and they are patched', () => {
    const proto = SMTPConnection.prototype as unknown as Record<string | symbol, unknown>;
    for (const name of ['_setEnvelope', '_getDsnRcptToArgs', '_sendCommand']) {
      assert.equal(typeof proto[name], 'function', `SMTPConnection.prototype.${name}`);
    }
    assert.equal(proto[Symbol.for('smarthost.nodemailer.patched')], true);
    // A nodemailer without one of them stops the relay at once instead of dropping parameters.
    const stripped = { _setEnvelope() {}, _sendCommand() {} } as unknown as ConnectionInternals;
    assert.throws(() => installConnectionPatches(stripped), /no _getDsnRcptToArgs/);
  });

  test('per-recipient NOTIFY and ORCPT on each RCPT TO line, pipelined or not, xtext encoded', async () => {
    const extras: TransactionExtras = {
      recipients: [
        { address: 'one@example.com', notify: 'SUCCESS', orcpt: 'rfc822;first+41@example.com' },
        { address: 'two@example.com', notify: 'FAILURE,DELAY', orcpt: 'rfc822;second=x y@example.com' },
        { address: 'three@example.com' },
      ],
    };
    const expected = [
      'RCPT TO:<one@example.com> NOTIFY=SUCCESS ORCPT=rfc822;first+2B41@example.com',
      'RCPT TO:<two@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;second+3Dx+20y@example.com',
      'RCPT TO:<three@example.com>',
    ];
    const to = extras.recipients!.map((r) => r.address);
    for (const pipelining of [true, false]) {
      const info = await send(pipelining ? ['PIPELINING', 'DSN'] : ['DSN'], to, extras, {
        ret: 'HDRS',
        envid: 'x+y',
      });
      assert.deepEqual(info.accepted, to);
      assert.deepEqual(lines('RCPT'), expected, pipelining ? 'pipelined' : 'one at a time');
      assert.deepEqual(lines('MAIL'), ['MAIL FROM:<app@corp.example> RET=HDRS ENVID=x+2By']);
    }
    // Without DSN offered: no parameters at all.
    await send(['PIPELINING'], to, extras);
    assert.deepEqual(
      lines('RCPT'),
      to.map((a) => `RCPT TO:<${a}>`),
    );
  });

  test('an IDN domain nodemailer turns into punycode still finds its recipient', async () => {
    await send(['DSN'], ['a@bücher.example'], {
      recipients: [{ address: 'a@bücher.example', notify: 'NEVER' }],
    });
    assert.deepEqual(lines('RCPT'), ['RCPT TO:<a@xn--bcher-kva.example> NOTIFY=NEVER']);
  });

  test('without extras, nodemailer’s own DSN handling is unchanged', async () => {
    await send(
      ['DSN'],
      ['a@example.com', 'b@example.com'],
      {},
      { notify: 'SUCCESS', orcpt: 'a@example.com' },
    );
    assert.deepEqual(lines('RCPT'), [
      'RCPT TO:<a@example.com> NOTIFY=SUCCESS ORCPT=rfc822;a@example.com',
      'RCPT TO:<b@example.com> NOTIFY=SUCCESS ORCPT=rfc822;a@example.com',
    ]);
  });

  test('SMTPUTF8: on MAIL where offered; refused before MAIL where needed and not offered', async () => {
    await send(['SMTPUTF8'], ['a@example.com'], { smtpUtf8: { need: 'requested' } });
    assert.deepEqual(lines('MAIL'), ['MAIL FROM:<app@corp.example> SMTPUTF8']);
    // nodemailer's own: a non-ASCII address gets it once, not twice.
    await send(['SMTPUTF8'], ['josé@example.com'], { smtpUtf8: { need: 'required' } });
    assert.deepEqual(lines('MAIL'), ['MAIL FROM:<app@corp.example> SMTPUTF8']);
    assert.deepEqual(lines('RCPT'), ['RCPT TO:<josé@example.com>']);
    await send([], ['a@example.com'], { smtpUtf8: { need: 'requested' } });
    assert.deepEqual(lines('MAIL'), ['MAIL FROM:<app@corp.example>']);
    await assert.rejects(
      send([], ['josé@example.com'], { smtpUtf8: { need: 'required', reason: 'the message has x' } }),
      (err: SmtpFailure) => {
        assert.equal(err.code, 'ESMTPUTF8');
        assert.equal(err.response, '553 5.6.7 the upstream does not support SMTPUTF8; the message has x');
        return true;
      },
    );
    assert.deepEqual(lines('MAIL'), [], 'nothing sent raw');
  });

  test('errors: code, command, responseCode, response; rejectedErrors per recipient', async () => {
    server.reply = (line) => (line.includes('<bad@') ? '550 5.1.1 No such user' : undefined);
    try {
      const info = await send(['PIPELINING'], ['ok@example.com', 'bad@example.com'], {});
      const [rejected] = rejectedErrorsOf(info);
      assert.equal(rejected?.recipient, 'bad@example.com');
      assert.equal(rejected?.responseCode, 550);
      assert.equal(rejected?.command, 'RCPT TO');
      assert.equal(rejected?.response, '550 5.1.1 No such user');
      const all = await send([], ['bad@example.com'], {}).catch((err: unknown) => err);
      assert.equal(rejectedErrorsOf(all)[0]?.recipient, 'bad@example.com');
      server.reply = (line) => (line === '.' ? '451 4.3.0 Try again later' : undefined);
      const failed = (await send([], ['ok@example.com'], {}).catch((err: unknown) => err)) as SmtpFailure;
      assert.deepEqual(factsOf(failed), {
        step: 'data',
        code: 451,
        enhanced: '4.3.0',
        text: '451 4.3.0 Try again later',
        connectionLost: false,
      });
      assert.equal(typeof failed.code, 'string');
    } finally {
      server.reply = () => undefined;
    }
  });

  test('the command and code of each failure, as stepOf and factsOf read them', async () => {
    const failure = async (
      setup: { greeting?: string; extensions?: string[]; reply?: (line: string) => string | undefined },
      options: Record<string, unknown> = {},
    ): Promise<SmtpFailure> => {
      server.greeting = setup.greeting;
      server.extensions = setup.extensions ?? [];
      server.reply = setup.reply ?? (() => undefined);
      const t = nodemailer.createTransport({
        pool: true,
        host: '127.0.0.1',
        port: server.port,
        ignoreTLS: true,
        logger: false,
        ...options,
      } as nodemailer.TransportOptions);
      try {
        await t.sendMail({ envelope: { from: 'app@corp.example', to: ['a@example.com'] }, raw: RAW });
      } catch (err) {
        return err as SmtpFailure;
      } finally {
        t.close();
        server.greeting = undefined;
        server.reply = () => undefined;
      }
      throw new Error('sent, where it should have failed');
    };
    const on = (prefix: string, answer: string) => (line: string) =>
      line.toUpperCase().startsWith(prefix) ? answer : undefined;

    const closed = await rawServer();
    const closedPort = closed.port;
    await closed.close();
    const refused = await failure({}, { port: closedPort });
    assert.deepEqual([stepOf(refused), refused.command], ['connect', 'CONN']);

    const greeting = await failure({ greeting: '554 5.7.1 Go away' });
    assert.deepEqual([stepOf(greeting), greeting.command, greeting.responseCode], ['greeting', 'CONN', 554]);

    const ehlo = await failure({ reply: (l) => (/^(EHLO|HELO)/i.test(l) ? '550 5.5.1 No' : undefined) });
    assert.equal(stepOf(ehlo), 'ehlo', String(ehlo.command));

    const tls = await failure(
      { reply: on('STARTTLS', '454 4.7.0 TLS not available') },
      { ignoreTLS: false, requireTLS: true },
    );
    assert.equal(stepOf(tls), 'starttls', `${tls.code} ${tls.command}`);

    const auth = await failure(
      { extensions: ['AUTH PLAIN'], reply: on('AUTH', '535 5.7.8 Authentication credentials invalid') },
      { auth: { user: 'u', pass: 'p' } },
    );
    assert.deepEqual([stepOf(auth), auth.code, auth.responseCode], ['auth', 'EAUTH', 535]);

    const mail = await failure({ reply: on('MAIL', '451 4.3.0 Later') });
    assert.deepEqual([stepOf(mail), mail.command, mail.responseCode], ['mail', 'MAIL FROM', 451]);

    const data = await failure({ reply: on('DATA', '554 5.7.1 No') });
    assert.deepEqual([stepOf(data), data.command, data.responseCode], ['data', 'DATA', 554]);

    const dropped = await failure({ reply: on('MAIL', DROP) });
    assert.equal(factsOf(dropped).connectionLost, true, `${dropped.code} ${dropped.command}`);
    assert.equal(decide(factsOf(dropped)).affects, 'upstream');
  });

  test('_supportedExtensions and _maxAllowedSize give the ESP’s SIZE', async () => {
    for (const [extensions, size] of [
      [['SIZE 1000000'], 1_000_000],
      [[], 0],
    ] as const) {
      server.extensions = [...extensions];
      const connection = new SMTPConnection({
        host: '127.0.0.1',
        port: server.port,
        ignoreTLS: true,
        logger: false,
      } as SMTPConnection.Options);
      connection.on('error', () => undefined);
      await new Promise<void>((resolve) => connection.connect(() => resolve()));
      assert.equal(advertisedSize(connection), size);
      connection.quit();
    }
  });

  test('the pool asks getSocket for each connection and uses the socket it gets', async () => {
    server.extensions = [];
    server.lines.length = 0;
    let asked = 0;
    const t = nodemailer.createTransport({
      pool: true,
      host: '127.0.0.1',
      port: server.port,
      ignoreTLS: true,
      logger: false,
      getSocket: (options: object, cb: Parameters<typeof connectWithoutDelay>[1]) => {
        asked++;
        connectWithoutDelay(options, cb);
      },
    } as nodemailer.TransportOptions);
    try {
      await t.sendMail({ envelope: { from: 'app@corp.example', to: ['a@example.com'] }, raw: RAW });
    } finally {
      t.close();
    }
    assert.equal(asked, 1);
    assert.deepEqual(lines('RCPT'), ['RCPT TO:<a@example.com>']);
  });

  test('ORCPT: only the address part is xtext', () => {
    assert.equal(orcptArg('rfc822;a+b=c@example.com'), 'rfc822;a+2Bb+3Dc@example.com');
    assert.equal(orcptArg('a@example.com'), 'rfc822;a@example.com');
  });
});
