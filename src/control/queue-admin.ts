// What the queue commands do, on a spool and (when the relay runs) its delivery queue. The
// relay's control socket runs these with its queue; the CLI runs them on the spool directly
// when no relay is running.
import type { DeliveryQueue } from '../queue/delivery-queue.js';
import { pendingRecipients, QUEUE_ID_PATTERN, type QueueEntry } from '../spool/entry.js';
import type { DeadLetter, Spool } from '../spool/spool.js';
import { ControlRefusal } from './protocol.js';
import { readHeaderBlock } from '../bounce/dsn.js';

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
}

export interface ShownMessage {
  where: 'queue' | 'failed';
  entry: QueueEntry | DeadLetter;
  inFlight: boolean;
  /** The message's header block as stored (the body is not shown). */
  headers: string;
}

export interface IdsResult {
  done: string[];
  missing: string[];
  /** Whether a running relay did it (else the spool was changed directly). */
  live: boolean;
}

/** How long `queue delete` waits for a delivery in progress to finish before refusing. */
const IN_FLIGHT_WAIT_MS = 15_000;

export class QueueAdmin {
  constructor(
    private readonly spool: Spool,
    /** The running relay's queue; absent when working on the spool of a stopped relay. */
    private readonly queue?: Pick<DeliveryQueue, 'retryNow' | 'forget' | 'isInFlight' | 'enqueue'>,
    private readonly inFlightWaitMs = IN_FLIGHT_WAIT_MS,
  ) {}

  private async ids(): Promise<string[]> {
    try {
      return await this.spool.list();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async list(): Promise<QueueSummary[]> {
    const out: QueueSummary[] = [];
    for (const id of await this.ids()) {
      const entry = await this.spool.read(id).catch(() => undefined);
      if (!entry) continue; // delivered meanwhile
      out.push({
        id,
        createdAt: entry.createdAt,
        from: entry.from,
        recipients: pendingRecipients(entry),
        delivered: entry.recipients.filter((r) => r.status === 'delivered').length,
        failed: entry.recipients.filter((r) => r.status === 'failed').length,
        attempts: entry.attempts,
        nextAttemptAt: entry.nextAttemptAt,
        lastError: entry.lastError,
        size: entry.size,
        source: entry.source,
        inFlight: this.queue?.isInFlight(id) ?? false,
      });
    }
    return out;
  }

  async show(id: string): Promise<ShownMessage> {
    checkId(id);
    const queued = await this.spool.read(id);
    if (queued) {
      return {
        where: 'queue',
        entry: queued,
        inFlight: this.queue?.isInFlight(id) ?? false,
        headers: await readHeaders(this.spool.bodyPath(id)),
      };
    }
    const dead = await this.spool.readFailed(id);
    if (dead) {
      return {
        where: 'failed',
        entry: dead,
        inFlight: false,
        headers: await readHeaders(this.spool.failedBodyPath(id)),
      };
    }
    throw new ControlRefusal(`no message ${id} in the queue or the dead letters`);
  }

  /** Retry now, whatever the next-attempt time: the ids given, or everything queued. */
  async retry(ids: string[] | 'all'): Promise<IdsResult> {
    const queued = new Set(await this.ids());
    const wanted = ids === 'all' ? [...queued] : ids.map(checkId);
    const done = wanted.filter((id) => queued.has(id));
    const missing = wanted.filter((id) => !queued.has(id));
    if (this.queue) {
      if (done.length) this.queue.retryNow(done);
    } else {
      // The relay is stopped: make them due now, so they go first thing when it starts.
      const now = Date.now();
      for (const id of done) {
        const entry = await this.spool.read(id);
        if (entry && entry.nextAttemptAt > now) await this.spool.update({ ...entry, nextAttemptAt: now });
      }
    }
    return { done, missing, live: Boolean(this.queue) };
  }

  /** Removes messages for good: from the queue, or from the dead letters. */
  async delete(ids: string[]): Promise<IdsResult> {
    const done: string[] = [];
    const missing: string[] = [];
    for (const id of ids.map(checkId)) {
      if (this.queue) {
        // Out of the schedule first, so no new attempt starts; then let one in progress end
        // (it may deliver), rather than pull the file from under it.
        this.queue.forget(id);
        const deadline = Date.now() + this.inFlightWaitMs;
        while (this.queue.isInFlight(id) && Date.now() < deadline) await sleep(50);
        if (this.queue.isInFlight(id)) {
          throw new ControlRefusal(`${id} is being delivered right now; try again in a moment`);
        }
        this.queue.forget(id);
      }
      if (await this.spool.remove(id)) done.push(id);
      else if (await this.spool.removeFailed(id)) done.push(id);
      else missing.push(id);
    }
    return { done, missing, live: Boolean(this.queue) };
  }

  async failed(): Promise<DeadLetter[]> {
    return this.spool.listFailed();
  }

  /** Puts dead letters back in the queue, their failed recipients pending again. */
  async requeue(ids: string[]): Promise<IdsResult> {
    const done: string[] = [];
    const missing: string[] = [];
    for (const id of ids.map(checkId)) {
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

function checkId(id: string): string {
  if (typeof id !== 'string' || !QUEUE_ID_PATTERN.test(id)) {
    throw new ControlRefusal(`"${String(id)}" is not a queue id (see \`smarthost queue list\`)`);
  }
  return id;
}

/** A stored message's header block as text (LF line ends), '' when it cannot be read. */
async function readHeaders(file: string): Promise<string> {
  // Spool bodies always have CRLF line ends (the receiver normalises them; DSNs are built so).
  const block = await readHeaderBlock(file).catch(() => undefined);
  if (!block) return '';
  return block.toString('utf8').replace(/\r\n$/, '').replace(/\r\n/g, '\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
