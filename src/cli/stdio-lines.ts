// The input side of `sendmail -bs`: standard input read as SMTP command lines and, after
// DATA, as a message up to its lone "." line, dot-unstuffed (RFC 5321 4.5.2). Bounded: a
// command line past MAX_COMMAND is skipped to its end and reported as too long, and a message
// streams in pieces of at most PIECE bytes (a line without an end among them), never whole.
// A line ends at LF; a CR before it is kept in the message (the relay normalises line ends)
// and dropped from a command.

/** RFC 5321 says 512 octets; clients with many parameters send more, so allow some room. */
export const MAX_COMMAND = 2048;
const PIECE = 64 * 1024;
const LF = 0x0a;
const DOT = 0x2e;

/** The input ended inside a message, before its "." line. */
export class InputEnded extends Error {
  constructor() {
    super('the input ended before the end of the message (a line of a single ".")');
    this.name = 'InputEnded';
  }
}

/** A message's bytes after DATA, read once; drain() reads the rest of it after a failure. */
export interface DataStream extends AsyncIterable<Buffer> {
  drain(): Promise<void>;
}

export class StdioLines {
  private buffer: Buffer = Buffer.alloc(0);
  private ended = false;
  private readonly source: AsyncIterator<Buffer>;

  constructor(input: AsyncIterable<Buffer>) {
    this.source = input[Symbol.asyncIterator]();
  }

  /**
   * The next command line without its line end; 'too long' for one past MAX_COMMAND;
   * undefined at the end of the input (an unended last line is dropped: it was never sent whole).
   */
  async command(): Promise<string | 'too long' | undefined> {
    let tooLong = false;
    for (;;) {
      const newline = this.buffer.indexOf(LF);
      if (newline >= 0) {
        const line = this.buffer.subarray(0, newline);
        this.buffer = this.buffer.subarray(newline + 1);
        if (tooLong || newline > MAX_COMMAND + 1) return 'too long';
        return line.toString('utf8').replace(/\r$/, '');
      }
      if (this.buffer.length > MAX_COMMAND + 1) {
        tooLong = true;
        this.buffer = Buffer.alloc(0);
      }
      if (!(await this.fill())) return undefined;
    }
  }

  /** The message that follows DATA's 354, up to (not with) its "." line. */
  message(): DataStream {
    const state = { atLineStart: true, done: false };
    const next = async (): Promise<IteratorResult<Buffer>> => {
      const piece = await this.piece(state);
      return piece ? { done: false, value: piece } : { done: true, value: undefined };
    };
    return {
      // A consumer that stops early (a refusal) must not end the reading: drain() goes on.
      [Symbol.asyncIterator]: () => ({ next, return: async () => ({ done: true, value: undefined }) }),
      drain: async () => {
        while (await this.piece(state));
      },
    };
  }

  /** Whole lines gathered up to PIECE bytes; undefined once the "." line is read. */
  private async piece(state: { atLineStart: boolean; done: boolean }): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let size = 0;
    while (!state.done) {
      const newline = this.buffer.indexOf(LF);
      if (newline < 0 && this.buffer.length < PIECE) {
        if (parts.length) break; // what is here goes now, before waiting for more
        if (!(await this.fill())) throw new InputEnded();
        continue;
      }
      const end = newline >= 0 && newline < PIECE ? newline + 1 : PIECE;
      let line = this.buffer.subarray(0, end);
      this.buffer = this.buffer.subarray(end);
      const lineStart = state.atLineStart;
      state.atLineStart = line[line.length - 1] === LF;
      if (lineStart && line[0] === DOT) {
        if (isEndOfData(line)) {
          state.done = true;
          break;
        }
        line = line.subarray(1);
      }
      parts.push(line);
      size += line.length;
      if (size >= PIECE) break;
    }
    if (!parts.length) return undefined;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
  }

  /** Stops reading (QUIT): a Readable's iterator then lets go of it, so the process can exit. */
  async close(): Promise<void> {
    this.ended = true;
    await this.source.return?.();
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.source.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, next.value]) : next.value;
    return true;
  }
}

/** ".\r\n" or ".\n": the end of a message. */
function isEndOfData(line: Buffer): boolean {
  return line.length === 2 ? line[1] === LF : line.length === 3 && line[1] === 0x0d && line[2] === LF;
}
