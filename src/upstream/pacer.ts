// Pacing to the ESP's quota (`rateLimit: 30/min`), evenly: one message every perMs / count
// (30/min: one every 2 s), with a small burst allowed (`burst`, default 1), never 30 at once.
// Two rules, and a message starts only when both allow it:
//
//  - The even pace, GCRA (the generic cell rate algorithm, a token bucket kept as one time):
//    each start moves a "theoretical arrival time" on by the emission interval; a message may
//    start once that time is no more than (burst - 1) intervals away.
//  - The quota, a sliding window: no more than `count` messages in any window of `perMs`,
//    counting sends in flight and stamping each with the time the upstream answered (after the
//    ESP counted it). However the network bunches them up, the ESP never sees more than its
//    quota in a window.
//
// Messages beyond the pace wait here, in arrival order; nothing is refused for it, and the wait
// is not an attempt. A throttling reply (classify.ts) doubles the emission interval (at most
// once per settling time, so the replies to sends already on their way count once), up to 8
// times slower; each `recoverStepMs` of clean replies after that takes a quarter of the
// configured pace back, until it is whole again. An upstream with no `rateLimit` is unpaced
// until the ESP complains; then its base pace is what it took in the last minute.
import type { Rate } from '../config/units.js';
import type { SharedPace } from '../cluster/pace.js';
import { systemClock, type Clock } from './clock.js';

export interface PaceSlot {
  /**
   * The send is over. `reached`: whether the message may have reached the ESP (false for a
   * connection that never opened: such a send does not count against the quota's window).
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

/** A pace in force: `count` messages per `perMs` (count may be fractional when slowed). */
export interface Pace {
  count: number;
  perMs: number;
}

export interface PacerOptions {
  /** Messages that may start together before the even pace applies (default 1). */
  burst?: number;
  /** Clean replies for this long take a quarter of the pace back (default 30 s). */
  recoverStepMs?: number;
  /**
   * Cluster mode: the pace shared with the other relays (src/cluster/pace.ts). Each start also
   * needs its reservation; no answer (Redis degraded) leaves the local pace alone in charge.
   */
  shared?: SharedPace;
}

/** Sends remembered, when unpaced, to derive a pace from when the ESP asks to slow down. */
const OBSERVE_MS = 60_000;
/** The slowest a throttled pace gets: an eighth of where it started. */
const MAX_SLOWDOWN = 8;
/** Cluster mode: the shared pace's interval, a little longer than the quota's (see reserveShared). */
const SHARED_MARGIN = 1.02;
/** What one recovery step gives back, as a share of the base pace. */
const RECOVERY_SHARE = 0.25;

export class Pacer {
  /** When recent sends were answered, oldest first. */
  private readonly answered: number[] = [];
  private inFlight = 0;
  private readonly waiters: Waiter[] = [];
  private timer: unknown;
  /** GCRA's theoretical arrival time: when the next message is due at the even pace. */
  private tat = -Infinity;
  /** The throttling slowdown: a multiplier on the emission interval (1: none). */
  private factor = 1;
  /** Unpaced upstreams only: the pace observed when the ESP first complained. */
  private observed: Pace | undefined;
  private lastSlowedAt = -Infinity;
  private lastChangedAt = -Infinity;
  private aborted = false;
  private readonly burst: number;
  private readonly recoverStepMs: number;
  // Cluster mode (see PacerOptions.shared): a reservation in flight, and whether the slowdown
  // changed since the shared pace was last told.
  private readonly shared: SharedPace | undefined;
  private reserving = false;
  private factorChanged = false;

  constructor(
    readonly rate: Rate | undefined,
    private readonly clock: Clock = systemClock,
    options: PacerOptions = {},
  ) {
    this.burst = Math.max(1, Math.min(options.burst ?? 1, rate?.count ?? Infinity));
    this.recoverStepMs = options.recoverStepMs ?? 30_000;
    // Only a configured rate is shared: an unpaced upstream's observed pace is this relay's own.
    this.shared = rate ? options.shared : undefined;
  }

  /** The pace in force (undefined: unpaced). */
  pace(): Pace | undefined {
    const base = this.rate ?? this.observed;
    if (!base) return undefined;
    return { count: base.count / this.factor, perMs: base.perMs };
  }

  /** Messages allowed per window now (Infinity when unpaced). */
  limit(): number {
    return this.pace()?.count ?? Infinity;
  }

  /** Whether a throttling reply has slowed the pace down at the moment. */
  slowed(): boolean {
    return this.factor > 1;
  }

  /** Messages waiting for their turn. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** The time between two starts at the pace in force (0: unpaced). */
  interval(): number {
    const pace = this.pace();
    return pace ? pace.perMs / pace.count : 0;
  }

  /**
   * How long a message arriving at `now` must wait: 0 to go now, a number of milliseconds, or
   * undefined when the quota's window is full of sends still in flight (the next to finish
   * decides).
   */
  delay(now = this.clock.now()): number | undefined {
    this.prune(now);
    const window = this.windowDelay(now);
    if (window === undefined) return undefined;
    const interval = this.interval();
    const even = interval > 0 ? Math.max(this.tat - (this.burst - 1) * interval - now, 0) : 0;
    return Math.max(window, even);
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
   * A throttling reply: double the emission interval, at most once per settling time (two
   * intervals, at least a second: the replies to sends made at the old pace arrive together),
   * up to eight times slower. Returns the pace now in force.
   */
  slowDown(now = this.clock.now()): Pace {
    if (!this.rate && !this.observed) {
      this.observed = { count: Math.max(this.answeredSince(now - OBSERVE_MS), 2), perMs: OBSERVE_MS };
      this.factor = 1;
    }
    if (now - this.lastSlowedAt >= Math.max(2 * this.interval(), 1000)) {
      this.factor = Math.min(this.factor * 2, MAX_SLOWDOWN);
      this.lastSlowedAt = now;
      this.factorChanged = true;
    }
    this.lastChangedAt = now;
    this.pump();
    return this.pace()!;
  }

  /**
   * A clean reply: after each `recoverStepMs` since the last change, a quarter of the base
   * pace comes back. Returns the pace now in force when it changed, else undefined.
   */
  cleared(now = this.clock.now()): Pace | 'whole' | undefined {
    if (this.factor === 1) return undefined;
    const steps = Math.floor((now - this.lastChangedAt) / this.recoverStepMs);
    if (steps < 1) return undefined;
    const share = Math.min(1 / this.factor + steps * RECOVERY_SHARE, 1);
    this.factor = 1 / share;
    this.lastChangedAt = now;
    this.factorChanged = true;
    if (share >= 1) {
      this.factor = 1;
      this.observed = undefined;
      this.pump();
      return 'whole';
    }
    this.pump();
    return this.pace();
  }

  /** Fails every waiting message (shutdown) and all later acquires. */
  abort(): void {
    this.aborted = true;
    this.disarm();
    for (const waiter of this.waiters.splice(0)) waiter.reject(new PacingAborted());
  }

  /** The sliding window's wait (the configured quota; none when unpaced). */
  private windowDelay(now: number): number | undefined {
    const rate = this.rate;
    if (!rate) return 0;
    const first = this.firstAnsweredAfter(now - rate.perMs);
    const inWindow = this.answered.length - first;
    const excess = inWindow + this.inFlight - rate.count;
    if (excess < 0) return 0;
    // The oldest answered sends must leave the window; in-flight ones are not yet stamped.
    if (excess >= inWindow) return undefined;
    return Math.max(this.answered[first + excess]! + rate.perMs - now, 1);
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

  private prune(now: number): void {
    const keep = Math.max(this.rate?.perMs ?? 0, OBSERVE_MS);
    const drop = this.firstAnsweredAfter(now - keep);
    if (drop > 0) this.answered.splice(0, drop);
  }

  private pump(): void {
    if (this.aborted) return;
    this.disarm();
    while (this.waiters.length) {
      const now = this.clock.now();
      // Never further ahead than the burst at the pace now in force (the pace recovered, or
      // the wall clock stepped back).
      const interval = this.interval();
      if (this.tat > now + this.burst * interval) this.tat = now + interval;
      const wait = this.delay(now);
      if (wait === undefined) return; // a finishing send calls pump()
      if (wait > 0) {
        this.timer = this.clock.setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, wait);
        return;
      }
      if (this.shared) return this.reserveShared();
      const waiter = this.waiters.shift()!;
      this.tat = Math.max(this.tat, now) + interval;
      waiter.resolve(this.startSlot());
    }
  }

  /**
   * Cluster mode: the local pace allows a start; the shared one must too. One reservation at a
   * time; its answer starts the first waiter, or waits as long as the shared pace says.
   */
  private reserveShared(): void {
    if (this.reserving) return;
    this.reserving = true;
    const publish = this.factorChanged;
    this.factorChanged = false;
    const base = this.rate!;
    void this.shared!.reserve({
      // 2% apart more than the quota's even pace: a message whose connection opened faster than
      // the one before it cannot put one too many into the ESP's window.
      intervalMs: (base.perMs / base.count) * SHARED_MARGIN,
      burst: this.burst,
      factor: this.factor,
      publish,
      // A slowdown nobody renews ends by itself after the time a full recovery takes.
      slowTtlMs: 4 * this.recoverStepMs,
    }).then((answer) => {
      this.reserving = false;
      if (!answer && publish) this.factorChanged = true;
      if (this.aborted) return;
      if (answer && answer.wait > 0) {
        this.disarm();
        this.timer = this.clock.setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, answer.wait);
        return;
      }
      const waiter = this.waiters.shift();
      if (waiter) {
        const now = this.clock.now();
        this.tat = Math.max(this.tat, now) + this.interval();
        waiter.resolve(this.startSlot());
      }
      this.pump();
    });
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
        // A send that never reached the ESP gives its turn at the even pace back too.
        if (!reached) this.tat -= this.interval();
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
