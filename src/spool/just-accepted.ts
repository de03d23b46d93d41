// Messages this process has just accepted, held in memory for their first attempt, usually a
// few milliseconds later: their state, and for a small message (up to 64 KB) its body. The
// first attempt then neither reads the envelope back, nor checks the body's CRC (this process
// saw its fsync), nor opens and reads the body file. The files on disk stay the copy that
// counts; a retry, a restart or a large body reads them.
//
// Bounded: past 1,000 messages a new one is not held (its first attempt reads the disk), and
// past 16 MB of bodies a new body is not kept. Refusing the newest rather than dropping the
// oldest matches the queue, which takes the oldest first: what is held is what goes next.
import type { QueueEntry } from './entry.js';

/** Bodies up to this size are kept. Printers' scans are larger and stream from disk. */
export const KEPT_BODY_MAX = 64 * 1024;
const MAX_HELD = 1000;
const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface Held {
  entry: QueueEntry;
  /** The body's bytes, as written, when it was small enough and there was room. */
  data?: Buffer;
}

export class JustAccepted {
  private readonly held = new Map<string, Held>();
  private bodyBytes = 0;

  /** Holds `entry` (and `data`, when given) if there is room. */
  hold(entry: QueueEntry, data?: Buffer): void {
    if (this.held.size >= MAX_HELD) return;
    this.drop(entry.id);
    const room =
      data !== undefined && data.length <= KEPT_BODY_MAX && this.bodyBytes + data.length <= MAX_BODY_BYTES;
    if (room) this.bodyBytes += data.length;
    this.held.set(entry.id, room ? { entry, data } : { entry });
  }

  /** What is held for `id`, handed over once (later attempts read the disk). */
  take(id: string): Held | undefined {
    const held = this.held.get(id);
    if (held) this.drop(id);
    return held;
  }

  drop(id: string): void {
    const held = this.held.get(id);
    if (!held) return;
    this.held.delete(id);
    this.bodyBytes -= held.data?.length ?? 0;
  }

  get size(): number {
    return this.held.size;
  }
}
