// The counters behind the limits: token buckets for message and recipient rates, open
// connections (per client address, and untrusted ones), and failed logins per address and per
// username. Every map is bounded:
// buckets and login failures live in an LRU cache with a fixed cap, and connection counts
// only exist while a connection is open. The clock is passed in, so tests can move time.
import { LRUCache } from 'lru-cache';
import type { Rate } from '../config/load.js';

export type Clock = () => number;

/** The most buckets or failure records kept; beyond it the least recently used is forgotten. */
export const DEFAULT_CAPACITY = 10_000;

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
}

export type RateResult = { ok: true } | { ok: false; retryInMs: number };

/**
 * Token buckets (one per key): a bucket holds at most `rate.count` tokens and refills at
 * `rate.count` per `rate.perMs`. Taking a token from an empty bucket fails and says when the
 * next token will be there. "10/min" lets a burst of 10 through, then one every 6 seconds.
 */
export class RateLimiter {
  private readonly buckets: LRUCache<string, Bucket>;

  constructor(
    private readonly clock: Clock = Date.now,
    capacity = DEFAULT_CAPACITY,
  ) {
    this.buckets = new LRUCache({ max: capacity });
  }

  /** How many buckets are held now (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }

  take(key: string, rate: Rate): RateResult {
    const now = this.clock();
    const perToken = rate.perMs / rate.count;
    const bucket = this.buckets.get(key) ?? { tokens: rate.count, at: now };
    // A rate lowered by a reload must not leave more tokens than the new burst.
    const tokens = Math.min(rate.count, bucket.tokens + Math.max(0, now - bucket.at) / perToken);
    if (tokens >= 1) {
      this.buckets.set(key, { tokens: tokens - 1, at: now });
      return { ok: true };
    }
    this.buckets.set(key, { tokens, at: now });
    return { ok: false, retryInMs: Math.ceil((1 - tokens) * perToken) };
  }
}

/**
 * A counted connection: the function counts it out (once, however often called); `trust()`
 * moves a connection counted as untrusted to the trusted ones (its client logged in).
 */
export type ConnectionSlot = (() => void) & { trust(): void };

/**
 * Open connections: in total, per client address, and from untrusted clients (neither
 * allowlisted nor logged in), which have their own, smaller share.
 */
export class ConnectionCounter {
  private readonly perAddress = new Map<string, number>();
  private count = 0;
  private untrustedCount = 0;

  get total(): number {
    return this.count;
  }

  /** Open connections of clients neither allowlisted nor logged in. */
  get untrusted(): number {
    return this.untrustedCount;
  }

  /** Addresses with at least one open connection (the map never holds more). */
  get addresses(): number {
    return this.perAddress.size;
  }

  from(address: string): number {
    return this.perAddress.get(address) ?? 0;
  }

  /** Counts a connection in. */
  open(address: string, trusted = true): ConnectionSlot {
    this.count += 1;
    this.perAddress.set(address, this.from(address) + 1);
    let untrusted = !trusted;
    if (untrusted) this.untrustedCount += 1;
    let closed = false;
    const trust = () => {
      if (closed || !untrusted) return;
      untrusted = false;
      this.untrustedCount -= 1;
    };
    const release = () => {
      if (closed) return;
      trust();
      closed = true;
      this.count -= 1;
      const left = this.from(address) - 1;
      if (left > 0) this.perAddress.set(address, left);
      else this.perAddress.delete(address);
    };
    return Object.assign(release, { trust });
  }
}

interface FailureRecord {
  /** Times of the failures still inside the window, oldest first. */
  failures: number[];
  lockedUntil: number;
}

export interface AuthFailureSettings {
  maxFailures: number;
  windowMs: number;
  lockoutMs: number;
}

/**
 * Failed logins per key (a client address, or a username): `maxFailures` within `windowMs` lock
 * the key out for `lockoutMs`. Held in an LRU cache, so a scan from many addresses cannot grow it without bound.
 */
export class AuthFailureTracker {
  private readonly records: LRUCache<string, FailureRecord>;

  constructor(
    private readonly clock: Clock = Date.now,
    capacity = DEFAULT_CAPACITY,
  ) {
    this.records = new LRUCache({ max: capacity });
  }

  get size(): number {
    return this.records.size;
  }

  /** Milliseconds the address stays locked out, or 0. */
  lockedFor(address: string): number {
    const record = this.records.peek(address);
    if (!record) return 0;
    return Math.max(0, record.lockedUntil - this.clock());
  }

  /** Records a failed login; returns true when this failure starts a lockout. */
  fail(address: string, settings: AuthFailureSettings): boolean {
    const now = this.clock();
    const record = this.records.get(address) ?? { failures: [], lockedUntil: 0 };
    const failures = record.failures.filter((t) => now - t < settings.windowMs);
    failures.push(now);
    if (failures.length >= settings.maxFailures) {
      this.records.set(address, { failures: [], lockedUntil: now + settings.lockoutMs });
      return true;
    }
    this.records.set(address, { failures, lockedUntil: record.lockedUntil });
    return false;
  }
}
