// One upstream ESP reached through nodemailer's pooled SMTP transport: STARTTLS required and
// the certificate verified unless configured otherwise, AUTH (password or OAuth2 XOAUTH2), the
// stored envelope given explicitly and the raw message streamed from the spool unchanged (never
// re-encoded). It keeps the upstream's health (down for a back-off after a failure), its pace
// (rateLimit, slowed by throttling replies) and the SIZE it advertises.
import { readFileSync } from 'node:fs';
import nodemailer, { type Transporter } from 'nodemailer';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { readBody } from '../spool/one-file.js';
import type SMTPPool from 'nodemailer/lib/smtp-pool/index.js';
import type { Upstream } from '../config/load.js';
import { formatDuration } from '../config/units.js';
import type { Logger } from '../log.js';
import type { QueueEntry } from '../spool/entry.js';
import { systemClock, type Clock } from '../upstream/clock.js';
import { UpstreamHealth } from '../upstream/health.js';
import { TokenCache, tokenFetcher } from '../upstream/oauth.js';
import { Pacer, PacingAborted, type PaceSlot } from '../upstream/pacer.js';
import type { SharedPace } from '../cluster/pace.js';
import { XOAUTH2_METHOD, xoauth2Handler } from '../upstream/xoauth2.js';
import { allTemporary, type MessageBody, type RecipientResult } from './courier.js';
import { decide, NOT_SENT, outcomeOfDecision } from './classify.js';
import {
  advertisedSize,
  connectWithoutDelay,
  describeFailure,
  envelopeWithExtras,
  factsOf,
  rejectedErrorsOf,
  type RejectedError,
  type SmtpFailure,
} from './nodemailer-adapter.js';
import { mailParams, recipientDsn } from './mail-params.js';
import { smtpUtf8For } from './smtputf8.js';

/**
 * Room kept below the ESP's SIZE for what the relay adds to a message after accepting it
 * (the Received line, a missing Date or Message-ID, a Reply-To when the sender is rewritten).
 */
export const SIZE_HEADROOM = 2048;
/**
 * Reads of the spooled body: larger than the default 64 KB, so a big message takes a quarter of
 * the trips to the thread pool (10 MB messages end to end: ~20% faster here).
 */
const READ_CHUNK = 256 * 1024;

/** An upstream with its CA file's text already read (the delivery thread gets it this way). */
export type UpstreamWithCa = Upstream & { caText?: string };

/**
 * nodemailer's options for an upstream. `tokens`: the OAuth2 token cache to share (the courier
 * passes one per upstream); a new one is made when absent (a one-off check from the CLI).
 */
export function transportOptions(
  upstream: UpstreamWithCa,
  hostname: string,
  tokens: TokenCache | undefined = upstream.auth
    ? new TokenCache(tokenFetcher(upstream.auth, { timeoutMs: upstream.timeout }))
    : undefined,
): SMTPPool.Options {
  const auth: SMTPPool.Options['auth'] = upstream.auth
    ? { type: 'custom', method: XOAUTH2_METHOD, user: upstream.auth.user, pass: '' }
    : upstream.user
      ? { user: upstream.user, pass: upstream.pass?.reveal() ?? '' }
      : undefined;
  return {
    pool: true,
    host: upstream.host,
    port: upstream.port,
    secure: upstream.tls === 'implicit',
    requireTLS: upstream.tls === 'starttls',
    ignoreTLS: upstream.tls === 'none',
    name: hostname,
    auth,
    // With credentials configured, log in even if the ESP does not advertise AUTH: sending
    // unauthenticated would only earn a refusal that looks like the sender's fault.
    forceAuth: Boolean(auth),
    customAuth:
      upstream.auth && tokens ? { [XOAUTH2_METHOD]: xoauth2Handler(tokens, upstream.auth.user) } : undefined,
    // SNI and the certificate check use this name instead of `host` (an address, or an alias).
    servername: upstream.servername,
    tls: {
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ca: upstream.ca ? [upstream.caText ?? readFileSync(upstream.ca, 'utf8')] : undefined,
    },
    // TCP_NODELAY: without it every message waits ~40 ms for a delayed ACK (nodemailer-adapter.ts).
    getSocket: connectWithoutDelay,
    maxConnections: upstream.maxConnections,
    maxMessages: 1000,
    connectionTimeout: upstream.timeout,
    greetingTimeout: Math.min(upstream.timeout, 30_000),
    socketTimeout: upstream.timeout,
    logger: false,
  } as SMTPPool.Options;
}

/** What the courier reports about its upstreams (for logs and metrics). */
export interface UpstreamEvent {
  upstream: string;
  state: 'down' | 'up' | 'throttled' | 'recovered' | 'size';
  /** The reply or error that caused it. */
  reason?: string;
  /** down: for how long it is skipped. */
  downForMs?: number;
  /** throttled, recovered: the pace now in force, e.g. "15/1m". */
  pace?: string;
  /** size: the ESP's SIZE in bytes (0: none declared). */
  size?: number;
}

export interface UpstreamClientDeps {
  hostname: string;
  log?: Logger;
  clock?: Clock;
  emit?: (event: UpstreamEvent) => void;
  /** Cluster mode: this upstream's pace shared with the other relays (src/cluster/pace.ts). */
  sharedPace?: SharedPace;
}

/** One upstream ESP reached through one pool of connections, with its health, pace and tokens. */
export class UpstreamClient {
  readonly health: UpstreamHealth;
  readonly pacer: Pacer;
  /** Shared by every connection to this upstream (OAuth2 only). */
  readonly tokens: TokenCache | undefined;
  /** The ESP's SIZE: undefined until learned, 0 when it declares no limit. */
  maxSize: number | undefined;
  /** Built once (it reads the `ca` file): the pool and the probes both connect with it. */
  private readonly options: SMTPPool.Options;
  private readonly transport: Transporter<SMTPPool.SentMessageInfo>;
  private readonly clock: Clock;
  private probing: Promise<void> | undefined;
  private lastProbeAt = -Infinity;
  private probeConnection: SMTPConnection | undefined;
  private closed = false;

  constructor(
    readonly upstream: UpstreamWithCa,
    private readonly deps: UpstreamClientDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.health = new UpstreamHealth({ initialMs: upstream.backoff.initial, maxMs: upstream.backoff.max });
    this.pacer = new Pacer(upstream.rateLimit, this.clock, {
      burst: upstream.burst,
      shared: deps.sharedPace,
    });
    if (upstream.auth) {
      this.tokens = new TokenCache(tokenFetcher(upstream.auth, { timeoutMs: upstream.timeout }), {
        now: () => this.clock.now(),
      });
    }
    this.options = transportOptions(upstream, deps.hostname, this.tokens);
    this.transport = nodemailer.createTransport(this.options);
  }

  get name(): string {
    return this.upstream.name;
  }

  isDown(now = this.clock.now()): boolean {
    return this.health.isDown(now);
  }

  async send(entry: QueueEntry, recipients: string[], body: MessageBody): Promise<RecipientResult[]> {
    const upstream = this.name;
    let slot: PaceSlot;
    try {
      slot = await this.pacer.acquire();
    } catch (err) {
      if (!(err instanceof PacingAborted)) {
        return allTemporary(recipients, `local error: ${(err as Error).message}`, upstream);
      }
      // Waiting for the pace is not an attempt: the message goes back to the queue as it was.
      return allTemporary(recipients, err.message, upstream).map((r) => ({ ...r, decision: NOT_SENT }));
    }
    let reached = true;
    const smtpUtf8 = await smtpUtf8For(entry, recipients, body);
    const raw = body.data ?? readBody(body, READ_CHUNK);
    try {
      const info = await this.transport.sendMail({
        envelope: envelopeWithExtras(
          { from: entry.from, to: recipients, ...mailParams(entry) },
          { recipients: recipientDsn(entry, recipients), smtpUtf8 },
        ),
        raw,
        // Not sent (the raw message goes out unchanged): it only spares nodemailer making a
        // random one for every message.
        messageId: `<${entry.id}@smarthost>`,
      });
      return this.judged(recipientResults(recipients, upstream, info.response, rejectedErrorsOf(info)));
    } catch (error) {
      const err = error as SmtpFailure;
      // A connection that never opened did not reach the ESP: it does not count against the pace.
      reached = err.command !== 'CONN' || err.responseCode !== undefined;
      // All recipients refused at RCPT: each has its own reply; the others share the error's.
      return this.judged(recipientResults(recipients, upstream, err, rejectedErrorsOf(err)));
    } finally {
      slot.finish(reached);
      // A send that failed before DATA never read the file: close it now, not at GC.
      if (!Buffer.isBuffer(raw)) raw.destroy();
    }
  }

  /**
   * Applies what the results say about this upstream (not about a message): a failure of the
   * upstream itself puts it aside for its back-off, a throttling reply slows the pace, and an
   * answered transaction with neither shows the upstream healthy and lets the pace recover.
   * A message's own 4xx changes nothing here: it is retried on its own schedule.
   */
  private judged(results: JudgedResult[]): RecipientResult[] {
    const upstreamFailure = results.find((r) => r.decision?.affects === 'upstream');
    const throttle = results.find((r) => r.decision?.kind === 'throttled');
    if (throttle) this.throttled(throttle.reply);
    if (upstreamFailure) this.failed(upstreamFailure.reply);
    else this.succeeded(!throttle);
    return results;
  }

  /** Marks this upstream down after a failure of the upstream itself (classify.ts). */
  private failed(reason: string): void {
    const downFor = this.health.failed(this.clock.now());
    if (downFor === undefined) return;
    this.deps.log?.warn(`upstream ${this.name} is failing: skipped for ${formatDuration(downFor)}`, {
      event: 'upstream_down',
      upstream: this.name,
      reason,
      downFor: formatDuration(downFor),
      failures: this.health.consecutiveFailures,
    });
    this.deps.emit?.({ upstream: this.name, state: 'down', reason, downForMs: downFor });
  }

  /** The upstream answered; `clean`: with no throttling reply, so the pace may recover. */
  private succeeded(clean = true): void {
    if (this.health.succeeded()) {
      this.deps.log?.info(`upstream ${this.name} is back`, { event: 'upstream_up', upstream: this.name });
      this.deps.emit?.({ upstream: this.name, state: 'up' });
    }
    if (clean) this.recovered();
    // SIZE not learned yet (the check at start failed): check again, at most once a minute.
    if (this.maxSize === undefined && this.clock.now() - this.lastProbeAt >= 60_000) void this.probe();
  }

  private throttled(reason: string): void {
    const text = paceText(this.pacer.slowDown(this.clock.now()));
    this.deps.log?.warn(`upstream ${this.name} asks to slow down: pace ${text} for a while`, {
      event: 'upstream_throttled',
      upstream: this.name,
      reason,
      pace: text,
    });
    this.deps.emit?.({ upstream: this.name, state: 'throttled', reason, pace: text });
  }

  /** Clean replies again: the throttled pace takes a step back towards the configured one. */
  private recovered(): void {
    const pace = this.pacer.cleared(this.clock.now());
    if (pace === undefined) return;
    const whole = this.upstream.rateLimit ? paceText(this.upstream.rateLimit) : 'unpaced';
    const text = pace === 'whole' ? whole : paceText(pace);
    this.deps.log?.info(`upstream ${this.name}: replies are clean again, pace ${text}`, {
      event: 'upstream_pace_recovered',
      upstream: this.name,
      pace: text,
    });
    this.deps.emit?.({ upstream: this.name, state: 'recovered', pace: text });
  }

  /**
   * Connects and logs in once, as nodemailer's verify() does, to learn the ESP's SIZE and find
   * a broken upstream (refused connection, bad certificate, wrong credentials) at start rather
   * than with the first message. One at a time; resolves when done, never rejects.
   */
  probe(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.probing) this.lastProbeAt = this.clock.now();
    this.probing ??= this.runProbe().finally(() => {
      this.probing = undefined;
      this.probeConnection = undefined;
    });
    return this.probing;
  }

  private async runProbe(): Promise<void> {
    const options = this.options;
    const connection = new SMTPConnection({
      ...(options as SMTPConnection.Options),
      logger: false,
    });
    this.probeConnection = connection;
    connection.on('error', () => undefined); // late errors (a reset after QUIT) are of no interest
    try {
      await new Promise<void>((resolve, reject) => {
        connection.once('error', reject);
        connection.once('end', () =>
          reject(Object.assign(new Error('Connection closed'), { command: 'CONN' })),
        );
        connection.connect(() => {
          if (!options.auth) return resolve();
          connection.login(this.loginData(options), (err) => (err ? reject(err) : resolve()));
        });
      });
      this.learnSize(advertisedSize(connection));
      this.succeeded();
      connection.quit();
    } catch (error) {
      connection.close();
      if (this.closed) return;
      const err = error as SmtpFailure;
      const reason = describeFailure(err);
      this.deps.log?.warn(`upstream ${this.name} check failed: ${reason}`, {
        event: 'upstream_check_failed',
        upstream: this.name,
        reason,
      });
      if (decide(factsOf(err)).affects === 'upstream') this.failed(reason);
    }
  }

  /** The login data nodemailer's pool would build from the auth options. */
  private loginData(options: SMTPPool.Options): SMTPConnection.AuthenticationCredentials {
    const auth = options.auth as { user: string; pass: string; method?: string };
    return {
      credentials: { user: auth.user, pass: auth.pass },
      ...(auth.method ? { method: auth.method } : {}),
      user: auth.user,
    } as SMTPConnection.AuthenticationCredentials;
  }

  private learnSize(size: number): void {
    const changed = size !== this.maxSize;
    this.maxSize = size;
    if (!changed) return;
    const ready = this.tokens ? ' (OAuth2 token obtained)' : '';
    this.deps.log?.info(
      size
        ? `upstream ${this.name} ready${ready}: it accepts messages of up to ${size} bytes`
        : `upstream ${this.name} ready${ready}: it declares no size limit`,
      { event: 'upstream_ready', upstream: this.name, size },
    );
    this.deps.emit?.({ upstream: this.name, state: 'size', size });
  }

  /** Stops waiting for the pace: sends not started return a temporary result (shutdown). */
  stopWaiting(): void {
    this.pacer.abort();
  }

  close(): void {
    this.closed = true;
    this.pacer.abort();
    this.probeConnection?.close();
    this.transport.close();
  }
}

type JudgedResult = RecipientResult & { reply: string };

/**
 * Each recipient's result of one transaction: delivered with `accepted` (the final reply), or
 * failed with the error that ended the transaction (`accepted` is then an error), except those
 * refused at RCPT with a reply of their own. Each failure is decided once (classify.ts).
 */
function recipientResults(
  recipients: string[],
  upstream: string,
  accepted: string | SmtpFailure,
  rejected: RejectedError[],
): JudgedResult[] {
  const byRecipient = new Map(rejected.map((e) => [e.recipient, e]));
  const failed = (failure: SmtpFailure) => {
    const decision = decide(factsOf(failure));
    return { outcome: outcomeOfDecision(decision), reply: describeFailure(failure), upstream, decision };
  };
  const shared = typeof accepted === 'string' ? undefined : failed(accepted);
  return recipients.map((recipient) => {
    const own = byRecipient.get(recipient);
    if (own) return { recipient, ...failed(own) };
    if (shared) return { recipient, ...shared };
    return { recipient, outcome: 'delivered' as const, reply: accepted as string, upstream };
  });
}

/** A pace for logs: "15/1m", "3.75/1m". */
function paceText(pace: { count: number; perMs: number }): string {
  return `${Math.round(pace.count * 100) / 100}/${formatDuration(pace.perMs)}`;
}
