// The listener: only the wiring of smtp-server's callbacks to the stages (policy, rewrite,
// spool, queue) and the mapping of their typed errors to replies. No policy lives here.
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { ListenerConfig } from '../config/load.js';
import type { Logger } from '../log.js';
import type { PolicyEngine } from '../policy/engine.js';
import { verifyPassword } from '../policy/passwords.js';
import type { Source } from '../policy/sources.js';
import { newQueueId, type QueueEntry } from '../spool/entry.js';
import type { Spool } from '../spool/spool.js';
import { SmtpError, smtpErrors } from './errors.js';
import { receiveMessage } from './receive.js';
import type { KeyPair } from './tls.js';

export interface ListenerDeps {
  /** The policy in force now; swapped whole on reload, read afresh for every transaction. */
  policy: () => PolicyEngine;
  spool: Spool;
  log: Logger;
  /** Called once a message is safely on disk, before the 250 goes out. */
  accepted: (entry: QueueEntry) => void;
  /** Refusals, for logs and metrics. */
  refused?: (reason: string, client: string, source?: string) => void;
  isShuttingDown: () => boolean;
}

interface SessionState {
  source?: Source;
}

type Callback = (err?: Error | null) => void;

export class Listener {
  readonly server: SMTPServer;
  private readonly sessions = new Map<string, SessionState>();

  constructor(
    readonly config: ListenerConfig,
    hostname: string,
    private readonly deps: ListenerDeps,
    keyPair: KeyPair | undefined,
    options: { maxSize: number; maxClients: number; closeTimeout: number },
  ) {
    const tlsOptions: Partial<SMTPServerOptions> = keyPair ? { key: keyPair.key, cert: keyPair.cert } : {};
    if (config.tls.minVersion === 'TLSv1' || config.tls.minVersion === 'TLSv1.1') {
      // OpenSSL 3 refuses TLS 1.0/1.1 at its default security level; lower it for this
      // listener only, which the admin opted into for old printers.
      tlsOptions.ciphers = 'DEFAULT:@SECLEVEL=0';
    }
    this.server = new SMTPServer({
      ...tlsOptions,
      minVersion: config.tls.minVersion,
      secure: config.implicitTls,
      hideSTARTTLS: !config.starttls || config.implicitTls || !keyPair,
      name: hostname,
      banner: 'smarthost ESMTP ready',
      size: options.maxSize,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      // AUTH is checked in onAuth, per source, so legacy networks can opt in to plain-text AUTH.
      allowInsecureAuth: true,
      disableReverseLookup: true,
      useProxy: config.proxyProtocol,
      maxClients: options.maxClients,
      closeTimeout: options.closeTimeout,
      logger: false,
      onConnect: (session, cb) => this.onConnect(session, cb),
      onSecure: (_socket, session, cb) => this.onSecure(session, cb),
      onAuth: (auth, session, cb) => void this.onAuth(auth.username ?? '', auth.password ?? '', session, cb),
      onMailFrom: (address, session, cb) => this.onMailFrom(address.address, address.args, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address.address, session, cb),
      onData: (stream, session, cb) => void this.onData(stream, session, cb),
      onClose: (session) => this.sessions.delete(session.id),
    });
    this.server.on('error', (err) =>
      deps.log.error('listener error', { event: 'listener_error', error: err.message }),
    );
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.port, this.config.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private state(session: SMTPServerSession): SessionState {
    let state = this.sessions.get(session.id);
    if (!state) this.sessions.set(session.id, (state = {}));
    return state;
  }

  private clientIp(session: SMTPServerSession): string {
    return session.remoteAddress;
  }

  private refuse(err: SmtpError, session: SMTPServerSession, cb: Callback, source?: string): void {
    this.deps.refused?.(err.reason, this.clientIp(session), source);
    this.deps.log.info('refused', {
      event: 'refused',
      reason: err.reason,
      client: this.clientIp(session),
      source,
      reply: `${err.code} ${err.message}`,
    });
    cb(err);
  }

  private onConnect(session: SMTPServerSession, cb: Callback): void {
    if (this.deps.isShuttingDown()) return cb(smtpErrors.shuttingDown());
    // Postfix's smtpd_tls_auth_only: AUTH is not offered before TLS, so clients never send a
    // password in clear text, unless this client's source opted in for a legacy device.
    if (!session.secure && !this.insecureAuthAllowed(session)) session.disabledCommands = ['AUTH'];
    cb();
  }

  private onSecure(session: SMTPServerSession, cb: Callback): void {
    session.disabledCommands = [];
    cb();
  }

  private insecureAuthAllowed(session: SMTPServerSession): boolean {
    const source = this.deps.policy().sources.byAddress(this.clientIp(session));
    return source?.policy.allowInsecureAuth === true;
  }

  private async onAuth(
    username: string,
    password: string,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: { user?: string }) => void,
  ): Promise<void> {
    if (!session.secure && !this.insecureAuthAllowed(session))
      return this.refuse(smtpErrors.insecureAuth(), session, cb);
    const user = this.deps.policy().sources.user(username);
    const ok = user ? await verifyPassword(password, user.password) : false;
    if (!ok) {
      this.deps.log.warn('authentication failed', {
        event: 'auth_failed',
        client: this.clientIp(session),
        user: username,
      });
      return this.refuse(smtpErrors.authFailed(), session, cb);
    }
    this.deps.log.info('authenticated', { event: 'auth', client: this.clientIp(session), user: username });
    cb(null, { user: username });
  }

  private onMailFrom(
    address: string,
    args: Record<string, string | true> | false,
    session: SMTPServerSession,
    cb: Callback,
  ): void {
    if (this.config.requireTls && !session.secure) return this.refuse(smtpErrors.tlsRequired(), session, cb);
    const declared = args && typeof args.SIZE === 'string' ? Number(args.SIZE) : undefined;
    try {
      const source = this.deps
        .policy()
        .checkMail({ ip: this.clientIp(session), user: session.user }, address, declared);
      this.state(session).source = source;
      cb();
    } catch (err) {
      this.fail(err, session, cb);
    }
  }

  private onRcptTo(address: string, session: SMTPServerSession, cb: Callback): void {
    const source = this.state(session).source;
    if (!source) return this.refuse(smtpErrors.notAllowed(this.clientIp(session)), session, cb);
    try {
      this.deps.policy().checkRcpt(source, address, session.envelope.rcptTo.length + 1);
      cb();
    } catch (err) {
      this.fail(err, session, cb, source.name);
    }
  }

  private async onData(
    stream: NodeJS.ReadableStream & { sizeExceeded?: boolean },
    session: SMTPServerSession,
    cb: (err?: Error | null, message?: string) => void,
  ): Promise<void> {
    const source = this.state(session).source;
    const policy = this.deps.policy();
    if (!source) {
      stream.resume();
      stream.on('end', () => this.refuse(smtpErrors.notAllowed(this.clientIp(session)), session, cb));
      return;
    }
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    try {
      const entry = await receiveMessage(
        stream as never,
        {
          id: newQueueId(),
          source,
          originalFrom: from,
          from,
          recipients: session.envelope.rcptTo.map((r) => r.address),
          client: {
            address: this.clientIp(session),
            helo: session.hostNameAppearsAs || undefined,
            user: session.user,
            tls: session.secure,
          },
          hostname: policy.config.hostname,
          sizeLimit: Math.min(policy.messageSizeLimit(source), policy.maxAdvertisedSize()),
        },
        this.deps.spool,
      );
      this.deps.log.info('accepted', {
        id: entry.id,
        event: 'accepted',
        client: entry.client.address,
        source: source.name,
        from: entry.from,
        recipients: entry.recipients.length,
        size: entry.size,
      });
      this.deps.accepted(entry);
      cb(null, `2.0.0 Ok: queued as ${entry.id}`);
    } catch (err) {
      if (stream.sizeExceeded)
        return this.fail(
          smtpErrors.messageTooBig(policy.maxAdvertisedSize(), source.name),
          session,
          cb,
          source.name,
        );
      if (!(err instanceof SmtpError)) {
        this.deps.log.error('could not queue a message', {
          event: 'spool_error',
          error: (err as Error).message,
        });
      } else if (err.reason === 'disk_full' || err.reason === 'spool_error') {
        this.deps.log.error('could not queue a message', {
          event: 'spool_error',
          error: ((err as { cause?: Error }).cause ?? err).message,
        });
      }
      this.fail(err, session, cb, source.name);
    }
  }

  private fail(err: unknown, session: SMTPServerSession, cb: Callback, source?: string): void {
    const smtp = err instanceof SmtpError ? err : smtpErrors.spoolFailed();
    this.refuse(smtp, session, cb, source);
  }
}
