// The scheduler: one ordered set of next-attempt times (not a sleeping task per message), a
// global cap on deliveries in flight, retries on the configured schedule until queue.maxAge,
// then a bounce. Only ids and times live in memory; each attempt reads the message's state
// from the spool and writes it back, so a crash at any point loses nothing. The one exception:
// a message just accepted comes as a queued item, its state and a small body, which its first
// attempt uses instead of reading the files written a moment ago (just-queued.ts: a bounded
// number of them; the files stay the truth). Whatever changes a queued message's files while
// the relay runs (an admin's delete) must forget() it first, so that no older state is used.
import { EventEmitter } from 'node:events';
import type { Config } from '../config/load.js';
import type { LogFields, Logger } from '../log.js';
import { allTemporary, type Courier, type RecipientResult } from '../delivery/courier.js';
import type { Bouncer } from '../bounce/bouncer.js';
import { pendingRecipients, type QueueEntry } from '../spool/entry.js';
import type { QueuedMessage, Spool } from '../spool/spool.js';
import { AcceptFirst, eventLoopLoad, type LoopLoad } from './accept-first.js';
import { JustQueued } from './just-queued.js';
import { settle, type Settled } from './settle.js';
import { TimerHeap } from './timer-heap.js';

const MAX_TIMER = 2 ** 31 - 1;
const SPOOL_ERROR_RETRY_MS = 10_000;

export interface AttemptEvent {
  entry: QueueEntry;
  results: RecipientResult[];
  durationMs: number;
}

export interface QueueDeps {
  spool: Spool;
  /**
   * The courier for the next attempt. A getter: a config reload may swap in a new one (a new
   * upstream or new credentials); an attempt keeps the courier it started with.
   */
  courier: () => Courier;
  bouncer: Bouncer;
  log: Logger;
  config: () => Config;
  now?: () => number;
  /** The event loop's busy share (accept-first.ts); tests set their own. */
  loopLoad?: LoopLoad;
}

export class DeliveryQueue extends EventEmitter {
  private readonly heap = new TimerHeap();
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Ids an admin asked to retry now, whatever their next-attempt time. */
  private readonly forced = new Set<string>();
  /** Items handed over as accepted, for their first attempt (just-queued.ts). */
  private readonly justQueued = new JustQueued();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly now: () => number;
  /** During a burst, first attempts wait for it to ease (accept-first.ts). */
  private readonly acceptFirst: AcceptFirst;

  constructor(private readonly deps: QueueDeps) {
    super();
    this.now = deps.now ?? Date.now;
    this.acceptFirst = new AcceptFirst({
      maxWaitMs: () => deps.config().queue.acceptFirst,
      now: this.now,
      loopLoad: deps.loopLoad ?? eventLoopLoad(this.now),
      release: (ids) => {
        const now = this.now();
        for (const id of ids) if (this.heap.has(id)) this.heap.schedule(id, now);
        this.pump();
      },
      onBurst: (state, held) => {
        if (state === 'ended') {
          const message = `the burst has eased: delivering the ${held} message(s) still held`;
          deps.log.info(message, { event: 'burst_ended', held });
          return;
        }
        const wait = deps.config().queue.acceptFirst / 1000;
        const message = `a burst of messages: new ones wait up to ${wait}s for delivery, so that their senders are answered first`;
        deps.log.info(message, { event: 'burst_started' });
      },
    });
  }

  /** Resumes everything in the spool. Each is looked at once, at its own next-attempt time. */
  async start(): Promise<number> {
    const ids = await this.deps.spool.list();
    // Due "now": the attempt reads the state and puts back those whose time has not come, so
    // delivery starts at once even with a very large queue.
    const now = this.now();
    for (const id of ids) this.heap.schedule(id, now);
    this.pump();
    return ids.length;
  }

  get depth(): number {
    return this.heap.size + this.inFlight.size;
  }

  get active(): number {
    return this.inFlight.size;
  }

  /**
   * Schedules a message: by id, or as the queued item just accepted (its state and small body,
   * used by its first attempt instead of the files).
   */
  enqueue(item: string | QueuedMessage, due = this.now()): void {
    if (this.stopped) return;
    const id = typeof item === 'string' ? item : item.entry.id;
    if (typeof item === 'string') {
      this.justQueued.drop(id);
    } else {
      this.justQueued.hold(item);
      // Just accepted and due now: during a burst, it waits for the burst to ease.
      const now = this.now();
      if (due <= now) due = this.acceptFirst.firstAttemptAt(id, now);
    }
    this.heap.schedule(id, due);
    this.pump();
  }

  /** Retry now (an admin's `queue retry`); with no ids, everything waiting. */
  retryNow(ids?: string[]): number {
    const targets = ids ?? [...this.heap.ids()];
    for (const id of targets) {
      this.forced.add(id);
      this.heap.schedule(id, this.now());
    }
    this.pump();
    return targets.length;
  }

  /** Forget an id (it was deleted from the spool by an admin). */
  forget(id: string): void {
    this.heap.delete(id);
    this.acceptFirst.done(id);
    this.justQueued.drop(id);
    this.forced.delete(id);
  }

  isInFlight(id: string): boolean {
    return this.inFlight.has(id);
  }

  /**
   * Resolves when the attempts in flight now have ended (attempts started later are not waited
   * for). After a courier swap, the old courier is closed once this resolves.
   */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.inFlight.values()]);
  }

  /** Stops starting deliveries and waits for those in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.justQueued.clear();
    this.acceptFirst.stop();
    if (this.timer) clearTimeout(this.timer);
    await this.settled();
  }

  private pump(): void {
    if (this.stopped) return;
    const limit = this.deps.config().queue.concurrency;
    while (this.inFlight.size < limit) {
      const id = this.heap.popDue(this.now());
      if (!id) break;
      this.acceptFirst.done(id);
      if (this.inFlight.has(id)) continue;
      const run = this.attempt(id)
        .catch((err: Error) => {
          // The spool itself failed (disk error): try again soon rather than lose track; soon
          // enough that delivery resumes promptly once the disk has room again.
          this.deps.log.error('delivery attempt failed', { id, event: 'attempt_error', error: err.message });
          this.heap.schedule(id, this.now() + SPOOL_ERROR_RETRY_MS);
        })
        .finally(() => {
          this.inFlight.delete(id);
          this.pump();
        });
      this.inFlight.set(id, run);
    }
    this.arm();
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopped) return;
    // At the cap, the next delivery to finish pumps again. A timer for an id already due
    // would fire at once, find no free slot and re-arm itself: a busy loop for as long as
    // the backlog lasts.
    if (this.inFlight.size >= this.deps.config().queue.concurrency) return;
    const due = this.heap.peekDue();
    if (due === undefined) return;
    const delay = Math.min(Math.max(due - this.now(), 0), MAX_TIMER);
    this.timer = setTimeout(() => this.pump(), delay);
  }

  /**
   * One delivery attempt, as a pipeline: load (the state, and the body's check after a
   * restart) → send (the courier) → decide (settle.ts, no I/O) → apply (bounce, spool) →
   * report (event and log lines).
   */
  private async attempt(id: string): Promise<void> {
    const loaded = await this.load(id);
    if (!loaded) return;
    const { entry, data } = loaded;
    const started = this.now();
    const forced = this.forced.delete(id);
    if (!forced && entry.nextAttemptAt > started + 1000) {
      this.heap.schedule(id, entry.nextAttemptAt);
      return;
    }
    const results = await this.send(entry, data);
    const now = this.now();
    const settled = settle(entry, results, now, this.deps.config().queue);
    this.report(entry, results, settled, now - started);
    await this.apply(entry, settled);
  }

  /**
   * The message's state, and its body when kept in memory since it was accepted; undefined
   * when there is nothing (more) to deliver: gone, half-written by a crash, or damaged.
   */
  private async load(id: string): Promise<{ entry: QueueEntry; data?: Buffer } | undefined> {
    const { spool, log } = this.deps;
    // Just accepted by this process: its state, and a small body, came with the queued item.
    const held = this.justQueued.take(id);
    if (held) return { entry: held.entry, data: held.body };
    const entry = await spool.read(id);
    if (!entry) {
      // Delivered or deleted meanwhile, being received now, or left half-written by a crash.
      if (await spool.sweepIfIncomplete(id)) {
        log.warn('removed a message cut short by a crash during its reception (it never got a 250)', {
          id,
          event: 'incomplete_removed',
        });
      }
      return undefined;
    }
    // Read back after a restart: its body may not all have reached the disk before the crash.
    if (!(await spool.verifyBody(entry))) {
      await spool.moveToFailed(
        entry,
        'the body on disk does not match its checksum: a crash came before it was complete, so it was ' +
          'never acknowledged (the client will have sent it again), or the disk damaged it',
      );
      log.error('message body incomplete or damaged: moved to failed/, not sent', {
        id,
        event: 'body_damaged',
        from: entry.from,
        source: entry.source,
      });
      return undefined;
    }
    return { entry };
  }

  /** Hands the pending recipients to the courier; never rejects. */
  private async send(entry: QueueEntry, data: Buffer | undefined): Promise<RecipientResult[]> {
    const pending = pendingRecipients(entry);
    if (!pending.length) return [];
    try {
      return await this.deps.courier().send(entry, pending, { ...this.deps.spool.bodyOf(entry), data });
    } catch (err) {
      return allTemporary(pending, `local error: ${(err as Error).message}`);
    }
  }

  /** Carries out what settle() decided: bounces, then the message's files and its next turn. */
  private async apply(entry: QueueEntry, settled: Settled): Promise<void> {
    const { spool, log } = this.deps;
    const { failedNow, expired } = settled;
    if (failedNow.length) {
      const bounce = await this.deps.bouncer.bounce(entry, failedNow);
      if (bounce) {
        log.info('bounce queued', {
          id: entry.id,
          event: 'bounced',
          bounceId: bounce.entry.id,
          to: bounce.entry.recipients[0]?.address,
          recipients: failedNow.length,
        });
        this.emit('bounced', entry, failedNow);
        this.enqueue(bounce);
      }
    }
    if (settled.done) {
      const failed = entry.recipients.filter((r) => r.status === 'failed');
      if (failed.length) {
        const reason = failed.map((r) => `${r.address}: ${r.lastReply ?? 'failed'}`).join('; ');
        await spool.moveToFailed(
          entry,
          expired ? `expired after ${entry.attempts} attempts: ${reason}` : reason,
        );
      } else {
        await spool.remove(entry.id, entry.oneFile ? 'one file' : 'split');
      }
      return;
    }
    await spool.update(entry);
    this.heap.schedule(entry.id, entry.nextAttemptAt);
  }

  private report(entry: QueueEntry, results: RecipientResult[], settled: Settled, durationMs: number): void {
    this.emit('attempt', { entry, results, durationMs } satisfies AttemptEvent);
    this.logAttempt(entry, results, settled.expired);
  }

  private logAttempt(entry: QueueEntry, results: RecipientResult[], expired: boolean): void {
    const { log } = this.deps;
    // One line per outcome and upstream: a message split by recipient domain (routes.ts) names
    // the upstream of each of its recipients.
    const groups = new Map<string, RecipientResult[]>();
    for (const r of results) {
      const key = `${r.outcome}\0${r.upstream ?? ''}`;
      const group = groups.get(key);
      if (group) group.push(r);
      else groups.set(key, [r]);
    }
    const split = new Set(results.map((r) => r.upstream)).size > 1;
    for (const group of groups.values()) {
      const outcome = group[0]!.outcome;
      const fields: LogFields = {
        id: entry.id,
        event:
          outcome === 'delivered'
            ? 'delivered'
            : outcome === 'temporary'
              ? expired
                ? 'expired'
                : 'deferred'
              : 'failed',
        source: entry.source,
        from: entry.from,
        recipients: group.length,
        size: entry.size,
        attempts: entry.attempts,
        upstream: group[0]?.upstream,
        ...(split ? { to: group.map((r) => r.recipient) } : {}),
        reply: group[0]?.reply,
      };
      if (outcome === 'delivered') log.info('delivered', fields);
      else
        log.warn(
          outcome === 'temporary' ? (expired ? 'expired, giving up' : 'deferred') : 'refused by upstream',
          fields,
        );
    }
  }
}
