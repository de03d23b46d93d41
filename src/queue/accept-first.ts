// Acceptance first, during a burst. While the relay is busy taking messages in (a monitoring
// system's alert storm, a batch job), a just-accepted message's first delivery attempt waits,
// for at most `queue.acceptFirst`, so that the CPU answers the devices first; once the burst
// eases, the messages held go together. It is Sendmail's QueueLA and Exim's queue_only_load
// (under load, queue and deliver later) bounded to seconds and ended as soon as the load is.
//
// Why it pays: delivered one by one as they arrive, each message wakes the delivery thread,
// the upstream connection and the main thread's bookkeeping on its own, in between the
// sessions' replies; delivered as a batch, the same work runs back to back. Measured paired
// on bursts of 3,000 messages (20 sessions, a new connection per message): accepted 1.45×
// faster, end to end 1.09× faster, 0.80× the CPU a message (BENCHMARKS.md, item 36).
//
// A burst needs both signs: messages arriving fast (at least BURST_MESSAGES in the last
// WINDOW_MS), and the event loop busy for at least BUSY_SHARE of that time. Fast arrivals on a
// relay with CPU to spare are delivered at once (holding them would only add latency), and so
// is a single message that arrives while the loop is busy with something else (start-up, a
// reload). Whatever is held is on disk like any queued message: a stop or a crash loses
// nothing, and the next start delivers it.
import { performance, type EventLoopUtilization } from 'node:perf_hooks';

/** The window over which arrivals and the event loop's load are judged. */
const WINDOW_MS = 100;
/** Arrivals within one window that make a burst: 100 messages a second. */
const BURST_MESSAGES = 10;
/** The event loop's busy share, over the window, that makes a burst. */
const BUSY_SHARE = 0.5;

/** The event loop's busy share since the last look, looked at most once per window. */
export type LoopLoad = () => number;

export function eventLoopLoad(now: () => number): LoopLoad {
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  let lastAt = now();
  let share = 0;
  return () => {
    if (now() - lastAt >= WINDOW_MS) {
      const current = performance.eventLoopUtilization();
      share = performance.eventLoopUtilization(current, last).utilization;
      last = current;
      lastAt = now();
    }
    return share;
  };
}

export class AcceptFirst {
  /** Arrival times within the last window, oldest first. */
  private readonly arrivals: number[] = [];
  /** Ids whose first attempt waits for the burst to end. */
  private readonly held = new Set<string>();
  /** Checks, while a burst lasts, whether it has eased. */
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: {
      /** `queue.acceptFirst`: the longest a first attempt waits (0: never). */
      maxWaitMs: () => number;
      now: () => number;
      loopLoad: LoopLoad;
      /** The burst has eased: these may go now (those still waiting; the rest are skipped). */
      release: (ids: string[]) => void;
      /** A burst began (its first message held) or ended (`held` messages still held released). */
      onBurst?: (state: 'started' | 'ended', held: number) => void;
    },
  ) {}

  /**
   * A message just accepted: when its first attempt may start. Later than `now` during a burst
   * (by at most maxWaitMs); the release may bring it forward.
   */
  firstAttemptAt(id: string, now: number): number {
    const maxWaitMs = this.options.maxWaitMs();
    if (maxWaitMs <= 0 || !this.inBurst(now, true)) return now;
    if (!this.timer) {
      this.timer = setInterval(() => this.check(), WINDOW_MS).unref();
      this.options.onBurst?.('started', 0);
    }
    this.held.add(id);
    return now + maxWaitMs;
  }

  /** The id left the queue's waiting set (its attempt started, or it was deleted). */
  done(id: string): void {
    this.held.delete(id);
  }

  get holding(): number {
    return this.held.size;
  }

  /** Forgets what is held, without releasing it: the queue is stopping. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.held.clear();
  }

  private check(): void {
    // Still a burst, and still asked for (a reload may have set queue.acceptFirst to 0). A
    // burst longer than maxWaitMs may have nothing left held: its messages went as they aged.
    if (this.options.maxWaitMs() > 0 && this.inBurst(this.options.now(), false)) return;
    const ids = [...this.held];
    this.stop();
    this.options.onBurst?.('ended', ids.length);
    if (ids.length > 0) this.options.release(ids);
  }

  private inBurst(now: number, arriving: boolean): boolean {
    if (arriving) this.arrivals.push(now);
    while (this.arrivals.length > 0 && this.arrivals[0]! <= now - WINDOW_MS) this.arrivals.shift();
    return this.arrivals.length >= BURST_MESSAGES && this.options.loopLoad() >= BUSY_SHARE;
  }
}
