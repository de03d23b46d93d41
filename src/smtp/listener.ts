// The listener: only the wiring of smtp-server's callbacks to the stages and the mapping of
// their typed errors to replies. A mail transaction is the policy's (PolicyEngine.begin() →
// mail(), rcpt(), receive()); DATA is data.ts's; AUTH is auth.ts's; every use of smtp-server's
// internals is server-adapter.ts's. No policy lives here.
import type { SMTPServerSession } from 'smtp-server';
import type { ListenerConfig } from '../config/load.js';
import type { RefusalReason } from '../events.js';
import type { Logger } from '../log.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { ConnectionSlot } from '../policy/limits.js';
import type { PolicyTransaction } from '../policy/transaction.js';
import type { QueuedMessage, Spool } from '../spool/spool.js';
import { readAddressCommand, type CheckedAddress } from './address-command.js';
import { authenticate } from './auth.js';
import { logAccepted, receiveData } from './data.js';
import { SmtpError, smtpErrors } from './errors.js';
import { deadlineError, deadlineFor, idleBackstop, tlsFailure, type ServerError } from './session-limits.js';
import {
  AdapterServer,
  installProxyReader,
  connectionCount,
  openConnections,
  setIdleTimeout,
  setMaxSize,
  type OpenConnection,
  type Reply,
} from './server-adapter.js';
import { listenerTlsOptions, refuseRenegotiation, type KeyPair } from './tls.js';

export interface ListenerDeps {
  /** The policy in force now; swapped whole on reload, read afresh for every transaction. */
  policy: () => PolicyEngine;
  spool: Spool;
  log: Logger;
  /** Called once a message is safely on disk, before the 250 goes out. */
  accepted: (queued: QueuedMessage) => void;
  /** Refusals, for logs and metrics. */
  refused?: (reason: RefusalReason, client: string, source?: string) => void;
  isShuttingDown: () => boolean;
}

interface SessionState {
  /** The transaction since the last MAIL FROM. */
  tx?: PolicyTransaction;
  /** The connection's slot in the limits: released when it closes, trusted once it logs in. */
  slot?: ConnectionSlot;
  /** Commands refused in this session (counted for untrusted clients only). */
  refusals: number;
}

type Callback = (err?: Error | null) => void;

export class Listener {
  readonly server: AdapterServer;
  private readonly sessions = new Map<string, SessionState>();
  /** Whether STARTTLS is offered and accepted here (`starttls: false` turns off both). */
  private readonly offerStarttls: boolean;
  /** TLS errors already logged (smtp-server may report one failure more than once). */
  private readonly tlsFailures = new WeakSet<Error>();

  constructor(
    readonly config: ListenerConfig,
    hostname: string,
    private readonly deps: ListenerDeps,
    keyPair: KeyPair | undefined,
    options: { maxSize: number; maxClients: number; closeTimeout: number },
  ) {
    this.offerStarttls = config.starttls && !config.implicitTls && keyPair !== undefined;
    this.server = new AdapterServer({
      ...listenerTlsOptions(config, keyPair),
      secure: config.implicitTls,
      hideSTARTTLS: !this.offerStarttls,
      // Not offered is not enough: without this smtp-server would still answer STARTTLS (with
      // its built-in certificate when the relay made none).
      disabledCommands: this.offerStarttls ? [] : ['STARTTLS'],
      name: hostname,
      // smtp-server writes "<name> ESMTP <banner>": one ESMTP, as RFC 5321 4.3.1 expects.
      banner: 'smarthost ready',
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
      onSecure: (socket, session, cb) => {
        refuseRenegotiation(socket);
        this.onSecure(session, cb);
      },
      onAuth: (auth, session, cb) => void this.onAuth(auth.username ?? '', auth.password ?? '', session, cb),
      // Async for cluster mode: the rate limits may be a Redis round trip (src/cluster/).
      onMailFrom: (address, session, cb) => void this.onMailFrom(address as CheckedAddress, session, cb),
      onRcptTo: (address, session, cb) => void this.onRcptTo(address as CheckedAddress, session, cb),
      onData: (stream, session, cb) => void this.onData(stream, session, cb),
      onClose: (session) => {
        this.sessions.get(session.id)?.slot?.();
        this.sessions.delete(session.id);
      },
      // smtp-server's idle timeout (any byte resets it) is only a backstop behind the deadlines.
      socketTimeout: idleBackstop(deps.policy()),
      // Enhanced status codes on every reply, smtp-server's own included (see server-adapter.ts).
      hideENHANCEDSTATUSCODES: false,
      // RFC 3461 DSN: offered, and its parameters checked and kept (address-command.ts).
      // REQUIRETLS is not: the relay cannot promise TLS on every later hop.
      hideDSN: false,
      hideREQUIRETLS: true,
      hooks: {
        // Allowlisted clients are greeted at once; others keep smtp-server's early-talker delay.
        greetAtOnce: (ip) => deps.policy().sources.byAddress(ip) !== undefined,
        addressCommand: (kind, line, parse, session) =>
          readAddressCommand(kind, line, parse, session, { strict: config.strictEnvelopes }),
        beforeCommand: (name, session) => this.beforeCommand(name, session),
        afterReply: (code, session) => this.afterReply(code, session),
        deadline: (phase, session) => this.deadline(phase, session),
        expired: (phase, session) => this.expired(phase, session),
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
    this.server.on('error', (err) => this.onServerError(err));
  }

  /** TLS handshake failures are logged once each, with the client; anything else as an error. */
  private onServerError(err: ServerError): void {
    const tls = tlsFailure(err);
    if (!tls) {
      this.deps.log.error('listener error', { event: 'listener_error', error: err.message });
      return;
    }
    if (this.tlsFailures.has(err)) return;
    this.tlsFailures.add(err);
    this.deps.log.warn('TLS handshake failed', { event: 'tls_failed', ...tls });
  }

  /**
   * AUTH before STARTTLS where AUTH needs TLS: 530 5.7.0, as Postfix says it (AUTH is not
   * offered then, and smtp-server itself would answer "500 command not recognized").
   */
  private beforeCommand(name: string, session: SMTPServerSession): Reply | undefined {
    if (name !== 'AUTH' || session.secure || this.insecureAuthAllowed(session)) return undefined;
    const err = this.offerStarttls ? smtpErrors.authBeforeStarttls() : smtpErrors.insecureAuth();
    this.note(err, session);
    return { code: err.code, message: err.message };
  }

  /**
   * A reload's new size limit: EHLO's SIZE, the MAIL SIZE= check and DATA use it at once (and
   * the idle backstop follows the new timeouts; the deadlines read the policy each time).
   */
  setMaxSize(bytes: number): void {
    setMaxSize(this.server, bytes);
    setIdleTimeout(this.server, idleBackstop(this.deps.policy()));
  }

  /**
   * A client neither allowlisted nor logged in has each refused command (4xx and 5xx replies)
   * counted; at limits.maxRefusedCommands it is told so with 421 and cut off. An accepted
   * message starts the count afresh. Devices are not counted: cutting one off could only lose
   * its mail (its rates are limited by its source's policy).
   */
  private afterReply(code: number, session: SMTPServerSession): Reply | undefined {
    if (code < 400 || this.trusted(session)) return undefined;
    const state = this.state(session);
    state.refusals += 1;
    const max = this.deps.policy().config.limits.maxRefusedCommands;
    if (state.refusals < max) return undefined;
    const err = smtpErrors.tooManyRefusedCommands(max);
    this.note(err, session, state.tx?.sourceName);
    return { code: err.code, message: err.message };
  }

  private deadline(phase: 'command' | 'data', session: SMTPServerSession): number {
    return deadlineFor(this.deps.policy(), phase, this.trusted(session));
  }

  private expired(phase: 'command' | 'data', session: SMTPServerSession): Reply {
    const err = deadlineError(this.deps.policy(), phase, this.trusted(session));
    this.note(err, session, this.state(session).tx?.sourceName);
    return { code: err.code, message: err.message };
  }

  private trusted(session: SMTPServerSession): boolean {
    return this.deps.policy().isTrusted(session.remoteAddress, session.user);
  }

  /**
   * A renewed certificate: every later TLS handshake (STARTTLS and implicit TLS alike take
   * smtp-server's default context) presents it; sessions already in TLS keep theirs. The pair
   * must have been checked (cert-check.ts): smtp-server keeps the options even when it throws.
   */
  updateKeyPair(pair: KeyPair): void {
    this.server.updateSecureContext({ key: pair.key, cert: pair.cert });
  }

  /** The connections open now (metrics, /healthz). */
  get connections(): { readonly size: number } {
    return connectionCount(this.server);
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
      for (const connection of openConnections(this.server)) {
        if (!connection.session?.envelope?.mailFrom) this.hangUp(connection);
      }
      if (openConnections(this.server).length === 0 || Date.now() >= deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const connection of openConnections(this.server)) this.hangUp(connection);
  }

  private hangUp(connection: OpenConnection): void {
    connection.send(421, `${smtpErrors.shuttingDown().message}`);
    connection.close();
  }

  private state(session: SMTPServerSession): SessionState {
    let state = this.sessions.get(session.id);
    if (!state) this.sessions.set(session.id, (state = { refusals: 0 }));
    return state;
  }

  private refuse(err: SmtpError, session: SMTPServerSession, cb: Callback, source?: string): void {
    this.note(err, session, source);
    cb(err);
  }

  /** A refusal, for the log and the metrics. */
  private note(err: SmtpError, session: SMTPServerSession, source?: string): void {
    this.deps.refused?.(err.reason, session.remoteAddress, source);
    this.deps.log.info('refused', {
      event: 'refused',
      reason: err.reason,
      client: session.remoteAddress,
      source,
      reply: `${err.code} ${err.message}`,
    });
  }

  private fail(err: unknown, session: SMTPServerSession, cb: Callback, source?: string): void {
    const smtp = err instanceof SmtpError ? err : smtpErrors.spoolFailed();
    this.refuse(smtp, session, cb, source);
  }

  private onConnect(session: SMTPServerSession, cb: Callback): void {
    if (this.deps.isShuttingDown()) return this.refuse(smtpErrors.shuttingDown(), session, cb);
    try {
      this.state(session).slot = this.deps.policy().openConnection(session.remoteAddress);
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
    return this.deps.policy().insecureAuthAllowed(session.remoteAddress);
  }

  private async onAuth(
    username: string,
    password: string,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: { user?: string }) => void,
  ): Promise<void> {
    if (!session.secure && !this.insecureAuthAllowed(session))
      return this.refuse(smtpErrors.insecureAuth(), session, cb);
    const result = await authenticate(
      this.deps.policy(),
      this.deps.log,
      session.remoteAddress,
      username,
      password,
    );
    if (!result.ok) return this.refuse(result.error, session, cb);
    // Logged in: it no longer takes one of the untrusted clients' slots.
    this.state(session).slot?.trust();
    cb(null, { user: result.user });
  }

  private async onMailFrom(checked: CheckedAddress, session: SMTPServerSession, cb: Callback): Promise<void> {
    if (this.config.requireTls && !session.secure) return this.refuse(smtpErrors.tlsRequired(), session, cb);
    const state = this.state(session);
    const tx = this.deps
      .policy()
      .begin({ ip: session.remoteAddress, user: session.user, tls: session.secure });
    state.tx = undefined;
    const { args } = checked;
    try {
      await tx.mail({
        address: checked.address,
        declaredSize: args && typeof args.SIZE === 'string' ? Number(args.SIZE) : undefined,
        routingProblem: checked.routingProblem,
        parameterProblem: checked.parameterProblem,
      });
      state.tx = tx;
      cb();
    } catch (err) {
      // Name the source (when there is one) so a refusal such as a rate limit counts against it.
      this.fail(err, session, cb, tx.sourceName);
    }
  }

  private async onRcptTo(checked: CheckedAddress, session: SMTPServerSession, cb: Callback): Promise<void> {
    const tx = this.state(session).tx;
    if (!tx?.source) return this.refuse(smtpErrors.notAllowed(session.remoteAddress), session, cb);
    try {
      const to = await tx.rcpt({
        address: checked.address,
        count: session.envelope.rcptTo.length + 1,
        routingProblem: checked.routingProblem,
        parameterProblem: checked.parameterProblem,
      });
      if (to !== checked.address) checked.deliverTo = to;
      cb();
    } catch (err) {
      this.fail(err, session, cb, tx.source.name);
    }
  }

  private async onData(
    stream: NodeJS.ReadableStream & { sizeExceeded?: boolean },
    session: SMTPServerSession,
    cb: (err?: Error | null, message?: string) => void,
  ): Promise<void> {
    const tx = this.state(session).tx;
    if (!tx?.source) {
      stream.resume();
      stream.on('end', () => this.refuse(smtpErrors.notAllowed(session.remoteAddress), session, cb));
      return;
    }
    const plan = tx.receive();
    let queued: QueuedMessage;
    try {
      queued = await receiveData(stream, session, plan, {
        hostname: this.deps.policy().config.hostname,
        spool: this.deps.spool,
        log: this.deps.log,
      });
    } catch (err) {
      return this.fail(err, session, cb, plan.source.name);
    }
    const { entry } = queued;
    // The message is on disk: the 250 goes out first. The log lines and the hand-over to the
    // queue (which starts the first attempt there and then) would otherwise delay it.
    this.state(session).refusals = 0;
    cb(null, `2.0.0 Ok: queued as ${entry.id}`);
    try {
      logAccepted(this.deps.log, entry, plan);
      // The item carries a small body: its first attempt need not read the file back.
      this.deps.accepted(queued);
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
}
