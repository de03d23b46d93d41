// Every use of smtp-server's private or undocumented API, in this one file. The rest of the
// relay talks to smtp-server through its documented options and callbacks only, and to the
// hooks below; what they do with a connection is decided elsewhere (address-command.ts,
// session-guard.ts, the listener). test/smtp/server-adapter.test.ts pins each internal used
// here, so an smtp-server upgrade that changes one fails the tests rather than the relay.
//
// Internals used (smtp-server 3.21.6):
// - SMTPServer.connect() and SMTPConnection.init(), re-implemented without init()'s fixed 100 ms
//   early-talker timer for trusted clients (a device opening one connection per message is
//   otherwise capped at about ten a second); others keep the delay and "421 You talk too soon".
// - server.connections (the open connections), server.options.size (read afresh by EHLO's
//   SIZE, the MAIL SIZE= check and DATA, so setting it applies a reload at once) and
//   server.options.socketTimeout (read afresh whenever the idle timer is armed).
// - connection.send(), wrapped: our replies keep the enhanced code they name, the library's get
//   its own; each reply goes to the hooks (refused-command count, deadlines).
// - connection._parseAddressCommand(), wrapped: the address hook sees MAIL FROM / RCPT TO as the
//   client wrote them, before smtp-server's own checks.
// - connection._onCommand(), wrapped: a hook may answer a command before smtp-server does;
//   connection._onClose(), wrapped: the deadline timer goes with the connection.
// - connection._handlerPending, _dataStream, _parser._dataMode, _nextHandler: whose turn it is.
// - connection.handler_QUIT(), replaced (AdapterConnection): a plain socket is closed as soon as
//   the 221 is in the kernel, not half-closed to wait for the client's side (see there).
// - server.server._handle.setNoDelay() and net.Socket's kSetNoDelay flag: TCP_NODELAY is set once
//   on the listening socket, which Linux passes on to every socket it accepts, and Node is told
//   so (instead of one setsockopt per connection, from smtp-server's constructor).
// - server._handleProxy() and _expectsProxyHeader(): on proxyProtocol listeners the PROXY
//   header is read by proxy-reader.ts (v1 and v2) instead of the library's reader (v1 only);
//   the library keeps its pre-connect guard (timeout, maxClients) around the call.
import crypto from 'node:crypto';
import net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import { readProxyHeader } from './proxy-reader.js';

/** What smtp-server's address parser returns, and what onMailFrom / onRcptTo receive. */
export interface ParsedAddress {
  address: string;
  args: Record<string, string | true> | false;
  duplicate?: string;
}

/** smtp-server's own parser: `name` is "mail from" or "rcpt to", `line` the whole command. */
export type AddressParser = (name: string, line: string) => ParsedAddress | false;

/** A reply the adapter sends itself (a hook's answer, a hang-up). */
export interface Reply {
  code: number;
  /** Text starting with its enhanced code, e.g. "4.7.0 Too many ...". */
  message: string;
}

export interface AdapterHooks {
  /** Whether a client (its address after PROXY) is greeted without the early-talker delay. */
  greetAtOnce?: (remoteAddress: string) => boolean;
  /** MAIL FROM / RCPT TO as written, with smtp-server's parser; false makes smtp-server say 501. */
  addressCommand?: (
    kind: 'MAIL FROM' | 'RCPT TO',
    line: string,
    parse: AddressParser,
    session: SMTPServerSession,
  ) => ParsedAddress | false;
  /** Before smtp-server handles a command (never an AUTH continuation line): a reply ends it here. */
  beforeCommand?: (name: string, session: SMTPServerSession) => Reply | undefined;
  /** After each reply to the client: a reply returned is sent next and the connection closed. */
  afterReply?: (code: number, session: SMTPServerSession) => Reply | undefined;
  /**
   * How long (ms) the client has, from our last reply, for its next complete command line, or
   * for the whole message after 354; bytes trickled in do not extend it. No hook: no deadline.
   */
  deadline?: (phase: 'command' | 'data', session: SMTPServerSession) => number;
  /** The 421 for a deadline passed (the connection is closed after it). */
  expired?: (phase: 'command' | 'data', session: SMTPServerSession) => Reply;
}

export interface AdapterServerOptions extends SMTPServerOptions {
  hooks?: AdapterHooks;
}

/** Enhanced status code at the start of a reply text (RFC 3463). */
const ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3}(?:\s|$)/;

/** net.Socket's record of TCP_NODELAY (setNoDelay() calls the kernel only when it changes). */
const kSetNoDelay = Object.getOwnPropertySymbols(new net.Socket()).find(
  (s) => s.description === 'kSetNoDelay',
);

export class AdapterServer extends SMTPServer {
  private readonly hooks: AdapterHooks;
  /** The local end of every socket accepted here, when the listener is bound to one address. */
  private localEndpoint: { address: string; port: number } | undefined;
  /** Whether accepted sockets come with TCP_NODELAY set (inherited from the listening socket). */
  private noDelayInherited = false;

  constructor(options: AdapterServerOptions) {
    const { hooks, ...rest } = options;
    super(rest);
    this.hooks = hooks ?? {};
    this.server.on('listening', () => this.listening());
  }

  /**
   * Two system calls per connection made once: smtp-server asks each socket for its local address
   * (getsockname), which for a listener bound to one address is that address; and it sets
   * TCP_NODELAY on each (setsockopt), which Linux copies from the listening socket at accept.
   */
  private listening(): void {
    const address = this.server.address();
    this.localEndpoint =
      address && typeof address === 'object' && address.address !== '0.0.0.0' && address.address !== '::'
        ? { address: address.address, port: address.port }
        : undefined;
    const handle = (this.server as unknown as { _handle?: { setNoDelay?: (enable: boolean) => number } })
      ._handle;
    this.noDelayInherited =
      process.platform === 'linux' &&
      kSetNoDelay !== undefined &&
      typeof handle?.setNoDelay === 'function' &&
      handle.setNoDelay(true) === 0;
  }

  /** Same as SMTPServer.connect(), but trusted clients skip init()'s 100 ms greeting timer. */
  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    // Already set in the kernel: smtp-server's setNoDelay(true) then makes no system call.
    if (this.noDelayInherited && !(socket as tls.TLSSocket).encrypted) {
      (socket as unknown as Record<symbol, boolean>)[kSetNoDelay!] = true;
    }
    const connection = new AdapterConnection(this, socket, socketOptions);
    install(connection, this.hooks);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data: Parameters<SMTPServer['_onClientConnect']>[0]) =>
      this._onClientConnect(data),
    );
    let trusted = false;
    try {
      trusted = this.hooks.greetAtOnce?.(connection.remoteAddress) ?? false;
    } catch {
      // a failing predicate keeps the library's default (delayed) behaviour
    }
    if (trusted) initWithoutDelay(connection);
    else connection.init();
  }

  /**
   * SMTPServer._handleProxy() for a peer that sends no PROXY header, with our session id
   * (sessionId()); a peer that does goes to the library's reader (or ours: installProxyReader).
   */
  override _handleProxy(
    socket: net.Socket,
    callback: (err: Error | null, socketOptions?: SMTPConnectionOptions & { id: string }) => void,
  ): void {
    if (this._expectsProxyHeader(socket)) return super._handleProxy(socket, callback);
    const ignoredHosts = this.options.ignoredHosts;
    const socketOptions = {
      id: sessionId(),
      ignore: ignoredHosts && ignoredHosts.includes(socket.remoteAddress!),
      // undefined: smtp-server asks the socket
      localAddress: this.localEndpoint?.address,
      localPort: this.localEndpoint?.port,
    };
    setImmediate(() => callback(null, socketOptions));
  }
}

/** smtp-server's connection, with the changes made once for all connections (not per connection). */
class AdapterConnection extends SMTPConnection {
  /**
   * QUIT as smtp-server answers it (221, close), but a plain socket whose 221 is already in the
   * kernel is closed outright instead of half-closed: the kernel still sends the 221 and then the
   * FIN. Half-closed, the socket would wait for the client's side; a client that leaves with a
   * reset (smtp-source and others set SO_LINGER 0) then made Node build an ECONNRESET error,
   * stack trace included, and smtp-server handle it: about 2% of the CPU per connection. TLS
   * sockets keep the library's end() (their close_notify alert goes out with it).
   */
  override handler_QUIT(_command: Buffer, callback: () => void): void {
    this.send(221, 'Bye');
    const socket = this._socket;
    if (!(socket as tls.TLSSocket).encrypted && !socket.destroyed && socket.writableLength === 0) {
      socket.destroy();
    }
    this.close();
    callback();
  }
}

/** SMTPConnection.init() without the early-talker timer. */
function initWithoutDelay(connection: SMTPConnection): void {
  connection._setListeners(() => {
    const server = connection._server;
    if (server.options.maxClients && server.connections.size > server.options.maxClients) {
      return connection.send(
        421,
        connection.name + ' Too many connected clients, try again in a moment',
        false,
      );
    }
    connection.connectionReady();
  });
}

/** A connection as a graceful shutdown sees it. */
export interface OpenConnection {
  session?: SMTPServerSession;
  send(code: number, text: string): void;
  close(): void;
}

/** The connections open now. */
export function openConnections(server: SMTPServer): OpenConnection[] {
  return [...server.connections];
}

/** How many connections are open now (metrics, /healthz). */
export function connectionCount(server: SMTPServer): { readonly size: number } {
  return server.connections;
}

/**
 * smtp-server's own idle timeout (any byte resets it), read afresh each time it is armed; a
 * backstop behind the deadlines, which bytes do not move.
 */
export function setIdleTimeout(server: SMTPServer, ms: number): void {
  server.options.socketTimeout = ms;
}

/** A reload's new size limit, for every later EHLO, MAIL SIZE= and DATA at once. */
export function setMaxSize(server: SMTPServer, bytes: number): void {
  server.options.size = bytes;
}

function install(connection: SMTPConnection, hooks: AdapterHooks): void {
  const send = connection.send.bind(connection);
  // The enhanced code: smtp-server derives it from the basic code alone, so our replies, which
  // name theirs ("550 5.7.1 ..."), would come out doubled ("550 5.1.1 5.7.1 ..."). A reply whose
  // text starts with a code goes out as written; the library's own get the library's code, and
  // a greeting-time refusal (which the library sends without one) gets one too.
  const sendOne = (code: number, data?: string | string[] | null, context?: string | false): void => {
    if (typeof data === 'string' && ENHANCED_CODE.test(data)) return send(code, data, false);
    if (context === false && code >= 400) return send(code, data);
    return send(code, data, context);
  };
  const deadline = new Deadline(connection, hooks, sendOne);
  connection.send = (code, data, context) => {
    sendOne(code, data, context);
    if (code === 421 || connection._closing || connection._closed) return deadline.stop();
    const after = hooks.afterReply?.(code, connection.session);
    if (after) {
      deadline.stop();
      // smtp-server closes the connection after any 421 it sends.
      return sendOne(421, after.message);
    }
    deadline.replied(code);
  };
  const onClose = connection._onClose.bind(connection);
  connection._onClose = () => {
    deadline.stop();
    onClose();
  };

  const parse = connection._parseAddressCommand.bind(connection) as AddressParser;
  connection._parseAddressCommand = (name, command) => {
    const kind = name.trim().toUpperCase();
    if (!hooks.addressCommand || (kind !== 'MAIL FROM' && kind !== 'RCPT TO'))
      return parse(name, command.toString());
    return hooks.addressCommand(kind, command.toString(), parse, connection.session) as never;
  };

  const onCommand = connection._onCommand.bind(connection);
  connection._onCommand = (command, callback) => {
    deadline.heard();
    const next = callback ?? (() => undefined);
    // An AUTH continuation line (or anything while a handler waits for its next line) and
    // anything sent during a TLS handshake are smtp-server's alone.
    if (!connection._nextHandler && !connection._upgrading && connection._ready && hooks.beforeCommand) {
      const name = (command || '').toString().split(' ')[0]!.toUpperCase();
      const reply = hooks.beforeCommand(name, connection.session);
      if (reply) {
        connection.send(reply.code, reply.message);
        setImmediate(next);
        return;
      }
    }
    onCommand(command, next);
  };
}

/**
 * The deadline for the client's next complete command line (or whole message after 354),
 * armed at each reply and disarmed by each complete line; trickled bytes do not move it. When
 * it passes while the relay, not the client, is the one working (a handler pending, a message
 * read in full and being queued), it waits another round.
 */
class Deadline {
  private timer: NodeJS.Timeout | undefined;
  private round = 0;

  constructor(
    private readonly connection: SMTPConnection,
    private readonly hooks: AdapterHooks,
    private readonly send: (code: number, data: string) => void,
  ) {}

  replied(code: number): void {
    if (!this.hooks.deadline) return;
    // A 334 AUTH challenge waits for a line like any command; 354 starts the message.
    this.arm(code === 354 ? 'data' : 'command');
  }

  heard(): void {
    // A complete line: the client did its part; our reply arms the next round.
    this.round += 1;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  stop(): void {
    this.round += 1;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(phase: 'command' | 'data'): void {
    const ms = this.hooks.deadline!(phase, this.connection.session);
    const round = ++this.round;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.expired(round, phase), ms);
    this.timer.unref();
  }

  private expired(round: number, phase: 'command' | 'data'): void {
    if (round !== this.round) return;
    const c = this.connection;
    if (c._closing || c._closed) return;
    const parser = c._parser;
    const ourTurn = c._handlerPending || (c._dataStream && parser && !parser._dataMode);
    if (ourTurn) return this.arm(phase);
    const reply = this.hooks.expired?.(phase, c.session) ?? { code: 421, message: '4.4.2 Timeout' };
    this.stop();
    // smtp-server closes the connection after any 421 it sends.
    this.send(421, reply.message);
  }
}

/** Random bytes for session ids, drawn in bulk: one call to the generator per 256 connections. */
const ID_BYTES = 10;
let idPool = Buffer.alloc(0);
let idOffset = 0;

/**
 * A session id as smtp-server makes one (10 random bytes as a 16-digit base-32 number), from
 * bytes drawn in bulk and without BigInt: smtp-server's own (crypto.randomBytes(10), hex, BigInt)
 * was about 1.5% of the CPU per connection.
 */
export function sessionId(): string {
  if (idOffset + ID_BYTES > idPool.length) {
    idPool = crypto.randomBytes(ID_BYTES * 256);
    idOffset = 0;
  }
  const id = base32Id(idPool, idOffset);
  idOffset += ID_BYTES;
  return id;
}

const BASE32 = '0123456789abcdefghijklmnopqrstuv';

/**
 * The 10 bytes at `offset` as BigInt(`0x${hex}`).toString(32).padStart(16, '0') writes them:
 * each 40-bit half (exact in a double) is 8 digits, as 2^40 = 32^8.
 */
export function base32Id(bytes: Buffer, offset: number): string {
  let id = '';
  for (let half = offset; half < offset + ID_BYTES; half += 5) {
    let n = bytes[half]! * 2 ** 32 + bytes.readUInt32BE(half + 1);
    let digits = '';
    for (let i = 0; i < 8; i++) {
      digits = BASE32[n % 32]! + digits;
      n = Math.floor(n / 32);
    }
    id += digits;
  }
  return id;
}

/** Why a connection was closed before its SMTP session: for one log line naming the peer. */
export type ProxyRejected = (peer: string, reason: string) => void;

/** Makes `server` read PROXY v1 and v2 headers with our reader. */
export function installProxyReader(server: SMTPServer, rejected: ProxyRejected): void {
  const original = server._handleProxy.bind(server);
  server._handleProxy = (socket, callback) => {
    // Listeners without proxyProtocol (and peers not expected to send a header) as before.
    if (!server._expectsProxyHeader(socket)) return original(socket, callback);
    const peer = socket.remoteAddress ?? 'unknown';
    readProxyHeader(socket).then(
      (header) => {
        const id = sessionId();
        if (header.kind === 'local') return callback(null, { id });
        callback(null, { id, remoteAddress: header.address, remotePort: header.port });
      },
      (err: Error) => {
        rejected(peer, err.message);
        // Nothing can be said to a client that has not sent a valid header; a late error on a
        // closing socket must not become an uncaught exception.
        socket.on('error', () => undefined);
        socket.destroy();
        callback(err);
      },
    );
  };
}
