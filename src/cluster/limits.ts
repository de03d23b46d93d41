// The narrow, asynchronous interface the policy engine asks for its counted limits (message
// and recipient rates, failed logins and lockouts): LocalLimits on one relay (the in-memory
// counters of src/policy/limits.ts), RedisLimits in cluster mode (shared by every relay through
// one Redis, one atomic round trip per check), which answers from the local counters whenever
// Redis is degraded, so nothing is ever refused or held up because of Redis.
import { randomBytes } from 'node:crypto';
import type { Rate } from '../config/units.js';
import type { AuthFailureSettings, AuthFailureTracker, RateLimiter, RateResult } from '../policy/limits.js';
import type { ClusterClient } from './client.js';

export type { RateResult };

/** Which rate: messages (at MAIL) or recipients (at RCPT). */
export type RateBucket = 'message' | 'recipient';

export interface AuthFailureResult {
  /** This failure started a lockout of the address. */
  address: boolean;
  /** This failure started a lockout of the username. */
  user: boolean;
}

export interface SharedLimits {
  /** Takes a token from `key`'s bucket of `bucket`. */
  take(bucket: RateBucket, key: string, rate: Rate): Promise<RateResult>;
  /** Counts a failed login, by address and (when given) by username. */
  authFailed(
    address: string,
    user: string | undefined,
    settings: AuthFailureSettings,
  ): Promise<AuthFailureResult>;
  /** Milliseconds the address and the username (0 when none given) stay locked out, or 0. Asked at AUTH. */
  lockedFor(address: string, user?: string): Promise<Lockouts>;
}

/** How long each stays locked out, in milliseconds (0: not locked). */
export interface Lockouts {
  address: number;
  user: number;
}

/** The local counters that LocalLimits answers from (PolicyState's). */
export interface LocalCounters {
  readonly messageRate: RateLimiter;
  readonly recipientRate: RateLimiter;
  readonly authFailures: AuthFailureTracker;
  readonly userAuthFailures: AuthFailureTracker;
}

/** One relay's own counters, as before cluster mode. */
export class LocalLimits implements SharedLimits {
  constructor(private readonly counters: LocalCounters) {}

  take(bucket: RateBucket, key: string, rate: Rate): Promise<RateResult> {
    const limiter = bucket === 'message' ? this.counters.messageRate : this.counters.recipientRate;
    return Promise.resolve(limiter.take(key, rate));
  }

  // The username comes as the engine keys it (case-folded, bounded), so both sides count alike.
  authFailed(
    address: string,
    user: string | undefined,
    settings: AuthFailureSettings,
  ): Promise<AuthFailureResult> {
    const addressLocked = this.counters.authFailures.fail(address, settings);
    const userLocked = user !== undefined && this.counters.userAuthFailures.fail(user, settings);
    return Promise.resolve({ address: addressLocked, user: userLocked });
  }

  lockedFor(address: string, user?: string): Promise<Lockouts> {
    return Promise.resolve({
      address: this.counters.authFailures.lockedFor(address),
      user: user === undefined ? 0 : this.counters.userAuthFailures.lockedFor(user),
    });
  }
}

/**
 * Shared limits in Redis. Every answer is Redis's, unless Redis is degraded: then the local
 * counters answer. The local counters keep counting while Redis answers (their own verdict is
 * not used), so a fallback starts from this relay's recent traffic rather than from zero.
 */
export class RedisLimits implements SharedLimits {
  constructor(
    private readonly client: ClusterClient,
    private readonly local: SharedLimits,
  ) {}

  async take(bucket: RateBucket, key: string, rate: Rate): Promise<RateResult> {
    const localResult = this.local.take(bucket, key, rate);
    const shared = await this.client.run((r) =>
      r.smarthostTakeToken(this.client.keys.rate(bucket, key), rate.count, rate.perMs),
    );
    if (!shared) return localResult;
    const [ok, retry] = shared;
    return ok === 1 ? { ok: true } : { ok: false, retryInMs: Number(retry) };
  }

  async authFailed(
    address: string,
    user: string | undefined,
    settings: AuthFailureSettings,
  ): Promise<AuthFailureResult> {
    const localResult = this.local.authFailed(address, user, settings);
    const keys = this.client.keys;
    const shared = await this.client.run((r) =>
      r.smarthostAuthFailed(
        keys.authFailures('addr', address),
        keys.lockout('addr', address),
        keys.authFailures('user', user ?? ''),
        keys.lockout('user', user ?? ''),
        settings.maxFailures,
        settings.windowMs,
        settings.lockoutMs,
        randomBytes(6).toString('base64url'),
        user !== undefined ? '1' : '0',
      ),
    );
    if (!shared) return localResult;
    return { address: shared[0] === 1, user: shared[1] === 1 };
  }

  async lockedFor(address: string, user?: string): Promise<Lockouts> {
    const keys = this.client.keys;
    const shared = await this.client.run((r) =>
      // No username: a key that never exists stands in for its lockout.
      r.smarthostLockedFor(keys.lockout('addr', address), keys.lockout('user', user ?? '')),
    );
    if (!shared) return this.local.lockedFor(address, user);
    return { address: Number(shared[0]), user: user !== undefined ? Number(shared[1]) : 0 };
  }
}
