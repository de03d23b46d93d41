// Splits the message into its header section and body as it streams: the header fields are
// read whole (HeaderSectionParser, bounded by its limits), handed to `edit` to change, and
// written out; the body then flows through untouched and is never held in memory. There is no
// point past which headers pass unedited: a section over the limits fails the stream (the
// caller refuses the message), so a policy that edits headers holds for every message that
// leaves.
import { Transform, type TransformCallback } from 'node:stream';
import { Headers } from 'mailsplit';
import { HeaderSectionParser, type HeaderLimits, type SectionEnd } from './header-section.js';

const CRLF = Buffer.from('\r\n');

export interface HeaderRewriterOptions {
  /** Changes the headers in place: add, remove, update. */
  edit: (headers: Headers) => void;
  /** Header lines (already folded, without CRLF) to put above everything, e.g. Received. */
  prepend?: string[];
  /** Bounds of the header section (defaults: DEFAULT_HEADER_LIMITS). */
  limits?: Partial<HeaderLimits>;
  /** The error the stream fails with when the header section is over a limit. */
  refuse?: (err: Error) => Error;
}

export class HeaderRewriter extends Transform {
  private readonly parser: HeaderSectionParser;
  private inBody = false;

  constructor(private readonly options: HeaderRewriterOptions) {
    super();
    this.parser = new HeaderSectionParser(options.limits);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.inBody) return done(null, chunk);
    let end: SectionEnd | undefined;
    try {
      end = this.parser.feed(chunk);
    } catch (err) {
      return done(this.options.refuse ? this.options.refuse(err as Error) : (err as Error));
    }
    if (!end) return done();
    this.emitHeaders(end);
    done(null, end.body.length ? end.body : undefined);
  }

  override _flush(done: TransformCallback): void {
    if (!this.inBody) {
      // The whole message is headers (no blank line), or it is empty.
      let end: SectionEnd;
      try {
        end = this.parser.end();
      } catch (err) {
        return done(this.options.refuse ? this.options.refuse(err as Error) : (err as Error));
      }
      this.emitHeaders(end);
      if (end.body.length) this.push(end.body);
    }
    done();
  }

  private emitHeaders(end: SectionEnd): void {
    this.inBody = true;
    const headers = new Headers(this.parser.fields);
    this.options.edit(headers);
    const lines = this.options.prepend ?? [];
    if (lines.length) this.push(Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'binary'));
    // A section that ended on a line that is not a header gets a blank line before that line,
    // so no receiver reads it as one. With no fields at all, only the blank line is written,
    // and only when a body follows: an empty message stays empty after the trace line.
    if (headers.getList().length) this.push(headers.build());
    else if (end.body.length || end.blankLineNeeded) this.push(CRLF);
  }
}
