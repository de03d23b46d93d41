// SMTP requires CRLF; old devices and scripts send bare LF. Turning every bare LF into CRLF
// (RFC 5321 §2.3.8) keeps the ESP from refusing the message or mangling it. Streaming: a chunk
// boundary between CR and LF is handled by remembering the last byte of the previous chunk.
import { Transform, type TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;

export class LineEndingNormaliser extends Transform {
  private lastByte = -1;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    let start = 0;
    let index = chunk.indexOf(LF);
    if (index === -1) {
      this.rememberLast(chunk);
      return done(null, chunk);
    }
    const parts: Buffer[] = [];
    while (index !== -1) {
      const before = index > 0 ? chunk[index - 1] : this.lastByte;
      if (before !== CR) {
        parts.push(chunk.subarray(start, index), CRLF);
        start = index + 1;
      }
      index = chunk.indexOf(LF, index + 1);
    }
    parts.push(chunk.subarray(start));
    this.rememberLast(chunk);
    done(null, parts.length === 1 ? chunk : Buffer.concat(parts));
  }

  private rememberLast(chunk: Buffer): void {
    if (chunk.length) this.lastByte = chunk[chunk.length - 1] ?? -1;
  }
}

const CRLF = Buffer.from('\r\n');
