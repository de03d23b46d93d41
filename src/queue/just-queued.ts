// Messages handed to the queue as they were accepted (the listener's `accepted`, a bounce the
// queue made), held in memory for their first attempt, usually a few milliseconds later (during
// a burst, up to queue.acceptFirst: accept-first.ts): their state, and for a small message (up
// to the spool's KEPT_BODY_MAX, 64 KB) its body, which came with the queued item. The first
// attempt then neither reads the envelope back, nor checks the body's CRC (this process saw its
// fsync), nor opens and reads the body file. The files on disk stay the copy that counts; a
// retry, a restart or a large body reads them.
//
// Bounded: past 10,000 messages (about ten seconds of a burst) a new one is not held (its first
// attempt reads the disk), and past 16 MB of bodies a new body is not kept. Refusing the newest
// rather than dropping the oldest matches the queue, which takes the oldest first: what is held
// is what goes next.
import type { QueuedMessage } from '../spool/spool.js';

const MAX_HELD = 10_000;
const MAX_BODY_BYTES = 16 * 1024 * 1024;

export class JustQueued {
  private readonly held = new Map<string, QueuedMessage>();
  private bodyBytes = 0;

  /** Holds `item` (with its body, when it has one and there is room) if there is room. */
  hold(item: QueuedMessage): void {
    const { entry, body } = item;
    this.drop(entry.id);
    if (this.held.size >= MAX_HELD) return;
    const room = body !== undefined && this.bodyBytes + body.length <= MAX_BODY_BYTES;
    if (room) this.bodyBytes += body.length;
    this.held.set(entry.id, room ? { entry, body: ownCopy(body) } : { entry });
  }

  /** What is held for `id`, handed over once (later attempts read the disk). */
  take(id: string): QueuedMessage | undefined {
    const held = this.held.get(id);
    if (held) this.drop(id);
    return held;
  }

  drop(id: string): void {
    const held = this.held.get(id);
    if (!held) return;
    this.held.delete(id);
    this.bodyBytes -= held.body?.length ?? 0;
  }

  clear(): void {
    this.held.clear();
    this.bodyBytes = 0;
  }

  get size(): number {
    return this.held.size;
  }
}

/**
 * The body in memory of its own. What the spool kept may be a view of a larger buffer (the
 * chunk a socket read, a pooled allocation): held during a burst, thousands of such views keep
 * all of those alive. Measured after two bursts of the bench's 2 KB messages each way: 61–92 MB
 * of Buffers left for the collector with views, 10–31 MB with copies (BENCHMARKS.md, item 36).
 */
function ownCopy(body: Buffer): Buffer {
  if (body.byteOffset === 0 && body.byteLength === body.buffer.byteLength) return body;
  const copy = Buffer.allocUnsafeSlow(body.length);
  body.copy(copy);
  return copy;
}
