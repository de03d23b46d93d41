// The path of MAIL FROM / RCPT TO as the client wrote it (RFC 5321 4.1.2), read without
// splitting on spaces: a quoted local part may hold spaces, "<", ">" and "@"
// ("john doe"@corp.example). Also the legacy form without angle brackets (MAIL FROM:user@domain)
// that Postfix accepts and old devices send; whether that is taken is the caller's choice
// (strictEnvelopes). Only reads: what the address may be is for address.ts and the policy.

export interface WrittenPath {
  /** The path without its brackets, e.g. `"john doe"@corp.example` or `` (the null sender). */
  path: string;
  /** Whether it was written in angle brackets. */
  bracketed: boolean;
  /** The parameters after it ("SIZE=100 BODY=8BITMIME"), trimmed. */
  rest: string;
}

/** RFC 5321 limits a path to 256 octets, brackets included. */
export const MAX_PATH = 256;

/** The index of the quote closing the quoted string opening at `start`, or -1. */
export function closingQuote(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i;
  }
  return -1;
}

/**
 * Reads the path at the start of `argument` (what follows "MAIL FROM:" or "RCPT TO:").
 * Undefined when there is none or it is not closed (an unmatched bracket or quote).
 */
export function readPath(argument: string): WrittenPath | undefined {
  const text = argument.replace(/^[ \t]+/, '');
  if (text.length > 64 * 1024) return undefined;
  if (text.startsWith('<')) {
    let i = 1;
    for (; i < text.length; i++) {
      const c = text[i];
      if (c === '"') {
        i = closingQuote(text, i);
        if (i === -1) return undefined;
      } else if (c === '>') break;
      else if (c === '<') return undefined;
    }
    if (i >= text.length) return undefined;
    const after = text.slice(i + 1);
    // "<a@b>SIZE=1" runs a parameter into the path: not a path we can read.
    if (after !== '' && !/^[ \t]/.test(after)) return undefined;
    return { path: text.slice(1, i), bracketed: true, rest: after.trim() };
  }
  let i = 0;
  if (text.startsWith('"')) {
    i = closingQuote(text, 0);
    if (i === -1) return undefined;
    i += 1;
  }
  while (i < text.length && text[i] !== ' ' && text[i] !== '\t') i++;
  const path = text.slice(0, i);
  if (path === '' || /[<>]/.test(path)) return undefined;
  return { path, bracketed: false, rest: text.slice(i).trim() };
}

/**
 * The command's path, when the line is `kind` ("MAIL FROM" / "RCPT TO") followed by a colon
 * and a readable path; undefined otherwise.
 */
export function readCommandPath(kind: string, line: string): WrittenPath | undefined {
  const colon = line.indexOf(':');
  if (colon === -1 || line.slice(0, colon).trim().toUpperCase() !== kind) return undefined;
  return readPath(line.slice(colon + 1).replace(/[\r\n]+$/, ''));
}

/**
 * A local part in quotes (`"john doe"@corp.example`): smtp-server reads no such address, so it
 * is shown a stand-in local part and the quoted one is put back afterwards. Undefined when the
 * path has no quoted local part.
 */
export function quotedLocalPart(path: string): { local: string; domain: string } | undefined {
  if (!path.startsWith('"')) return undefined;
  const end = closingQuote(path, 0);
  if (end === -1 || path[end + 1] !== '@') return undefined;
  return { local: path.slice(0, end + 1), domain: path.slice(end + 2) };
}
