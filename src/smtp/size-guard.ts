// Counts the bytes of DATA and, past the limit, stops passing them on (the client's stream
// is still read to the end, so the SMTP conversation stays in step) and fails at the end.
import { Transform, type TransformCallback } from 'node:stream';

export class SizeGuard extends Transform {
  bytes = 0;
  exceeded = false;

  constructor(
    private readonly limit: number,
    private readonly onExceeded: () => Error,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      this.exceeded = true;
      return done();
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    done(this.exceeded ? this.onExceeded() : null);
  }
}
