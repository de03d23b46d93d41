// Only CRLF leaves. SMTP allows no other line end (RFC 5321 §2.3.8), but old devices and
// scripts send bare LF, and a few send bare CR. Passing either on lets a lenient upstream read
// a line end we did not see: `\r.\r\n` followed by MAIL/RCPT/DATA was, for such an upstream,
// the end of our DATA and the start of a second transaction inside our authenticated session
// (SMTP smuggling, 2023). So every bare CR and every bare LF becomes CRLF here, before the
// headers are parsed and before the spool: what the policy reads, what is stored and what is
// sent are the same lines, and the sending side (nodemailer) then dot-stuffs every line that
// starts with "." (it stuffs after every LF, and every LF is now part of a CRLF), so a line
// that became "." here leaves as "..". Each of CR, LF and CRLF counts as one line end, the
// rule Exim has used since 4.21; CR then LF is one line end, not two, also across chunks.
//
// Streaming, bounded memory: a CR at the very end of a chunk is held back (one byte) until the
// next chunk shows whether an LF follows.
import { Transform, type TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

export class LineEndingNormaliser extends Transform {
  /** The previous chunk ended with a CR that is not written yet. */
  private pendingCr = false;
  /** How many bare CRs and bare LFs were turned into CRLF (for the log). */
  bareLineEnds = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (chunk.length === 0) return done();
    const parts: Buffer[] = [];
    let start = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      parts.push(CRLF);
      if (chunk[0] === LF) start = 1;
      else this.bareLineEnds++;
    }
    const next = new LineByteFinder(chunk);
    let pos = next.from(start);
    while (pos !== -1) {
      if (chunk[pos] === CR) {
        if (pos + 1 === chunk.length) {
          // Held back: the LF (or not) is in the next chunk.
          parts.push(chunk.subarray(start, pos));
          start = chunk.length;
          this.pendingCr = true;
          break;
        }
        if (chunk[pos + 1] === LF) {
          pos = next.from(pos + 2);
          continue;
        }
      }
      // A bare CR or a bare LF.
      this.bareLineEnds++;
      parts.push(chunk.subarray(start, pos), CRLF);
      start = pos + 1;
      pos = next.from(start);
    }
    if (parts.length === 0) return done(null, chunk);
    if (start < chunk.length) parts.push(chunk.subarray(start));
    done(null, Buffer.concat(parts));
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingCr) {
      this.pendingCr = false;
      this.bareLineEnds++;
      return done(null, CRLF);
    }
    done();
  }
}

/**
 * Finds the next CR or LF. Each byte's last position is remembered, so a chunk of many CRs and
 * no LF (or the reverse) is searched once, not once per line: linear in the chunk, whatever
 * its content.
 */
class LineByteFinder {
  private cr = -2;
  private lf = -2;

  constructor(private readonly chunk: Buffer) {}

  /** The index of the first CR or LF at or after `at`, or -1. */
  from(at: number): number {
    if (this.cr !== -1 && this.cr < at) this.cr = this.chunk.indexOf(CR, at);
    if (this.lf !== -1 && this.lf < at) this.lf = this.chunk.indexOf(LF, at);
    if (this.cr === -1) return this.lf;
    if (this.lf === -1) return this.cr;
    return this.cr < this.lf ? this.cr : this.lf;
  }
}
