// Reads a message's header section line by line as it streams, into mailsplit's list of
// header fields, so that every policy sees every header field. There is no size past which it
// stops looking: the section is parsed whole, or the message is refused at the limit (a header
// section that large is not mail a device sends, and holding it is what bounds memory).
//
// mailsplit's own parser (Headers built from a Buffer) is not used for reading: it takes a
// first line "From ..." (as in "From : CEO <ceo@corp.example>", valid obsolete syntax) for an
// mbox separator and keeps it out of the header list while writing it out again, and its
// unfolding costs a splice per continuation line. Its Headers class is still the one that
// holds, edits and writes the fields.
//
// Input: lines already ending in CRLF (LineEndingNormaliser runs first), so a line here is a
// line to every receiver downstream. The rules, chosen so that what leaves has one reading:
// - a field is `name[WSP]:value`, name in printable ASCII without ":" (RFC 5322 §3.6.8, with
//   §4.5.3's obsolete WSP before the colon); the WSP is dropped, so `From :` leaves as `From:`
//   and is the field From to the policy and to every receiver;
// - a line starting with SP or HTAB continues the field before it; one holding nothing but
//   WSP is dropped (unfolded it adds nothing, and some parsers read it as the blank line);
// - an empty line ends the section; so does any other line (no colon, a name with spaces,
//   8-bit bytes or controls, a continuation with no field before it): that line and what
//   follows are body, and a blank line is put before it so no receiver reads it as a header;
// - no blank line at all: the whole message is the header section (the writer adds one).
import type { HeaderLine } from 'mailsplit';

const LF = 0x0a;

export interface HeaderLimits {
  /** The header section's bytes, line ends included. */
  maxBytes: number;
  /** Header fields (a folded field counts once). */
  maxFields: number;
  /** Characters of one line, without its CRLF (RFC 5322 §2.1.1: 998). */
  maxLineLength: number;
}

export const DEFAULT_HEADER_LIMITS: HeaderLimits = {
  maxBytes: 1024 * 1024,
  maxFields: 10_000,
  maxLineLength: 998,
};

/** Why a header section was refused; the caller turns it into the SMTP reply. */
export class HeaderSectionError extends Error {
  constructor(
    readonly problem: 'bytes' | 'fields' | 'line',
    readonly limit: number,
  ) {
    super(
      problem === 'bytes'
        ? `the header section is over ${limit} bytes`
        : problem === 'fields'
          ? `more than ${limit} header fields`
          : `a header line is over ${limit} characters`,
    );
    this.name = 'HeaderSectionError';
  }
}

/** Where the header section ended and what of the input is body. */
export interface SectionEnd {
  /** The body's first bytes (the rest of the input follows as it comes). */
  body: Buffer;
  /** The section ended on a line that is not a header: write a blank line before the body. */
  blankLineNeeded: boolean;
}

/** A header field's name, optional WSP, then the colon. */
const FIELD_START = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/;
const WSP_ONLY = /^[ \t]*$/;

export class HeaderSectionParser {
  readonly fields: HeaderLine[] = [];
  private readonly limits: HeaderLimits;
  /** The current line so far (it has not ended yet). */
  private carry: Buffer[] = [];
  private carryBytes = 0;
  private bytes = 0;

  constructor(limits: Partial<HeaderLimits> = {}) {
    this.limits = { ...DEFAULT_HEADER_LIMITS, ...limits };
  }

  /**
   * Reads `chunk`: undefined while the header section goes on, else where it ended. Throws a
   * HeaderSectionError at a limit.
   */
  feed(chunk: Buffer): SectionEnd | undefined {
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(LF, start);
      if (lf === -1) {
        this.keep(chunk.subarray(start));
        return undefined;
      }
      const piece = chunk.subarray(start, lf + 1);
      const line = this.carry.length ? Buffer.concat([...this.carry, piece]) : piece;
      this.carry = [];
      this.carryBytes = 0;
      const end = this.line(line, false);
      if (end === 'blank') return { body: chunk.subarray(lf + 1), blankLineNeeded: false };
      if (end === 'body')
        return { body: Buffer.concat([line, chunk.subarray(lf + 1)]), blankLineNeeded: true };
      start = lf + 1;
    }
  }

  /** The input ended inside the header section: reads its last, unterminated line. */
  end(): SectionEnd {
    const last = Buffer.concat(this.carry);
    this.carry = [];
    if (last.length && this.line(last, true) === 'body') return { body: last, blankLineNeeded: true };
    return { body: Buffer.alloc(0), blankLineNeeded: false };
  }

  private keep(part: Buffer): void {
    if (!part.length) return;
    this.carry.push(part);
    this.carryBytes += part.length;
    // Checked as the line grows, so a line with no end is never held past the limit (+1 for
    // the CR of a CRLF still to come).
    if (this.carryBytes > this.limits.maxLineLength + 1)
      throw new HeaderSectionError('line', this.limits.maxLineLength);
    this.countBytes(0);
  }

  private countBytes(more: number): void {
    this.bytes += more;
    if (this.bytes + this.carryBytes > this.limits.maxBytes)
      throw new HeaderSectionError('bytes', this.limits.maxBytes);
  }

  /** Takes one line (with its line end unless `last`); says whether the section goes on. */
  private line(raw: Buffer, last: boolean): 'more' | 'blank' | 'body' {
    const ending = last ? 0 : raw.length >= 2 && raw[raw.length - 2] === 0x0d ? 2 : 1;
    const text = raw.toString('latin1', 0, raw.length - ending);
    if (text === '') return 'blank';
    if (text.length > this.limits.maxLineLength)
      throw new HeaderSectionError('line', this.limits.maxLineLength);
    const previous = this.fields[this.fields.length - 1];
    if (text[0] === ' ' || text[0] === '\t') {
      if (!previous) return 'body';
      this.countBytes(raw.length);
      if (!WSP_ONLY.test(text)) previous.line += `\r\n${text}`;
      return 'more';
    }
    const match = FIELD_START.exec(text);
    if (!match) return 'body';
    this.countBytes(raw.length);
    if (this.fields.length >= this.limits.maxFields)
      throw new HeaderSectionError('fields', this.limits.maxFields);
    const name = match[1]!;
    this.fields.push({ key: name.toLowerCase(), line: `${name}:${text.slice(match[0].length)}` });
    return 'more';
  }
}
