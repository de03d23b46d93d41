// Pacing to the ESP's quota (`rateLimit: 30/min`): no more than `count` messages reach the
// upstream in any window of `perMs`. A sliding window, not a token bucket (a full bucket plus
// its refill lets twice the quota through in one window).
//
// A message takes a slot before it is handed to the connection pool and the slot is stamped
// with the time the upstream answered, which is after the ESP counted it. A new message may
// start only when fewer than `count` slots are in flight or were answered within the last
// `perMs`: so whatever the network delays, the ESP never sees more than `count` in a window.
// Messages beyond the pace wait here, in arrival order; nothing is refused for it.
//
// A throttling reply (421, 4.7.x) halves the pace for a while (`slowDown`), and again if the
// ESP still complains once the halved pace had a window to take effect; an upstream with no
// `rateLimit` gets half of what it took in the last minute, per minute.
import type { Rate } from '../config/units.js';
import { systemClock, type Clock } from './clock.js';

export interface PaceSlot {
  /**
   * The send is over. `reached`: whether the message may have reached the ESP (false for a
   * connection that never opened: such a send does not count against the quota).
   */
  finish(reached: boolean): void;
}

export class PacingAborted extends Error {
  constructor() {
    super('not sent: the relay is shutting down');
    this.name = 'PacingAborted';
  }
}

interface Waiter {
  resolve: (slot: PaceSlot) => void;
  reject: (err: Error) => void;
}

interface Pace {
  count: number;
  perMs: number;
}

/** Sends remembered, when unpaced, to derive a pace from when the ESP asks to slow down. */
const OBSERVE_MS = 60_000;

export class Pacer {
  /** When recent sends were answered, oldest first. */
  private readonly answered: number[] = [];
  private inFlight = 0;
  private readonly waiters: Waiter[] = [];
  private timer: unknown;
  /** The pace imposed by a throttling reply, until `slowUntil`. */
  private slowPace: Pace | undefined;
  private slowUntil = 0;
  /** The lowest the pace may be halved to in one slow-down episode. */
  private slowFloor = 1;
  private lastHalvedAt = -Infinity;
  private aborted = false;

  constructor(
    readonly rate: Rate | undefined,
    private readonly clock: Clock = systemClock,
    /** How long a throttling reply slows the pace down. */
    private readonly slowDownMs = 5 * 60_000,
  ) {}

  /** The pace in force (undefined: unpaced). */
  pace(now = this.clock.now()): Pace | undefined {
    if (this.slowPace && now >= this.slowUntil) this.slowPace = undefined;
    return this.slowPace ?? this.rate;
  }

  /** Messages allowed per window now (Infinity when unpaced). */
  limit(now = this.clock.now()): number {
    return this.pace(now)?.count ?? Infinity;
  }

  /** Whether a throttling reply has slowed the pace down at the moment. */
  slowed(now = this.clock.now()): boolean {
    return this.pace(now) !== this.rate;
  }

  /** Messages waiting for their turn. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * How long a message arriving at `now` must wait: 0 to go now, a number of milliseconds, or
   * undefined when the window is full of sends still in flight (the next to finish decides).
   */
  delay(now = this.clock.now()): number | undefined {
    const pace = this.pace(now);
    this.prune(now, pace);
    if (!pace) return 0;
    const first = this.firstAnsweredAfter(now - pace.perMs);
    const inWindow = this.answered.length - first;
    const excess = inWindow + this.inFlight - pace.count;
    if (excess < 0) return 0;
    // The oldest answered sends must leave the window; in-flight ones are not yet stamped.
    if (excess >= inWindow) return undefined;
    return Math.max(this.answered[first + excess]! + pace.perMs - now, 1);
  }

  /** Resolves with a slot once the pace allows one more message. */
  acquire(): Promise<PaceSlot> {
    if (this.aborted) return Promise.reject(new PacingAborted());
    return new Promise<PaceSlot>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.pump();
    });
  }

  /**
   * A throttling reply: halve the pace for `slowDownMs` (unpaced: half of what was sent in the
   * last minute, per minute). Returns the pace now in force.
   */
  slowDown(now = this.clock.now()): Pace {
    const current = this.pace(now);
    if (!this.slowPace) {
      const base = this.rate ?? {
        count: Math.max(this.answeredSince(now - OBSERVE_MS), 2),
        perMs: OBSERVE_MS,
      };
      this.slowPace = { count: Math.max(Math.floor(base.count / 2), 1), perMs: base.perMs };
      // However long the ESP keeps complaining, never below an eighth of where we started: a
      // run of 421s that are not really about the rate must not starve delivery.
      this.slowFloor = Math.max(Math.ceil(base.count / 8), 1);
      this.lastHalvedAt = now;
    } else if (now - this.lastHalvedAt >= Math.min(current!.perMs, this.slowDownMs)) {
      // Replies to sends made at the old pace arrive together: halve once per window only.
      this.slowPace = {
        count: Math.max(Math.floor(this.slowPace.count / 2), this.slowFloor),
        perMs: this.slowPace.perMs,
      };
      this.lastHalvedAt = now;
    }
    this.slowUntil = now + this.slowDownMs;
    this.pump();
    return this.slowPace;
  }

  /** Fails every waiting message (shutdown) and all later acquires. */
  abort(): void {
    this.aborted = true;
    this.disarm();
    for (const waiter of this.waiters.splice(0)) waiter.reject(new PacingAborted());
  }

  private answeredSince(since: number): number {
    return this.answered.length - this.firstAnsweredAfter(since);
  }

  /** Index of the first answer later than `time` (binary search: the list is in time order). */
  private firstAnsweredAfter(time: number): number {
    let lo = 0;
    let hi = this.answered.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.answered[mid]! <= time) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private prune(now: number, pace: Pace | undefined): void {
    const keep = Math.max(pace?.perMs ?? 0, OBSERVE_MS);
    const drop = this.firstAnsweredAfter(now - keep);
    if (drop > 0) this.answered.splice(0, drop);
  }

  private pump(): void {
    if (this.aborted) return;
    this.disarm();
    while (this.waiters.length) {
      const now = this.clock.now();
      const wait = this.delay(now);
      if (wait === undefined) return; // a finishing send calls pump()
      if (wait > 0) {
        this.timer = this.clock.setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, wait);
        return;
      }
      const waiter = this.waiters.shift()!;
      waiter.resolve(this.startSlot());
    }
  }

  private disarm(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private startSlot(): PaceSlot {
    this.inFlight++;
    let finished = false;
    return {
      finish: (reached: boolean) => {
        if (finished) return;
        finished = true;
        this.inFlight--;
        if (reached) {
          const now = this.clock.now();
          // Keep the list in time order even if the wall clock stepped back.
          const last = this.answered[this.answered.length - 1];
          this.answered.push(last !== undefined && last > now ? last : now);
        }
        if (this.waiters.length) this.pump();
      },
    };
  }
}
