// The bodies of small messages just accepted, kept in memory for their first attempt: the bytes
// are on disk already (this is a cache, never the copy that counts), and the first attempt,
// usually a few milliseconds later, then sends from memory instead of opening and reading the
// file again. Bounded in count and bytes, oldest dropped first; large messages are never kept
// (they are streamed from disk, as always).

/** Bodies up to this size are kept. Printers' scans are larger and stream from disk. */
export const RECENT_BODY_MAX = 64 * 1024;
const MAX_BODIES = 1000;
const MAX_BYTES = 16 * 1024 * 1024;

export class RecentBodies {
  private readonly bodies = new Map<string, Buffer>();
  private bytes = 0;

  /** Keeps `body` for `id`, dropping the oldest kept bodies when over a bound. */
  keep(id: string, body: Buffer): void {
    if (body.length > RECENT_BODY_MAX) return;
    this.drop(id);
    this.bodies.set(id, body);
    this.bytes += body.length;
    for (const [oldest, data] of this.bodies) {
      if (this.bodies.size <= MAX_BODIES && this.bytes <= MAX_BYTES) break;
      this.bodies.delete(oldest);
      this.bytes -= data.length;
    }
  }

  /** The kept body of `id`, handed over once (later attempts read the file). */
  take(id: string): Buffer | undefined {
    const body = this.bodies.get(id);
    if (body) this.drop(id);
    return body;
  }

  drop(id: string): void {
    const body = this.bodies.get(id);
    if (!body) return;
    this.bodies.delete(id);
    this.bytes -= body.length;
  }

  get size(): number {
    return this.bodies.size;
  }
}
