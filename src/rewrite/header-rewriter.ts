// Splits the message into its header block and body as it streams: the headers (usually a
// few KB) are collected, handed to `edit` to change, and written out; the body then flows
// through untouched and is never held in memory. Header parsing is mailsplit's, so folded
// headers and odd forms are handled the way ZoneMTA handles them.
import { Transform, type TransformCallback } from 'node:stream';
import { Headers } from 'mailsplit';

const HEADER_END = Buffer.from('\r\n\r\n');

export interface HeaderRewriterOptions {
  /** Changes the headers in place: add, remove, update. */
  edit: (headers: Headers) => void;
  /** Header lines (already folded, without CRLF) to put above everything, e.g. Received. */
  prepend?: string[];
  /** Beyond this the "headers" are not headers: pass everything through unparsed. */
  maxHeaderBytes?: number;
}

export class HeaderRewriter extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private inBody = false;
  private readonly maxHeaderBytes: number;

  constructor(private readonly options: HeaderRewriterOptions) {
    super();
    this.maxHeaderBytes = options.maxHeaderBytes ?? 1024 * 1024;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.inBody) return done(null, chunk);
    const before = this.pendingBytes;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const end = this.headerEnd(chunk, before);
    if (end !== -1) {
      // Joined once, when the blank line is found (joining on every chunk would copy a long
      // header block over and over).
      const collected = this.pending.length === 1 ? chunk : Buffer.concat(this.pending);
      this.pending = [];
      this.emitHeaders(collected.subarray(0, end));
      this.inBody = true;
      return done(null, collected.subarray(end));
    }
    if (this.pendingBytes > this.maxHeaderBytes) {
      // Not a header block we can trust to edit: keep only the trace line, change nothing else.
      this.emitPrepend();
      this.inBody = true;
      const collected = Buffer.concat(this.pending);
      this.pending = [];
      return done(null, collected);
    }
    done();
  }

  /**
   * Where the header block ends (an offset into everything collected so far, just past the
   * blank line), looking only at the new `chunk` and the few bytes before it: -1 if not yet.
   */
  private headerEnd(chunk: Buffer, before: number): number {
    // Near the start, look at all of it: a message may begin with its blank line.
    if (before < HEADER_END.length) {
      return findHeaderEnd(this.pending.length === 1 ? chunk : Buffer.concat(this.pending));
    }
    // The blank line may straddle the previous chunk and this one.
    const tail = lastBytes(this.pending.slice(0, -1), HEADER_END.length - 1);
    const index = Buffer.concat([tail, chunk]).indexOf(HEADER_END);
    return index === -1 ? -1 : before - tail.length + index + HEADER_END.length;
  }

  override _flush(done: TransformCallback): void {
    if (!this.inBody) {
      // The whole message is headers (no blank line), or it is empty.
      this.emitHeaders(Buffer.concat(this.pending));
    }
    done();
  }

  /** `block` is the header section including its terminating blank line (when there is one). */
  private emitHeaders(block: Buffer): void {
    // A message that starts with its blank line has no headers at all: parse none, so the ones
    // we add are not put after an empty line. build() always ends with the blank line, so a
    // message that had none (all headers, no body) gets one.
    const headers = new Headers(block.toString('binary').trim() === '' ? [] : block);
    this.options.edit(headers);
    this.emitPrepend();
    this.push(headers.build());
  }

  private emitPrepend(): void {
    const lines = this.options.prepend ?? [];
    if (lines.length) this.push(Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'binary'));
  }
}

/** The last `n` bytes of the chunks (fewer if they hold fewer). */
function lastBytes(chunks: Buffer[], n: number): Buffer {
  const out: Buffer[] = [];
  let need = n;
  for (let i = chunks.length - 1; i >= 0 && need > 0; i--) {
    const c = chunks[i]!;
    out.unshift(c.subarray(Math.max(0, c.length - need)));
    need -= Math.min(need, c.length);
  }
  return Buffer.concat(out);
}

/** Index just past the blank line that ends the headers, or -1. A message may start with it. */
function findHeaderEnd(buf: Buffer): number {
  if (buf.length >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  const index = buf.indexOf(HEADER_END);
  return index === -1 ? -1 : index + 4;
}
