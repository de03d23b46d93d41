// server-adapter.ts, the one place that uses smtp-server's internals. The first tests pin every
// internal it relies on, so an smtp-server upgrade that changes one fails here and the adapter
// is reviewed again. Then: allowlisted clients are greeted at once, everyone else keeps
// smtp-server's early-talker check.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { AdapterServer, base32Id, sessionId } from '../../src/smtp/server-adapter.js';
import { startRelay } from '../helpers/relay.js';

const squash = (source: string) => source.replace(/\s+/g, ' ').trim();

test('smtp-server still has the shape server-adapter.ts copies (connect and init)', () => {
  assert.equal(
    squash(SMTPServer.prototype.connect.toString()),
    squash(`connect(socket, socketOptions) {
        let connection = new SMTPConnection(this, socket, socketOptions);
        this.connections.add(connection);
        connection.on('error', err => this._onError(err));
        connection.on('connect', data => this._onClientConnect(data));
        connection.init();
    }`),
    'SMTPServer.prototype.connect changed: review src/smtp/server-adapter.ts against the new version',
  );
  assert.equal(
    squash(SMTPConnection.prototype.init.toString()),
    squash(`init() {
        // Setup event handlers for the socket
        this._setListeners(() => {
            // Check that connection limit is not exceeded
            if (this._server.options.maxClients && this._server.connections.size > this._server.options.maxClients) {
                return this.send(421, this.name + ' Too many connected clients, try again in a moment', false);
            }
            // Keep a small delay for detecting early talkers
            let readyTimer = setTimeout(() => this.connectionReady(), 100);
            // Unref timer so connection init delay doesn't prevent process exit
            readyTimer.unref();
        });
    }`),
    'SMTPConnection.prototype.init changed: review src/smtp/server-adapter.ts against the new version',
  );
  // AdapterConnection.handler_QUIT replaces this one: the same reply, then close().
  assert.equal(
    squash(SMTPConnection.prototype.handler_QUIT.toString()),
    squash(`handler_QUIT(command, callback) {
        this.send(221, 'Bye');
        this.close();
        callback();
    }`),
    'SMTPConnection.prototype.handler_QUIT changed: review src/smtp/server-adapter.ts against the new version',
  );
  // AdapterServer._handleProxy copies the branch for peers without a PROXY header.
  assert.match(
    sourceOf(SMTPServer.prototype._handleProxy),
    /let socketOptions = \{ id: BigInt\('0x' \+ crypto\.randomBytes\(10\)\.toString\('hex'\)\) \.toString\(32\) \.padStart\(16, '0'\) \}; if \(!this\._expectsProxyHeader\(socket\)\) \{ socketOptions\.ignore = this\.options\.ignoredHosts && this\.options\.ignoredHosts\.includes\(socket\.remoteAddress\); setImmediate\(\(\) => callback\(null, socketOptions\)\); return; \}/,
  );
  // The constructor takes the local end from the socket options when given, and sets TCP_NODELAY
  // through setNoDelay(), which asks the kernel only when net.Socket's flag says it is not set.
  const constructor = squash(SMTPConnection.toString());
  assert.match(constructor, /socket\.setNoDelay\(true\)/);
  assert.match(
    constructor,
    /this\.localAddress = normalizeAddress\(options\.localAddress \|\| this\._socket\.localAddress\)/,
  );
  assert.match(
    constructor,
    /this\.localPort = Number\(options\.localPort \|\| this\._socket\.localPort\) \|\| 0/,
  );
  const flag = Object.getOwnPropertySymbols(new net.Socket()).find((s) => s.description === 'kSetNoDelay');
  assert.ok(flag, "net.Socket's kSetNoDelay is gone: review AdapterServer.listening()");
  assert.match(
    sourceOf(net.Socket.prototype.setNoDelay),
    /enable !== this\[kSetNoDelay\]\) \{ this\[kSetNoDelay\] = enable; this\._handle\.setNoDelay\(enable\);/,
  );
  for (const method of ['_setListeners', 'connectionReady', 'send'] as const) {
    assert.equal(typeof SMTPConnection.prototype[method], 'function', `SMTPConnection.${method} is gone`);
  }
});

/** The source of a library method, whitespace squashed, to look for what the adapter relies on. */
function sourceOf(method: unknown): string {
  assert.equal(typeof method, 'function', 'a method the adapter uses is gone');
  return squash(String(method));
}

test('smtp-server still has every internal server-adapter.ts uses', () => {
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
  // Wrapped per connection: each must still be called through `this`, so the wrapper is used.
  assert.match(
    sourceOf(proto._createParser),
    /parser\.oncommand = \(command, callback\) => this\._onCommand\(command, callback\)/,
  );
  assert.match(sourceOf(proto.handler_MAIL), /this\._parseAddressCommand\('mail from', command\)/);
  assert.match(sourceOf(proto.handler_RCPT), /this\._parseAddressCommand\('rcpt to', command\)/);
  assert.match(sourceOf(proto._onCloseEvent), /this\._onClose\(\)/);
  assert.match(sourceOf(proto._parseAddressCommand), /^_parseAddressCommand\(rawName, rawCommand\)/);
  // send(): a 421 closes the connection; the single write site.
  assert.match(sourceOf(proto.send), /if \(code === 421\) \{ \/\/ [^}]*this\.close\(\);/);
  // Whose turn it is (the deadline): the same test smtp-server's own idle timeout makes.
  assert.match(
    sourceOf(proto._onTimeout),
    /this\._handlerPending \|\| \(this\._dataStream && this\._parser && !this\._parser\._dataMode\)/,
  );
  // _onCommand: continuation lines go to _nextHandler, nothing runs before the greeting.
  const onCommand = sourceOf(proto._onCommand);
  assert.match(onCommand, /if \(this\._upgrading\)/);
  assert.match(onCommand, /if \(!this\._ready\)/);
  assert.match(onCommand, /if \(this\._nextHandler\)/);
  // handler_DATA replies 354 after handing the stream over, and ends by resetting the session.
  assert.match(sourceOf(proto.handler_DATA), /this\.send\(354, /);
  // options.size is read afresh by EHLO, MAIL SIZE= and DATA (setMaxSize relies on it).
  assert.match(sourceOf(proto.handler_EHLO), /this\._server\.options\.size/);
  assert.match(sourceOf(proto._validateMailParams), /Number\(args\.SIZE\) > this\._server\.options\.size/);
  assert.match(sourceOf(proto.handler_DATA), /startDataMode\(this\._server\.options\.size\)/);
  // server.connections is the Set of open connections.
  const server = new SMTPServer({ logger: false, disabledCommands: ['STARTTLS'] });
  assert.ok(server.connections instanceof Set);
  assert.match(sourceOf(proto.close), /this\._server\.connections\.delete\(this\)/);
});

/**
 * An early talker that should be caught: up to three tries, because the catch depends on the
 * talker's EHLO being seen within smtp-server's 100 ms, which an event loop stalled that long
 * (a busy test machine) can miss. A server that never says 421 still fails every try.
 */
async function caughtEarlyTalker(port: number, localAddress: string): Promise<string> {
  let text = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    text = await earlyTalker(port, localAddress);
    if (/421 .*You talk too soon/.test(text)) break;
  }
  return text;
}

/**
 * Connects from `localAddress` and sends EHLO before any greeting could arrive (an early talker).
 * Returns everything the server sent until it closed or `ms` passed.
 */
function earlyTalker(port: number, localAddress: string, ms = 1500): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let text = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(done, ms);
    socket.on('connect', () => socket.write('EHLO early.test\r\nQUIT\r\n'));
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    socket.on('close', done);
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function listen(server: SMTPServer): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.server.address() as net.AddressInfo).port;
}

function close(server: SMTPServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

test('a trusted client is greeted before it speaks; an untrusted early talker gets 421', async (t) => {
  const server = new AdapterServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    closeTimeout: 100,
    // As in the relay: no reverse lookup, and onConnect answers at once (the defaults are async).
    onConnect: (_session, cb) => cb(),
    disableReverseLookup: true,
    hooks: { greetAtOnce: (ip) => ip === '127.0.0.1' },
  });
  const port = await listen(server);
  t.after(() => close(server));

  const trusted = await earlyTalker(port, '127.0.0.1');
  assert.match(trusted, /^220 /, trusted);
  assert.match(trusted, /\r\n250[- ]/, `EHLO answered: ${trusted}`);
  assert.doesNotMatch(trusted, /talk too soon/);

  const untrusted = await caughtEarlyTalker(port, '127.0.0.2');
  assert.match(untrusted, /421 .*You talk too soon/, untrusted);
});

test('without greetAtOnce it behaves like SMTPServer (everyone delayed)', async (t) => {
  const server = new AdapterServer({ logger: false, disabledCommands: ['STARTTLS'], closeTimeout: 100 });
  const port = await listen(server);
  t.after(() => close(server));
  assert.match(await caughtEarlyTalker(port, '127.0.0.1'), /421 .*You talk too soon/);
});

test('a throwing predicate falls back to the delay, and maxClients still holds for trusted clients', async (t) => {
  const throwing = new AdapterServer({
    logger: false,
    disabledCommands: ['STARTTLS'],
    closeTimeout: 100,
    hooks: {
      greetAtOnce: () => {
        throw new Error('boom');
      },
    },
  });
  const port1 = await listen(throwing);
  t.after(() => close(throwing));
  assert.match(await caughtEarlyTalker(port1, '127.0.0.1'), /421 .*You talk too soon/);

  const limited = new AdapterServer({
    logger: false,
    disabledCommands: ['STARTTLS'],
    closeTimeout: 100,
    maxClients: 1,
    hooks: { greetAtOnce: () => true },
  });
  const port2 = await listen(limited);
  t.after(() => close(limited));
  const first = net.connect({ host: '127.0.0.1', port: port2 });
  first.on('error', () => undefined);
  t.after(() => {
    first.destroy();
  });
  await new Promise<void>((resolve) => first.once('data', () => resolve()));
  const second = await earlyTalker(port2, '127.0.0.1');
  assert.match(second, /^421 .*Too many connected clients/, second);
});

const relays: { kill(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(relays.map((r) => r.kill()));
});

test('the relay greets its allowlist at once and keeps the early-talker check for others', async () => {
  const relay = await startRelay({
    config: { allowlist: [{ cidr: '127.0.0.1/32', name: 'lan' }], log: { level: 'warn' } },
  });
  relays.push(relay);
  const lan = await earlyTalker(relay.port, '127.0.0.1');
  assert.match(lan, /^220 /, lan);
  assert.match(lan, /\r\n250[- ]/, lan);
  const outsider = await caughtEarlyTalker(relay.port, '127.0.0.2');
  assert.match(outsider, /421 .*You talk too soon/, outsider);
});

/** Writes each line (CRLF added) after the previous reply; resolves every reply, greeting first. */
function converse(port: number, lines: string[]): Promise<string[]> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const replies: string[] = [];
    let buffer = '';
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(replies));
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      let end: number;
      while ((end = buffer.indexOf('\r\n')) !== -1) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (/^\d{3}-/.test(line)) continue;
        replies.push(line);
        const next = lines.shift();
        if (next === undefined) socket.end();
        else socket.write(`${next}\r\n`);
      }
    });
  });
}

test('the hooks: address lines as written, an answer before smtp-server, a hang-up after a reply', async (t) => {
  const seen: string[] = [];
  let replies = 0;
  const server = new AdapterServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    closeTimeout: 100,
    disableReverseLookup: true,
    onConnect: (_session, cb) => cb(),
    hooks: {
      greetAtOnce: () => true,
      addressCommand: (kind, line, parse) => {
        seen.push(`${kind}|${line}`);
        return parse(kind.toLowerCase(), line.replace(/:(\S+@\S+)$/, ':<$1>'));
      },
      beforeCommand: (name) => (name === 'VRFY' ? { code: 502, message: '5.5.1 not here' } : undefined),
      afterReply: (code) =>
        code >= 500 && ++replies >= 2 ? { code: 421, message: '4.7.0 enough' } : undefined,
    },
  });
  const port = await listen(server);
  t.after(() => close(server));
  const got = await converse(port, ['EHLO a.test', 'MAIL FROM:a@b.example', 'VRFY x', 'NOPE', 'NOOP']);
  assert.deepEqual(seen, ['MAIL FROM|MAIL FROM:a@b.example']);
  assert.match(got[2] ?? '', /^250 /, 'the hook can rewrite what smtp-server reads');
  assert.equal(got[3], '502 5.5.1 not here');
  assert.match(got[4] ?? '', /^500 /);
  assert.equal(got[5], '421 4.7.0 enough');
  assert.equal(got.length, 6, 'closed after the 421');
});

test('the deadline: trickled bytes do not extend it; a complete line does', async (t) => {
  const server = new AdapterServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    closeTimeout: 100,
    disableReverseLookup: true,
    onConnect: (_session, cb) => cb(),
    hooks: {
      greetAtOnce: () => true,
      deadline: () => 600,
      expired: () => ({ code: 421, message: '4.4.2 too slow' }),
    },
  });
  const port = await listen(server);
  t.after(() => close(server));
  const text = await new Promise<string>((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let got = '';
    socket.on('error', () => undefined);
    const drip = setInterval(() => socket.write('N'), 100);
    const guard = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (chunk: Buffer) => (got += chunk.toString('latin1')));
    socket.on('close', () => {
      clearInterval(drip);
      clearTimeout(guard);
      resolve(got);
    });
  });
  assert.match(text, /421 4\.4\.2 too slow/);
  // Whole commands, each within the deadline, keep the session beyond it.
  const lines = ['NOOP', 'NOOP', 'NOOP', 'NOOP'];
  const socket = net.connect({ host: '127.0.0.1', port });
  let got = '';
  socket.on('data', (chunk: Buffer) => (got += chunk.toString('latin1')));
  await new Promise((resolve) => socket.once('data', resolve));
  for (const line of lines) {
    socket.write(`${line}\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  socket.destroy();
  assert.equal(got.match(/^250 /gm)?.length, 4, got);
  assert.doesNotMatch(got, /421/);
});

test('QUIT: the 221 arrives whole, then the server closes; a client leaving with a reset is no error', async (t) => {
  const errors: Error[] = [];
  const closed: string[] = [];
  const server = new AdapterServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    closeTimeout: 100,
    disableReverseLookup: true,
    onConnect: (_session, cb) => cb(),
    onClose: (session) => closed.push(session.id),
    hooks: { greetAtOnce: () => true },
  });
  server.on('error', (err) => errors.push(err));
  const port = await listen(server);
  t.after(() => close(server));

  // A polite client: reads the 221 and then the server's FIN.
  const text = await new Promise<string>((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let got = '';
    socket.on('error', () => undefined);
    socket.once('data', () => socket.write('EHLO a.test\r\nQUIT\r\n'));
    socket.on('data', (chunk: Buffer) => (got += chunk.toString('latin1')));
    socket.on('end', () => resolve(got));
  });
  assert.match(text, /\r\n221 Bye\r\n$/, text);

  // One that resets the connection as soon as it has the 221 (SO_LINGER 0, as smtp-source does).
  const reset = await new Promise<string>((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let got = '';
    socket.on('error', () => undefined);
    socket.once('data', () => socket.write('QUIT\r\n'));
    socket.on('data', (chunk: Buffer) => {
      got += chunk.toString('latin1');
      if (/\r\n221 /.test(got)) socket.resetAndDestroy();
    });
    socket.on('close', () => resolve(got));
  });
  assert.match(reset, /\r\n221 Bye\r\n$/, reset);
  for (let i = 0; i < 50 && (closed.length < 2 || server.connections.size > 0); i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(closed.length, 2, 'onClose ran for both sessions');
  assert.equal(server.connections.size, 0);
  assert.deepEqual(errors, []);
});

test('session ids: the format smtp-server makes, from the same 80 random bits', () => {
  const samples = [Buffer.alloc(10), Buffer.alloc(10, 0xff), Buffer.from('0123456789abcdef0123', 'hex')];
  for (let i = 0; i < 200; i++) samples.push(crypto.randomBytes(10));
  for (const bytes of samples) {
    const expected = BigInt(`0x${bytes.toString('hex')}`)
      .toString(32)
      .padStart(16, '0');
    assert.equal(base32Id(Buffer.concat([Buffer.alloc(3), bytes]), 3), expected);
  }
  const ids = new Set(Array.from({ length: 1000 }, () => sessionId()));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, /^[0-9a-v]{16}$/);
});

test("the session's local address and port: the listener's, or the socket's on a wildcard listener", async (t) => {
  for (const host of ['127.0.0.1', '0.0.0.0']) {
    const sessions: { id: string; localAddress: string; localPort: number }[] = [];
    const server = new AdapterServer({
      logger: false,
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      closeTimeout: 100,
      disableReverseLookup: true,
      onConnect: (session, cb) => {
        sessions.push(session);
        cb();
      },
      hooks: { greetAtOnce: () => true },
    });
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const port = (server.server.address() as net.AddressInfo).port;
    t.after(() => close(server));
    const replies = await converse(port, ['NOOP', 'QUIT']);
    assert.match(replies[1] ?? '', /^250 /);
    assert.equal(sessions.length, 1);
    assert.equal(sessions[0]!.localAddress, '127.0.0.1', host);
    assert.equal(sessions[0]!.localPort, port, host);
    assert.match(sessions[0]!.id, /^[0-9a-v]{16}$/);
  }
});
