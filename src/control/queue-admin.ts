// What the queue commands do, on a spool and (when the relay runs) its delivery queue. The
// relay's control socket runs these with its queue; the CLI runs them on the spool directly
// when no relay is running. Each action takes a selection: queue ids, or every message in the
// action's reach (`--all`), narrowed by a filter (queue-filter.ts).
import type { DeliveryQueue } from '../queue/delivery-queue.js';
import { pendingRecipients, QUEUE_ID_PATTERN, type QueueEntry } from '../spool/entry.js';
import type { DeadLetter, Spool } from '../spool/spool.js';
import { ControlRefusal } from './protocol.js';
import { readHeaderBlock } from '../bounce/dsn.js';
import { checkFilter, FilterError, matches, type MessageState, type QueueFilter } from './queue-filter.js';

export interface QueueSummary {
  id: string;
  createdAt: number;
  from: string;
  /** Recipients still waiting. */
  recipients: string[];
  delivered: number;
  failed: number;
  attempts: number;
  nextAttemptAt: number;
  lastError?: string;
  size: number;
  source: string;
  inFlight: boolean;
  state: MessageState;
}

/** Where a message is: the queue, on hold, or the dead letters. */
export type Place = 'queue' | 'held' | 'failed';

export interface ShownMessage {
  where: Place;
  entry: QueueEntry | DeadLetter;
  inFlight: boolean;
  /** The message's header block as stored. */
  headers: string;
  /** The stored message (what is sent), for `queue show --body`: the CLI streams it from there. */
  bodyPath: string;
  /** Only the file's first `bodyLength` bytes are the message (a one-file message). */
  bodyLength?: number;
}

export interface IdsResult {
  done: string[];
  missing: string[];
  /** Ids found but not acted on, and why (a held message asked to be retried). */
  skipped?: { id: string; reason: string }[];
  /** Whether a running relay did it (else the spool was changed directly). */
  live: boolean;
}

/** Queue ids, or everything the action reaches (`all`), either way narrowed by `filter`. */
export interface Selection {
  ids?: string[];
  all?: boolean;
  filter?: QueueFilter;
}

export type Action = 'list' | 'retry' | 'delete' | 'hold' | 'release' | 'requeue';

/** Where each action looks when not given ids (`--state failed` adds the dead letters to list and delete). */
const REACH: Record<Action, Place[]> = {
  list: ['queue', 'held'],
  retry: ['queue'],
  delete: ['queue', 'held'],
  hold: ['queue'],
  release: ['held'],
  requeue: ['failed'],
};

interface Found {
  id: string;
  where: Place;
  entry: QueueEntry | DeadLetter;
  state: MessageState;
}

/** How long `queue delete` and `queue hold` wait for a delivery in progress to finish before refusing. */
const IN_FLIGHT_WAIT_MS = 15_000;

export class QueueAdmin {
  constructor(
    private readonly spool: Spool,
    /** The running relay's queue; absent when working on the spool of a stopped relay. */
    private readonly queue?: Pick<DeliveryQueue, 'retryNow' | 'forget' | 'isInFlight' | 'enqueue'>,
    private readonly inFlightWaitMs = IN_FLIGHT_WAIT_MS,
  ) {}

  private async ids(place: Place): Promise<string[]> {
    try {
      if (place === 'queue') return await this.spool.list();
      if (place === 'held') return await this.spool.held.ids();
      return (await this.spool.failed.list()).map((d) => d.id);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  private async read(place: Place, id: string): Promise<QueueEntry | DeadLetter | undefined> {
    const entry =
      place === 'queue'
        ? this.spool.read(id)
        : place === 'held'
          ? this.spool.held.read(id)
          : this.spool.failed.read(id);
    return entry.catch(() => undefined);
  }

  private stateOf(place: Place, entry: QueueEntry): MessageState {
    if (place !== 'queue') return place;
    if (this.queue?.isInFlight(entry.id)) return 'delivering';
    return entry.lastError ? 'deferred' : 'waiting';
  }

  /** The messages in `places`, oldest first within each. */
  private async scan(places: Place[]): Promise<Found[]> {
    const out: Found[] = [];
    for (const where of places) {
      for (const id of await this.ids(where)) {
        const entry = await this.read(where, id);
        if (!entry) continue; // delivered, released or deleted meanwhile
        out.push({ id, where, entry, state: this.stateOf(where, entry) });
      }
    }
    return out;
  }

  private checked(filter: unknown): QueueFilter {
    try {
      return checkFilter(filter);
    } catch (err) {
      if (err instanceof FilterError) throw new ControlRefusal(err.message);
      throw err;
    }
  }

  private reach(action: Action, filter: QueueFilter): Place[] {
    const places = [...REACH[action]];
    if ((action === 'list' || action === 'delete') && filter.state?.includes('failed')) places.push('failed');
    return places;
  }

  /** The messages a selection reaches for `action`, filter applied (ids without a filter: as given). */
  private async select(action: Action, selection: Selection): Promise<{ ids: string[] }> {
    const filter = this.checked(selection.filter);
    if (selection.ids?.length) {
      const ids = selection.ids.map(checkId);
      if (!selection.filter) return { ids };
      const wanted = new Set(ids);
      const found = await this.scan(this.reach(action, filter));
      return { ids: found.filter((f) => wanted.has(f.id) && matchesFound(filter, f)).map((f) => f.id) };
    }
    if (!selection.all && !selection.filter)
      throw new ControlRefusal('expected queue ids, a filter or "all"');
    const found = await this.scan(this.reach(action, filter));
    return { ids: found.filter((f) => matchesFound(filter, f)).map((f) => f.id) };
  }

  /** The ids an action would reach, acting on none (the count before `--yes`). */
  async match(action: Action, selection: Selection): Promise<string[]> {
    return (await this.select(action, selection)).ids;
  }

  async list(filter?: QueueFilter): Promise<QueueSummary[]> {
    const checked = this.checked(filter);
    return (await this.scan(this.reach('list', checked)))
      .filter((f) => matchesFound(checked, f))
      .map(({ id, entry, state }) => ({
        id,
        createdAt: entry.createdAt,
        from: entry.from,
        recipients: state === 'failed' ? failedRecipients(entry) : pendingRecipients(entry),
        delivered: entry.recipients.filter((r) => r.status === 'delivered').length,
        failed: entry.recipients.filter((r) => r.status === 'failed').length,
        attempts: entry.attempts,
        nextAttemptAt: entry.nextAttemptAt,
        lastError: 'reason' in entry ? (entry as DeadLetter).reason : entry.lastError,
        size: entry.size,
        source: entry.source,
        inFlight: state === 'delivering',
        state,
      }));
  }

  async show(id: string): Promise<ShownMessage> {
    checkId(id);
    const places: [Place, string][] = [
      ['queue', this.spool.bodyPath(id)],
      ['held', this.spool.held.bodyPath(id)],
      ['failed', this.spool.failed.bodyPath(id)],
    ];
    for (const [where, file] of places) {
      const entry = await this.read(where, id);
      if (!entry) continue;
      const { path: bodyPath, length: bodyLength } =
        where === 'queue' ? this.spool.bodyOf(entry) : { path: file, length: undefined };
      const { oneFile: _layout, ...shown } = entry;
      return {
        where,
        entry: shown,
        inFlight: where === 'queue' && (this.queue?.isInFlight(id) ?? false),
        headers: await readHeaders(bodyPath, bodyLength),
        bodyPath,
        ...(bodyLength === undefined ? {} : { bodyLength }),
      };
    }
    throw new ControlRefusal(`no message ${id} in the queue, on hold or in the dead letters`);
  }

  /** Retry now, whatever the next-attempt time. Held messages are not retried: release them. */
  async retry(selection: Selection): Promise<IdsResult> {
    const { ids } = await this.select('retry', selection);
    const queued = new Set(await this.ids('queue'));
    const held = new Set(await this.ids('held'));
    const done = ids.filter((id) => queued.has(id));
    const skipped = ids
      .filter((id) => !queued.has(id) && held.has(id))
      .map((id) => ({ id, reason: 'on hold: `smarthost queue release` it first' }));
    const missing = ids.filter((id) => !queued.has(id) && !held.has(id));
    if (this.queue) {
      if (done.length) this.queue.retryNow(done);
    } else {
      for (const id of done) await this.dueNow(id);
    }
    return { done, missing, skipped, live: Boolean(this.queue) };
  }

  /** The relay is stopped: make a message due now, so it goes first thing when it starts. */
  private async dueNow(id: string): Promise<void> {
    const now = Date.now();
    const entry = await this.spool.read(id);
    if (entry && entry.nextAttemptAt > now) await this.spool.update({ ...entry, nextAttemptAt: now });
  }

  /**
   * Takes a message out of the running queue's schedule, so no new attempt starts, and lets an
   * attempt in progress end (it may deliver) rather than pull the files from under it.
   */
  private async quiesce(id: string): Promise<void> {
    if (!this.queue) return;
    this.queue.forget(id);
    const deadline = Date.now() + this.inFlightWaitMs;
    while (this.queue.isInFlight(id) && Date.now() < deadline) await sleep(50);
    if (this.queue.isInFlight(id)) {
      throw new ControlRefusal(`${id} is being delivered right now; try again in a moment`);
    }
    // The attempt that ended may have scheduled its next one.
    this.queue.forget(id);
  }

  /** Removes messages for good: from the queue, the held ones, or the dead letters. */
  async delete(selection: Selection): Promise<IdsResult> {
    const done: string[] = [];
    const missing: string[] = [];
    for (const id of (await this.select('delete', selection)).ids) {
      await this.quiesce(id);
      if (
        (await this.spool.remove(id)) ||
        (await this.spool.held.remove(id)) ||
        (await this.spool.failed.remove(id))
      )
        done.push(id);
      else missing.push(id);
    }
    return { done, missing, live: Boolean(this.queue) };
  }

  /** Puts queued messages on hold: never attempted (nor expired) until released. */
  async hold(selection: Selection): Promise<IdsResult> {
    const done: string[] = [];
    const missing: string[] = [];
    for (const id of (await this.select('hold', selection)).ids) {
      await this.quiesce(id);
      if (await this.spool.hold(id)) done.push(id);
      else missing.push(id);
    }
    return { done, missing, live: Boolean(this.queue) };
  }

  /** Back into the queue, tried at once. */
  async release(selection: Selection): Promise<IdsResult> {
    const done: string[] = [];
    const missing: string[] = [];
    for (const id of (await this.select('release', selection)).ids) {
      if (!(await this.spool.held.release(id))) {
        missing.push(id);
        continue;
      }
      done.push(id);
      if (this.queue) this.queue.retryNow([id]);
      else await this.dueNow(id);
    }
    return { done, missing, live: Boolean(this.queue) };
  }

  async failed(): Promise<DeadLetter[]> {
    return this.spool.failed.list();
  }

  /** Puts dead letters back in the queue, their failed recipients pending again. */
  async requeue(selection: Selection | string[]): Promise<IdsResult> {
    const done: string[] = [];
    const missing: string[] = [];
    const chosen = Array.isArray(selection) ? { ids: selection } : selection;
    for (const id of (await this.select('requeue', chosen)).ids) {
      const entry = await this.spool.requeue(id);
      if (!entry) {
        missing.push(id);
        continue;
      }
      done.push(id);
      this.queue?.enqueue(id);
    }
    return { done, missing, live: Boolean(this.queue) };
  }
}

function matchesFound(filter: QueueFilter, found: Found): boolean {
  const { entry, state } = found;
  return matches(filter, {
    from: entry.from,
    recipients: entry.recipients.map((r) => r.address),
    source: entry.source,
    createdAt: entry.createdAt,
    state,
  });
}

function failedRecipients(entry: QueueEntry): string[] {
  return entry.recipients.filter((r) => r.status === 'failed').map((r) => r.address);
}

function checkId(id: string): string {
  if (typeof id !== 'string' || !QUEUE_ID_PATTERN.test(id)) {
    throw new ControlRefusal(`"${String(id)}" is not a queue id (see \`smarthost queue list\`)`);
  }
  return id;
}

/** A stored message's header block as text (LF line ends), '' when it cannot be read. */
async function readHeaders(file: string, length?: number): Promise<string> {
  // Spool bodies always have CRLF line ends (the receiver normalises them; DSNs are built so).
  const block = await readHeaderBlock(file, length).catch(() => undefined);
  if (!block) return '';
  return block.toString('utf8').replace(/\r\n$/, '').replace(/\r\n/g, '\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
