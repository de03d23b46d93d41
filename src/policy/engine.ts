// The policy stage: from the client's address and login, which source it is and whether
// this connection / login / MAIL / RCPT may go ahead. Every "no" is a typed SmtpError the
// listener replies with, naming the source and the limit in words an admin can act on.
//
// The engine is rebuilt on every config reload; the counters (rate buckets, open connections,
// failed logins) live in a PolicyState that the new engine takes over from the old one, so a
// reload neither resets a rate limit nor loses count of the connections still open.
import type { Config } from '../config/load.js';
import { SmtpError, smtpErrors } from '../smtp/errors.js';
import { domainOf, matchesAny, routingFormProblem } from './address.js';
import {
  AuthFailureTracker,
  ConnectionCounter,
  RateLimiter,
  type Clock,
  type ConnectionSlot,
} from './limits.js';
import { LocalLimits, type SharedLimits } from '../cluster/limits.js';
import { SourceResolver, normaliseIp, type Source } from './sources.js';
import { PolicyTransaction, type SessionFacts } from './transaction.js';

export interface ClientInfo {
  ip: string;
  user?: string;
}

/** The counters that outlive a config reload. */
export class PolicyState {
  readonly messageRate: RateLimiter;
  readonly recipientRate: RateLimiter;
  readonly connections = new ConnectionCounter();
  /** Failed logins per client address. */
  readonly authFailures: AuthFailureTracker;
  /** Failed logins per username, from any address (guesses spread over many addresses). */
  readonly userAuthFailures: AuthFailureTracker;

  constructor(readonly clock: Clock = Date.now) {
    this.messageRate = new RateLimiter(clock);
    this.recipientRate = new RateLimiter(clock);
    this.authFailures = new AuthFailureTracker(clock);
    this.userAuthFailures = new AuthFailureTracker(clock);
  }
}

export interface PolicyEngineOptions {
  /** The engine this one replaces (reload): its counters carry over. */
  previous?: PolicyEngine;
  /** Counters to use (tests: with their own clock). */
  state?: PolicyState;
  /**
   * The largest message the upstream ESP takes for this envelope sender (any sender when
   * absent), as learned from its SIZE; undefined while unknown or unlimited.
   */
  upstreamSizeLimit?: (sender?: string) => number | undefined;
  /**
   * Cluster mode: the counted limits (rates, failed logins) asked of Redis (src/cluster/), with
   * the local counters as fallback. Default: the local counters of `state`.
   */
  limits?: SharedLimits;
}

export class PolicyEngine {
  readonly sources: SourceResolver;
  readonly state: PolicyState;
  /** Where the rate limits and failed logins are counted (cluster mode: shared; else `state`). */
  readonly limits: SharedLimits;
  readonly upstreamSizeLimit: ((sender?: string) => number | undefined) | undefined;
  /** The largest size any source may send: what the listeners advertise with SIZE. */
  readonly maxAdvertisedSize: number;

  constructor(
    readonly config: Config,
    options: PolicyEngineOptions = {},
  ) {
    this.sources = new SourceResolver(config);
    this.state = options.state ?? options.previous?.state ?? new PolicyState();
    this.limits = options.limits ?? options.previous?.limits ?? new LocalLimits(this.state);
    this.upstreamSizeLimit = options.upstreamSizeLimit ?? options.previous?.upstreamSizeLimit;
    // Computed once: the config of an engine never changes (a reload builds a new engine).
    const sizes = [...config.allowlist, ...config.users].map((s) => s.maxMessageSize ?? 0);
    this.maxAdvertisedSize = Math.max(
      config.limits.maxMessageSize,
      config.defaults.maxMessageSize ?? 0,
      ...sizes,
    );
  }

  /** A mail transaction of this session (at MAIL FROM): its `mail()`, `rcpt()` and `receive()`. */
  begin(facts: SessionFacts): PolicyTransaction {
    return new PolicyTransaction(this, facts);
  }

  /** The source's limit, or the upstream ESP's when that is smaller (no use accepting what can only bounce). */
  messageSizeLimit(source: Source, sender?: string): number {
    const own = source.policy.maxMessageSize ?? this.config.limits.maxMessageSize;
    return Math.min(own, this.upstreamSizeLimit?.(sender) ?? Infinity);
  }

  /** The 552 for a message over `limit`, naming the upstream ESP's limit when that is the one. */
  sizeError(source: Source, limit: number, sender?: string): SmtpError {
    const upstream = this.upstreamSizeLimit?.(sender);
    if (upstream !== undefined && upstream <= limit)
      return new SmtpError(
        552,
        '5.3.4',
        `Message too big for the upstream ESP (limit ${upstream} bytes)`,
        'size',
      );
    return smtpErrors.messageTooBig(limit, source.name);
  }

  /**
   * A new connection: refused when the relay, this address or the untrusted clients (neither
   * allowlisted nor logged in: `trusted` false) have too many open, or when an untrusted
   * address is locked out after failed logins (it could do nothing here). An allowlisted
   * address is never refused for failed logins: a lockout blocks AUTH only. On success returns
   * the slot, to release when the connection closes (and to trust() once its client logs in).
   */
  openConnection(ip: string): ConnectionSlot {
    const address = normaliseIp(ip);
    const trusted = this.sources.byAddress(address) !== undefined;
    if (!trusted) this.checkAuthAllowed(address);
    const { limits } = this.config;
    const connections = this.state.connections;
    if (connections.total >= limits.maxConnections)
      throw smtpErrors.tooManyConnections(limits.maxConnections);
    if (!trusted && connections.untrusted >= limits.maxUntrustedConnections)
      throw smtpErrors.tooManyUntrustedConnections(limits.maxUntrustedConnections);
    if (connections.from(address) >= limits.maxConnectionsPerIp)
      throw smtpErrors.tooManyConnectionsFromIp(address, limits.maxConnectionsPerIp);
    return connections.open(address, trusted);
  }

  /** Whether the client is allowlisted or logged in (it gets the trusted limits and timeouts). */
  isTrusted(ip: string, user?: string): boolean {
    return Boolean(user) || this.sources.byAddress(ip) !== undefined;
  }

  /**
   * Before checking a password, from this relay's own counters (openConnection asks it too):
   * refused while the address or the username is locked out. An allowlisted address gets 454
   * and keeps its connection (its mail goes on); a stranger 421.
   */
  checkAuthAllowed(ip: string, username?: string): void {
    const address = normaliseIp(ip);
    const lockedFor = this.state.authFailures.lockedFor(address);
    const userLockedFor =
      username === undefined ? 0 : this.state.userAuthFailures.lockedFor(userKey(username));
    this.throwIfLocked(address, { address: lockedFor, user: userLockedFor });
  }

  /**
   * At AUTH: as checkAuthAllowed, but asks `limits` (cluster mode: the lockouts shared by all
   * relays, falling back to the local counters while Redis is degraded).
   */
  async checkAuthLockout(ip: string, username?: string): Promise<void> {
    const address = normaliseIp(ip);
    const lockouts = await this.limits.lockedFor(
      address,
      username === undefined ? undefined : userKey(username),
    );
    this.throwIfLocked(address, lockouts);
  }

  private throwIfLocked(address: string, lockedFor: { address: number; user: number }): void {
    const { limits } = this.config;
    if (lockedFor.address > 0)
      throw smtpErrors.authLockedOut(
        address,
        lockedFor.address,
        limits.maxAuthFailures,
        limits.authFailureWindow,
        this.lockoutCode(address),
      );
    if (lockedFor.user > 0)
      throw smtpErrors.userLockedOut(lockedFor.user, limits.maxAuthFailures, limits.authFailureWindow);
  }

  /**
   * A failed login, counted for the address and for the username (cluster mode: by all relays).
   * Returns the lockout error when this failure locks either out (the caller replies with it
   * and logs it), else undefined.
   */
  async authFailed(ip: string, username?: string): Promise<SmtpError | undefined> {
    const address = normaliseIp(ip);
    const { limits } = this.config;
    const locked = await this.limits.authFailed(
      address,
      username === undefined ? undefined : userKey(username),
      {
        maxFailures: limits.maxAuthFailures,
        windowMs: limits.authFailureWindow,
        lockoutMs: limits.authLockout,
      },
    );
    if (locked.address)
      return smtpErrors.authLockedOut(
        address,
        limits.authLockout,
        limits.maxAuthFailures,
        limits.authFailureWindow,
        this.lockoutCode(address),
      );
    if (locked.user)
      return smtpErrors.userLockedOut(limits.authLockout, limits.maxAuthFailures, limits.authFailureWindow);
    return undefined;
  }

  /** 421 closes a stranger's connection; an allowlisted device keeps its own (454). */
  private lockoutCode(address: string): 421 | 454 {
    return this.sources.byAddress(address) ? 454 : 421;
  }

  /** Whether AUTH may be offered before TLS to this client (legacy devices whose network opted in). */
  insecureAuthAllowed(ip: string): boolean {
    const source = this.sources.byAddress(ip);
    return (source ? source.policy.allowInsecureAuth : this.config.defaults.allowInsecureAuth) === true;
  }

  /** MAIL FROM: who is this, and may it send this, now. Takes a token from the message rate. */
  async checkMail(client: ClientInfo, sender: string, declaredSize?: number): Promise<Source> {
    const source = this.sources.resolve(client.ip, client.user);
    if (!source) throw smtpErrors.notAllowed(normaliseIp(client.ip));
    return this.checkSender(source, sender, declaredSize);
  }

  /** MAIL FROM for a known source (the listener's, or the local `sendmail`). */
  async checkSender(source: Source, sender: string, declaredSize?: number): Promise<Source> {
    const problem = routingFormProblem(sender);
    if (problem) throw smtpErrors.badAddress(sender, problem);
    const { policy } = source;
    if (policy.allowedSenders && !matchesAny(sender, policy.allowedSenders))
      throw smtpErrors.senderNotAllowed(sender, source.name);
    const limit = this.messageSizeLimit(source, sender);
    if (declaredSize !== undefined && declaredSize > limit) throw this.sizeError(source, limit, sender);
    if (policy.rateLimit) {
      // Asynchronous for cluster mode (a Redis round trip); local counters answer at once.
      const result = await this.limits.take('message', bucketKey(source), policy.rateLimit);
      if (!result.ok)
        throw smtpErrors.rateLimited('message', policy.rateLimit.text, source.name, result.retryInMs);
    }
    return source;
  }

  /**
   * RCPT TO: may this source send to this recipient, as the n-th of the message. `ownMailbox`:
   * the relay's own postmaster (bounces.to), which allowedRecipientDomains does not restrict.
   */
  async checkRcpt(source: Source, recipient: string, count: number, ownMailbox = false): Promise<void> {
    const problem = routingFormProblem(recipient);
    if (problem) throw smtpErrors.badAddress(recipient, problem);
    const { policy } = source;
    const max = policy.maxRecipients ?? this.config.limits.maxRecipients;
    if (count > max) throw smtpErrors.tooManyRecipients(max, source.name);
    if (policy.allowedRecipientDomains && !ownMailbox) {
      const domain = domainOf(recipient);
      if (!policy.allowedRecipientDomains.includes(domain))
        throw smtpErrors.recipientDomainNotAllowed(domain, source.name);
    }
    if (policy.recipientRateLimit) {
      const result = await this.limits.take('recipient', bucketKey(source), policy.recipientRateLimit);
      if (!result.ok)
        throw smtpErrors.rateLimited(
          'recipient',
          policy.recipientRateLimit.text,
          source.name,
          result.retryInMs,
        );
    }
  }
}

/** A username as the failure count keys it: case-folded, bounded. */
function userKey(username: string): string {
  return username.toLowerCase().slice(0, 256);
}

/** Users and allowlist entries have distinct names (the config checks), but keep them apart anyway. */
function bucketKey(source: Source): string {
  return `${source.kind}:${source.name}`;
}
