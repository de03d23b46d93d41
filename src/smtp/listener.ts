// The listener: only the wiring of smtp-server's callbacks to the stages (policy, rewrite,
// spool, queue) and the mapping of their typed errors to replies. No policy lives here.
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { ListenerConfig } from '../config/load.js';
import type { RefusalReason } from '../events.js';
import type { Logger } from '../log.js';
import type { PolicyEngine } from '../policy/engine.js';
import { verifyPassword } from '../policy/passwords.js';
import { routingFormProblem } from '../policy/address.js';
import type { Source } from '../policy/sources.js';
import { planSender, type SenderPlan } from '../rewrite/sender.js';
import { newQueueId } from '../spool/entry.js';
import type { QueuedMessage, Spool } from '../spool/spool.js';
import { SmtpError, smtpErrors } from './errors.js';
import { FastGreetingServer } from './fast-greeting.js';
import { keepOwnEnhancedCodes } from './enhanced-codes.js';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { receiveMessage } from './receive.js';
import { envelopeFields, watchParameters, type WithParameters } from './esmtp-hook.js';
import type { KeyPair } from './tls.js';
import { installProxyReader } from './proxy-reader.js';

export interface ListenerDeps {
  /** The policy in force now; swapped whole on reload, read afresh for every transaction. */
  policy: () => PolicyEngine;
  spool: Spool;
  log: Logger;
  /** Called once a message is safely on disk, after the 250: the queued item, for the queue. */
  accepted: (queued: QueuedMessage) => void;
  /** Refusals, for logs and metrics. */
  refused?: (reason: RefusalReason, client: string, source?: string) => void;
  isShuttingDown: () => boolean;
}

interface SessionState {
  source?: Source;
  /** Counts the connection out of the limits when it closes. */
  release?: () => void;
}

/** An address as smtp-server hands it to onMailFrom/onRcptTo, with what watchAddresses found. */
interface CheckedAddress extends WithParameters {
  address: string;
  args: Record<string, string | true> | false;
  /** Set when the address as the client wrote it is in a routing form or malformed. */
  routingProblem?: string;
}

type Callback = (err?: Error | null) => void;

/** The part of smtp-server's connection object that a graceful shutdown needs. */
interface OpenConnection {
  session?: SMTPServerSession;
  send(code: number, text: string): void;
  close(): void;
}

/** A well-formed hash no password matches: unknown users are checked against it. */
const UNKNOWN_USER_HASH = `scrypt$16384$8$1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`;

export class Listener {
  readonly server: SMTPServer;
  private readonly sessions = new Map<string, SessionState>();
  /** Whether STARTTLS is offered and accepted here (`starttls: false` turns off both). */
  private readonly offerStarttls: boolean;

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
    this.offerStarttls = config.starttls && !config.implicitTls && keyPair !== undefined;
    // Allowlisted clients are greeted at once; others keep smtp-server's early-talker delay.
    this.server = new FastGreetingServer({
      ...tlsOptions,
      minVersion: config.tls.minVersion,
      secure: config.implicitTls,
      hideSTARTTLS: !this.offerStarttls,
      // Not offered is not enough: without this smtp-server would still answer STARTTLS (with
      // its built-in certificate when the relay made none).
      disabledCommands: this.offerStarttls ? [] : ['STARTTLS'],
      name: hostname,
      banner: 'smarthost ESMTP ready',
      size: options.maxSize,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      // AUTH is checked in onAuth, per source, so legacy networks can opt in to plain-text AUTH.
      allowInsecureAuth: true,
      disableReverseLookup: true,
      useProxy: config.proxyProtocol,
      // limits.maxConnections is enforced in onConnect, over all listeners, with a 421 4.7.0
      // that says which limit; smtp-server's own check (a bare 421) is only a backstop.
      maxClients: options.maxClients * 2,
      closeTimeout: options.closeTimeout,
      logger: false,
      onConnect: (session, cb) => this.onConnect(session, cb),
      onSecure: (_socket, session, cb) => this.onSecure(session, cb),
      onAuth: (auth, session, cb) => void this.onAuth(auth.username ?? '', auth.password ?? '', session, cb),
      onMailFrom: (address, session, cb) => this.onMailFrom(address as CheckedAddress, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address as CheckedAddress, session, cb),
      onData: (stream, session, cb) => void this.onData(stream, session, cb),
      onClose: (session) => {
        this.sessions.get(session.id)?.release?.();
        this.sessions.delete(session.id);
      },
      greetAtOnce: (ip) => deps.policy().sources.byAddress(ip) !== undefined,
      // Enhanced status codes on every reply, smtp-server's own included (see enhanced-codes.ts).
      hideENHANCEDSTATUSCODES: false,
      // RFC 3461 DSN: offered, and its parameters checked and kept (esmtp-hook.ts). REQUIRETLS
      // is not: the relay cannot promise TLS on every later hop.
      hideDSN: false,
      hideREQUIRETLS: true,
      onConnection: (connection) => {
        keepOwnEnhancedCodes(connection);
        this.watchAddresses(connection);
        watchParameters(connection);
      },
    });
    if (config.proxyProtocol) {
      installProxyReader(this.server, (peer, reason) =>
        deps.log.warn('connection closed: bad PROXY header', {
          event: 'proxy_rejected',
          client: peer,
          reason,
        }),
      );
    }
    this.server.on('error', (err) =>
      deps.log.error('listener error', { event: 'listener_error', error: err.message }),
    );
  }

  /**
   * A reload's new size limit: smtp-server reads `options.size` afresh for EHLO's SIZE, the MAIL
   * SIZE= check and the DATA stream, so setting it applies to every later command at once.
   */
  setMaxSize(bytes: number): void {
    this.server.options.size = bytes;
  }

  /**
   * A renewed certificate: every later TLS handshake (STARTTLS and implicit TLS alike take
   * smtp-server's default context) presents it; sessions already in TLS keep theirs. The pair
   * must have been checked (cert-check.ts): smtp-server keeps the options even when it throws.
   */
  updateKeyPair(pair: KeyPair): void {
    this.server.updateSecureContext({ key: pair.key, cert: pair.cert });
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

  /**
   * Stops accepting and lets sessions finish the message they are sending, up to `graceMs`.
   * smtp-server's own close() answers every further command with 421 at once, which would
   * cut off a device between MAIL and DATA; so we stop the socket server ourselves, close
   * sessions as soon as they are between messages, and force only what is left at the end.
   */
  async close(graceMs: number): Promise<void> {
    this.server.server.close();
    const deadline = Date.now() + graceMs;
    for (;;) {
      for (const connection of this.connections()) {
        if (!connection.session?.envelope?.mailFrom) this.hangUp(connection);
      }
      if (this.connections().length === 0 || Date.now() >= deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const connection of this.connections()) this.hangUp(connection);
  }

  private connections(): OpenConnection[] {
    return [...(this.server as unknown as { connections: Set<OpenConnection> }).connections];
  }

  private hangUp(connection: OpenConnection): void {
    connection.send(421, `${smtpErrors.shuttingDown().message}`);
    connection.close();
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
    if (this.deps.isShuttingDown()) return this.refuse(smtpErrors.shuttingDown(), session, cb);
    try {
      this.state(session).release = this.deps.policy().openConnection(this.clientIp(session));
    } catch (err) {
      return this.fail(err, session, cb);
    }
    // Postfix's smtpd_tls_auth_only: AUTH is not offered before TLS, so clients never send a
    // password in clear text, unless this client's source opted in for a legacy device.
    // (A session's list replaces the server's, so STARTTLS is repeated here.)
    const disabled = this.offerStarttls ? [] : ['STARTTLS'];
    if (!session.secure && !this.insecureAuthAllowed(session)) disabled.push('AUTH');
    session.disabledCommands = disabled;
    cb();
  }

  private onSecure(session: SMTPServerSession, cb: Callback): void {
    session.disabledCommands = [];
    cb();
  }

  private insecureAuthAllowed(session: SMTPServerSession): boolean {
    return this.deps.policy().insecureAuthAllowed(this.clientIp(session));
  }

  /**
   * smtp-server drops a source route (@relay:user@domain) without a word and answers other
   * malformed addresses with a bare 501. To refuse every routing form with 553 5.1.3 and say
   * why, this looks at the address as the client wrote it: a routing form or a malformed
   * address reaches onMailFrom/onRcptTo marked with the problem. test/e2e/policy-hygiene
   * pins the behaviour, so a change inside smtp-server fails the tests rather than passing.
   */
  private watchAddresses(connection: SMTPConnection): void {
    if (typeof connection._parseAddressCommand !== 'function') return;
    const parse = connection._parseAddressCommand.bind(connection);
    connection._parseAddressCommand = (name, command) => {
      const parsed = parse(name, command);
      const text = command.toString();
      const written =
        text
          .slice(text.indexOf(':') + 1)
          .trim()
          .split(/\s+/)[0] ?? '';
      const inner = /^<[^<>]*>$/.test(written) ? written.slice(1, -1) : written;
      let problem = routingFormProblem(inner);
      if (!problem && !parsed && /^<[^<>]*>$/.test(written)) {
        // The address alone (without the parameters) fails smtp-server's own syntax check.
        if (!parse(name, `${name.toUpperCase()}:${written}`)) problem = 'it is not a valid address';
      }
      if (!problem) return parsed;
      const marked: CheckedAddress = {
        address: inner,
        args: parsed ? parsed.args : false,
        routingProblem: problem,
      };
      return marked;
    };
  }

  private async onAuth(
    username: string,
    password: string,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: { user?: string }) => void,
  ): Promise<void> {
    if (!session.secure && !this.insecureAuthAllowed(session))
      return this.refuse(smtpErrors.insecureAuth(), session, cb);
    const policy = this.deps.policy();
    try {
      policy.checkAuthAllowed(this.clientIp(session));
    } catch (err) {
      return this.fail(err, session, cb);
    }
    const user = policy.sources.user(username);
    // An unknown user costs the same scrypt as a known one, so timing does not tell them apart.
    const ok = await verifyPassword(password, user?.password ?? UNKNOWN_USER_HASH).then((v) => v && !!user);
    if (!ok) {
      this.deps.log.warn('authentication failed', {
        event: 'auth_failed',
        client: this.clientIp(session),
        user: username,
      });
      const lockout = policy.authFailed(this.clientIp(session));
      if (lockout) {
        this.deps.log.warn('too many failed logins: address locked out', {
          event: 'auth_lockout',
          client: this.clientIp(session),
          failures: policy.config.limits.maxAuthFailures,
          window: policy.config.limits.authFailureWindow,
          lockout: policy.config.limits.authLockout,
        });
        return this.refuse(lockout, session, cb);
      }
      return this.refuse(smtpErrors.authFailed(), session, cb);
    }
    this.deps.log.info('authenticated', { event: 'auth', client: this.clientIp(session), user: username });
    cb(null, { user: username });
  }

  private onMailFrom(checked: CheckedAddress, session: SMTPServerSession, cb: Callback): void {
    if (this.config.requireTls && !session.secure) return this.refuse(smtpErrors.tlsRequired(), session, cb);
    const { address, args } = checked;
    const declared = args && typeof args.SIZE === 'string' ? Number(args.SIZE) : undefined;
    try {
      const policy = this.deps.policy();
      const client = { ip: this.clientIp(session), user: session.user };
      // Who may send comes first: a stranger learns nothing about address syntax.
      if (checked.routingProblem || checked.parameterProblem) {
        if (!policy.sources.resolve(client.ip, client.user)) throw smtpErrors.notAllowed(client.ip);
        if (checked.routingProblem) throw smtpErrors.badAddress(address, checked.routingProblem);
        throw checked.parameterProblem;
      }
      const source = policy.checkMail(client, address, declared);
      this.state(session).source = source;
      cb();
    } catch (err) {
      // Name the source (when there is one) so a refusal such as a rate limit counts against it.
      const source = this.deps.policy().sources.resolve(this.clientIp(session), session.user);
      this.fail(err, session, cb, source?.name);
    }
  }

  private onRcptTo(checked: CheckedAddress, session: SMTPServerSession, cb: Callback): void {
    const source = this.state(session).source;
    if (!source) return this.refuse(smtpErrors.notAllowed(this.clientIp(session)), session, cb);
    const { address } = checked;
    try {
      if (checked.routingProblem) throw smtpErrors.badAddress(address, checked.routingProblem);
      if (checked.parameterProblem) throw checked.parameterProblem;
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
    const sender = planSender(from, source.policy);
    const sizeLimit = Math.min(policy.messageSizeLimit(source, sender.from), policy.maxAdvertisedSize);
    const sizeError = () => policy.sizeError(source, sizeLimit, sender.from);
    let queued: QueuedMessage;
    try {
      queued = await receiveMessage(
        stream as never,
        {
          id: newQueueId(),
          source,
          originalFrom: from,
          from: sender.from,
          editHeaders: sender.editHeaders,
          recipients: session.envelope.rcptTo.map((r) => r.address),
          envelope: envelopeFields(session),
          client: {
            address: this.clientIp(session),
            helo: session.hostNameAppearsAs || undefined,
            user: session.user,
            tls: session.secure,
          },
          hostname: policy.config.hostname,
          sizeLimit,
          sizeError,
        },
        this.deps.spool,
      );
    } catch (err) {
      if (stream.sizeExceeded) return this.fail(sizeError(), session, cb, source.name);
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
      return this.fail(err, session, cb, source.name);
    }
    const { entry } = queued;
    // The message is on disk: the 250 goes out first. The log lines and the hand-over to the
    // queue (which starts the first attempt there and then) would otherwise delay it.
    cb(null, `2.0.0 Ok: queued as ${entry.id}`);
    try {
      this.afterAccept(queued, source.name, from, sender);
    } catch (err) {
      // Not lost: it is on disk. If it did not reach the queue, the queue takes it up at its
      // next start, with everything else in the spool.
      this.deps.log.error('after its 250, the hand-over of a queued message failed', {
        id: entry.id,
        event: 'handover_error',
        error: (err as Error).message,
      });
    }
  }

  private afterAccept(queued: QueuedMessage, source: string, from: string, sender: SenderPlan): void {
    const { entry } = queued;
    this.deps.log.info('accepted', {
      id: entry.id,
      event: 'accepted',
      client: entry.client.address,
      source,
      from: entry.from,
      recipients: entry.recipients.length,
      size: entry.size,
    });
    if (sender.envelopeRewritten || sender.headerChanges.length) {
      this.deps.log.info('sender rewritten', {
        id: entry.id,
        event: 'sender_rewritten',
        source,
        envelope: sender.envelopeRewritten ? { from, to: sender.from } : undefined,
        headers: sender.headerChanges.length ? sender.headerChanges : undefined,
      });
    }
    this.deps.accepted(queued);
  }

  private fail(err: unknown, session: SMTPServerSession, cb: Callback, source?: string): void {
    const smtp = err instanceof SmtpError ? err : smtpErrors.spoolFailed();
    this.refuse(smtp, session, cb, source);
  }
}
