// The filters of the queue commands (`--from`, `--to`, `--source`, `--older-than`, `--state`):
// checked once where they arrive (the control socket or the CLI working offline), then matched
// against each message.
//
// Address patterns are shell-style wildcards, never regular expressions: `*` any run of
// characters, `?` one character, everything else literal, case-insensitive, matching the whole
// address (`*@example.com`, `scanner?@corp.example`). An admin's typo in a regex could take the
// relay's event loop for minutes (a ReDoS); the matcher below is iterative, with at most one
// backtracking point, so it costs at most pattern length × address length steps, whatever the
// pattern.

export const MESSAGE_STATES = ['waiting', 'deferred', 'delivering', 'held', 'failed'] as const;
/**
 * waiting: queued, not tried yet (or tried without an error); deferred: queued after a failed
 * attempt; delivering: an attempt is in progress; held: on hold; failed: a dead letter.
 */
export type MessageState = (typeof MESSAGE_STATES)[number];

export interface QueueFilter {
  from?: string;
  to?: string;
  source?: string;
  /** Arrived at least this long ago (ms). */
  olderThan?: number;
  state?: MessageState[];
}

/** What a filter looks at in a message. */
export interface Matchable {
  from: string;
  /** Every recipient of the message, whatever its status. */
  recipients: string[];
  source: string;
  createdAt: number;
  state: MessageState;
}

/** Longer patterns are refused: no address comes close (RFC 5321 caps a path at 256). */
export const MAX_PATTERN_LENGTH = 256;

export class FilterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterError';
  }
}

/** Whether `text` matches the wildcard `pattern` as a whole, ignoring case. */
export function wildcardMatch(pattern: string, text: string): boolean {
  const p = pattern.toLowerCase().replace(/\*+/g, '*');
  const t = text.toLowerCase();
  let pi = 0;
  let ti = 0;
  // The last `*` seen, and where in the text its run ends now: on a mismatch, that star takes
  // one more character and matching resumes after it. Earlier stars never need revisiting.
  let star = -1;
  let mark = 0;
  while (ti < t.length) {
    const c = p[pi];
    if (c === '*') {
      star = pi++;
      mark = ti;
    } else if (c !== undefined && (c === '?' || c === t[ti])) {
      pi++;
      ti++;
    } else if (star >= 0) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (p[pi] === '*') pi++;
  return pi === p.length;
}

function checkPattern(name: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value === '') throw new FilterError(`--${name} needs a pattern`);
  if (value.length > MAX_PATTERN_LENGTH) {
    throw new FilterError(`--${name}: a pattern of at most ${MAX_PATTERN_LENGTH} characters`);
  }
  if ([...value].some((c) => c < ' ' || c === '\u007f'))
    throw new FilterError(`--${name}: control characters in the pattern`);
  return value;
}

/** Checks a filter as it came over the control socket (or from the CLI); throws FilterError. */
export function checkFilter(raw: unknown): QueueFilter {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new FilterError('the filter must be an object');
  const input = raw as Record<string, unknown>;
  const known = new Set(['from', 'to', 'source', 'olderThan', 'state']);
  for (const key of Object.keys(input)) if (!known.has(key)) throw new FilterError(`unknown filter "${key}"`);
  const filter: QueueFilter = {};
  const from = checkPattern('from', input.from);
  const to = checkPattern('to', input.to);
  const source = checkPattern('source', input.source);
  if (from !== undefined) filter.from = from;
  if (to !== undefined) filter.to = to;
  if (source !== undefined) filter.source = source;
  if (input.olderThan !== undefined) {
    const ms = input.olderThan;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      throw new FilterError('--older-than needs a duration such as 30m, 2h or 3d');
    }
    filter.olderThan = ms;
  }
  if (input.state !== undefined) {
    const states = Array.isArray(input.state) ? input.state : [input.state];
    for (const state of states) {
      if (!(MESSAGE_STATES as readonly unknown[]).includes(state)) {
        throw new FilterError(`--state: "${String(state)}" is not one of ${MESSAGE_STATES.join(', ')}`);
      }
    }
    if (!states.length) throw new FilterError('--state needs a state');
    filter.state = states as MessageState[];
  }
  return filter;
}

/** Whether the filter narrows anything down. */
export function isEmptyFilter(filter: QueueFilter): boolean {
  return Object.values(filter).every((v) => v === undefined);
}

/** Whether `message` passes every part of `filter` (an empty filter passes everything). */
export function matches(filter: QueueFilter, message: Matchable, now = Date.now()): boolean {
  if (filter.state && !filter.state.includes(message.state)) return false;
  if (filter.olderThan !== undefined && now - message.createdAt < filter.olderThan) return false;
  if (filter.source !== undefined && !wildcardMatch(filter.source, message.source)) return false;
  // The null sender is written <> (bounces), as the queue commands show it.
  if (filter.from !== undefined && !wildcardMatch(filter.from, message.from || '<>')) return false;
  if (filter.to !== undefined && !message.recipients.some((r) => wildcardMatch(filter.to!, r))) return false;
  return true;
}
