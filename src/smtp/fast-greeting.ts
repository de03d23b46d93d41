// smtp-server holds every greeting back 100 ms to catch "early talkers" (spam bots that send
// before the 220). SMTPConnection.init() does it with a fixed timer and no option to change it,
// which caps a device that opens one connection per message (printers, monitoring scripts) at
// about ten messages a second. This subclass greets at once the clients `greetAtOnce()` trusts
// (the allowlisted LAN, as Postfix's smtpd, which never delays a greeting) and keeps the delay,
// and with it the early-talker check ("421 You talk too soon"), for everyone else.
//
// It re-implements two small library methods, SMTPServer.connect() and SMTPConnection.init()
// (smtp-server 3.21.6), without the timer. test/smtp/fast-greeting.test.ts pins their source, so
// an upgrade that changes them fails the tests and this file is looked at again.
import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';

export interface FastGreetingOptions extends SMTPServerOptions {
  /** Whether a client (its address after PROXY) is greeted without the early-talker delay. */
  greetAtOnce?: (remoteAddress: string) => boolean;
  /** Called with each new connection before it starts (e.g. to adjust how it replies). */
  onConnection?: (connection: SMTPConnection) => void;
}

export class FastGreetingServer extends SMTPServer {
  private readonly greetAtOnce: (remoteAddress: string) => boolean;
  private readonly onConnection: (connection: SMTPConnection) => void;

  constructor(options: FastGreetingOptions) {
    const { greetAtOnce, onConnection, ...rest } = options;
    super(rest);
    this.greetAtOnce = greetAtOnce ?? (() => false);
    this.onConnection = onConnection ?? (() => undefined);
  }

  /** Same as SMTPServer.connect(), but trusted clients skip init()'s 100 ms greeting timer. */
  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new SMTPConnection(this, socket, socketOptions);
    this.onConnection(connection);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data: Parameters<SMTPServer['_onClientConnect']>[0]) =>
      this._onClientConnect(data),
    );
    let trusted = false;
    try {
      trusted = this.greetAtOnce(connection.remoteAddress);
    } catch {
      // a failing predicate keeps the library's default (delayed) behaviour
    }
    if (trusted) initWithoutDelay(connection);
    else connection.init();
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
