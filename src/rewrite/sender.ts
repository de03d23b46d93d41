// Sender rewriting: an ESP only sends for the domains it verified, and devices send as
// whatever they were set up with ("scan@printer.local"). Per the source's policy this decides
// the envelope sender that leaves and the header edits that go with it:
//
// - `sender:` set: always send as that address;
// - else an address outside `senders.domains` becomes `senders.default` (when there is one);
// - an address already in `senders.domains` is left alone; the null sender <> stays null.
//
// In the headers, From (display name kept) and Sender are rewritten the same way, and the
// original From goes into Reply-To when the message has none, so replies still reach a person.
// Everything written is rebuilt from parsed parts (a quoted or RFC 2047-encoded name and a
// checked address), never copied from the client, so nothing can inject a header or address.
//
// A From (or Sender) counts as the one address it names only when it reads one way to every
// receiver (soleMailbox): one field, one mailbox, nothing after it, no second "@" anywhere
// (a quoted or encoded display name holding an address included). Anything else (several
// mailboxes, a group, a mailbox followed by junk, an addr-spec after an angle-addr, controls)
// counts as out of the verified domains, so it is rewritten per the policy; a display name
// that holds an address, or could pass for one, is not kept. What leaves has exactly one From
// (unless the message had none and the policy names no sender) and at most one Sender.
import type { Headers } from 'mailsplit';
import libmime from 'libmime';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import type { Policy } from '../config/load.js';
import { domainOf } from '../policy/address.js';

export type SenderRules = Pick<Policy, 'sender' | 'senders'>;

/** A mailbox we are willing to write into a header: no quotes, brackets, spaces or controls. */
// eslint-disable-next-line no-control-regex
const SAFE_ADDRESS = /^[^\s"<>(),;:\\@[\]\x00-\x1f\x7f]+@[^\s"<>(),;:\\@[\]\x00-\x1f\x7f]+$/u;
/** RFC 5322 atext plus space: a phrase that needs no quoting. */
const PLAIN_PHRASE = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$/;

function sameAddress(a: string | undefined, b: string): boolean {
  return a !== undefined && a.toLowerCase() === b.toLowerCase();
}

function inVerifiedDomain(address: string, rules: SenderRules): boolean {
  // domainOf gives '' without an @, which no configured domain is.
  return (rules.senders?.domains ?? []).includes(domainOf(address));
}

/**
 * The address that `address` leaves as, or undefined when it leaves unchanged. `undefined`
 * stands for "no address at all" (a missing From), which a fixed sender or default replaces.
 */
export function replacementFor(address: string | undefined, rules: SenderRules): string | undefined {
  if (rules.sender) return sameAddress(address, rules.sender) ? undefined : rules.sender;
  if (address !== undefined && inVerifiedDomain(address, rules)) return undefined;
  const fallback = rules.senders?.default;
  return fallback && !sameAddress(address, fallback) ? fallback : undefined;
}

/** The envelope sender that leaves: the null sender stays null. */
export function outgoingEnvelopeSender(envelopeFrom: string, rules: SenderRules): string {
  if (envelopeFrom === '') return '';
  return replacementFor(envelopeFrom, rules) ?? envelopeFrom;
}

export interface Mailbox {
  name: string;
  address: string;
}

/** The mailboxes of a header line ("From: ..." as mailsplit keeps it: binary, maybe folded). */
export function parseMailboxes(line: string): Mailbox[] {
  return addressparser(headerValue(line), { flatten: true }).map((m) => ({
    name: decodeName(m.name ?? ''),
    address: (m.address ?? '').trim(),
  }));
}

/** A header line's value, unfolded, as text. */
function headerValue(line: string): string {
  const raw = line.slice(line.indexOf(':') + 1).replace(/\r?\n(?=[ \t])/g, '');
  // Header bytes are kept as latin1 ("binary"); 8-bit names are UTF-8 (RFC 6532).
  return Buffer.from(raw, 'binary').toString('utf8');
}

/**
 * The one mailbox that these From (or Sender) lines name, read strictly; undefined when they
 * name none, several, or could be read another way by some receiver. addressparser is lenient
 * (it folds junk after a mailbox into the name and keeps the first of two angle-addrs), so its
 * answer is only taken when the raw value holds nothing it could have folded away.
 */
export function soleMailbox(lines: string[]): Mailbox | undefined {
  if (lines.length !== 1) return undefined;
  const value = headerValue(lines[0] ?? '');
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) return undefined;
  const parsed = addressparser(value);
  const only = parsed[0];
  if (parsed.length !== 1 || !only || 'group' in only) return undefined;
  const address = (only.address ?? '').trim();
  if (!SAFE_ADDRESS.test(address) || address.includes('=?')) return undefined;
  // The address's own "@" is the only one: none in a name, a comment or a second address.
  if (value.split('@').length !== 2) return undefined;
  const open = value.indexOf('<');
  if (open === -1) {
    if (value.trim() !== address) return undefined;
  } else {
    const close = value.indexOf('>');
    if (value.lastIndexOf('<') !== open || value.lastIndexOf('>') !== close || close < open) return undefined;
    if (value.slice(open + 1, close).trim() !== address || value.slice(close + 1).trim() !== '')
      return undefined;
  }
  const name = decodeName(only.name ?? '');
  return looksLikeAddress(name) ? undefined : { name, address };
}

/** A display name that holds an address or brackets: it could pass for the sender itself. */
function looksLikeAddress(name: string): boolean {
  return /[@<>]/.test(name);
}

/** The display name to keep in a rewritten header: none when it could pass for an address. */
function keptName(mailbox: Mailbox | undefined): string {
  return mailbox && !looksLikeAddress(mailbox.name) ? mailbox.name : '';
}

function decodeName(name: string): string {
  try {
    return libmime.decodeWords(name);
  } catch {
    return name;
  }
}

/** A display name as a header phrase: atoms as they are, else quoted, non-ASCII RFC 2047 encoded. */
export function formatPhrase(name: string): string {
  const clean = name
    // eslint-disable-next-line no-control-regex
    .replace(/[\x00-\x1f\x7f\u2028\u2029]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 200);
  if (!clean) return '';
  if (PLAIN_PHRASE.test(clean)) return clean;
  if (/^[\x20-\x7e]*$/.test(clean)) return `"${clean.replace(/[\\"]/g, '\\$&')}"`;
  // Base64 encoded words hold no character that means anything in an address header.
  return libmime.encodeWord(clean, 'B', 52);
}

/** `"Name" <address>`, or `<address>`; throws on an address that is not safe to write. */
export function formatMailbox(name: string, address: string): string {
  if (!SAFE_ADDRESS.test(address))
    throw new Error(`refusing to write the address ${JSON.stringify(address)}`);
  const phrase = formatPhrase(name);
  return phrase ? `${phrase} <${address}>` : `<${address}>`;
}

export interface HeaderChange {
  header: 'From' | 'Sender' | 'Reply-To';
  from?: string;
  to: string;
}

/** Index of the first header named `key` in mailsplit's list, or -1. */
function indexOf(headers: Headers, key: string): number {
  return headers.getList().findIndex((h) => h.key === key);
}

function replaceHeader(headers: Headers, key: string, name: string, value: string, index: number): void {
  headers.remove(key);
  // mailsplit: index < 1 puts it first, past the end appends.
  headers.add(name, value, index < 0 ? Infinity : index);
}

/** Where the header From goes; undefined to leave it alone. */
function fromTarget(
  lines: string[],
  sole: Mailbox | undefined,
  rules: SenderRules,
  envelopeOut: string,
): string | undefined {
  if (lines.length === 0) {
    // No From at all: give it one when the policy names one.
    if (rules.sender) return rules.sender;
    if (envelopeOut && inVerifiedDomain(envelopeOut, rules)) return envelopeOut;
    return rules.senders?.default;
  }
  // An ambiguous From (sole undefined) is out of every verified domain.
  return replacementFor(sole?.address, rules);
}

/** Keeps only the first of several `key` fields (a From or Sender no policy rewrites). */
function keepFirst(headers: Headers, key: string): boolean {
  const list = headers.getList();
  const index = list.findIndex((h) => h.key === key);
  const first = list[index];
  if (!first || list.filter((h) => h.key === key).length < 2) return false;
  headers.remove(key);
  headers.addFormatted(key, first.line, index);
  return true;
}

/**
 * Rewrites From and Sender per the rules and adds Reply-To with the original From when needed.
 * `envelopeOut` is the envelope sender that leaves. Returns what changed, for the log.
 */
export function rewriteSenderHeaders(headers: Headers, rules: SenderRules, envelopeOut = ''): HeaderChange[] {
  const changes: HeaderChange[] = [];
  const fromLines = headers.get('from');
  const sole = soleMailbox(fromLines);
  // For the name and Reply-To: what a lenient reading finds first.
  const first = sole ?? fromLines.flatMap((line) => parseMailboxes(line)).find((m) => m.address);
  const target = fromTarget(fromLines, sole, rules, envelopeOut);
  if (target && SAFE_ADDRESS.test(target)) {
    replaceHeader(headers, 'from', 'From', formatMailbox(keptName(first), target), indexOf(headers, 'from'));
    changes.push({ header: 'From', from: first?.address, to: target });
    if (
      first &&
      !headers.hasHeader('reply-to') &&
      SAFE_ADDRESS.test(first.address) &&
      !sameAddress(first.address, target)
    ) {
      headers.add('Reply-To', formatMailbox(keptName(first), first.address), indexOf(headers, 'from') + 1);
      changes.push({ header: 'Reply-To', to: first.address });
    }
  } else if (keepFirst(headers, 'from')) {
    changes.push({ header: 'From', from: first?.address, to: first?.address ?? '' });
  }
  const senderLines = headers.get('sender');
  if (senderLines.length) {
    const sender = soleMailbox(senderLines);
    const found = sender ?? senderLines.flatMap((line) => parseMailboxes(line)).find((m) => m.address);
    const replacement = replacementFor(sender?.address, rules);
    if (replacement && SAFE_ADDRESS.test(replacement)) {
      const value = formatMailbox(keptName(found), replacement);
      replaceHeader(headers, 'sender', 'Sender', value, indexOf(headers, 'sender'));
      changes.push({ header: 'Sender', from: found?.address, to: replacement });
    } else if (keepFirst(headers, 'sender')) {
      changes.push({ header: 'Sender', from: found?.address, to: found?.address ?? '' });
    }
  }
  return changes;
}

export interface SenderPlan {
  /** The envelope sender that leaves. */
  from: string;
  /** Whether it differs from the client's. */
  envelopeRewritten: boolean;
  /** For the Transaction: rewrites the headers as the message streams through. */
  editHeaders: (headers: Headers) => void;
  /** Filled in by editHeaders: what it changed. */
  headerChanges: HeaderChange[];
}

/** The whole decision for one message from a source with these rules. */
export function planSender(envelopeFrom: string, rules: SenderRules): SenderPlan {
  const from = outgoingEnvelopeSender(envelopeFrom, rules);
  const plan: SenderPlan = {
    from,
    envelopeRewritten: from !== envelopeFrom,
    headerChanges: [],
    editHeaders: (headers) => {
      plan.headerChanges = rewriteSenderHeaders(headers, rules, from);
    },
  };
  return plan;
}
