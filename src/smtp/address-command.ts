// MAIL FROM / RCPT TO as the client wrote them, before smtp-server's own checks (the adapter
// hands each line here with smtp-server's parser). The path is read whole (envelope-syntax.ts):
// with or without brackets, a quoted local part with spaces in it. smtp-server drops a source route without a
// word, answers other malformed addresses and some bad parameters with a bare 501, silently
// drops others (an empty key) and accepts any unknown one. So this reads the line itself and
// hands onMailFrom / onRcptTo the address marked with what is wrong (a routing form, a bad
// parameter), to be refused after the check of who is sending (a stranger learns nothing
// about syntax), or the parameters read (esmtp-params.ts). test/e2e/policy-hygiene and
// test/e2e/dsn pin the behaviour.
import type { SMTPServerSession } from 'smtp-server';
import { routingFormProblem } from '../policy/address.js';
import type { QueueEntry, RecipientState } from '../spool/entry.js';
import type { SmtpError } from './errors.js';
import {
  checkMailCommand,
  checkRcptCommand,
  type MailParameters,
  type RcptParameters,
} from './esmtp-params.js';
import { MAX_PATH, quotedLocalPart, readCommandPath } from './envelope-syntax.js';
import type { AddressParser, ParsedAddress } from './server-adapter.js';

/** What onMailFrom / onRcptTo receive: smtp-server's parse, with what this module found. */
export interface CheckedAddress extends ParsedAddress {
  mailParameters?: MailParameters;
  rcptParameters?: RcptParameters;
  /** Set when a parameter is unknown or malformed: the reply to send. */
  parameterProblem?: SmtpError;
  /** Set when the address as the client wrote it is in a routing form or malformed. */
  routingProblem?: string;
  /** Where an accepted recipient is delivered, when not to itself (the postmaster). */
  deliverTo?: string;
}

export interface AddressOptions {
  /** Refuse a path without angle brackets with smtp-server's 501 (`strictEnvelopes: true`). */
  strict: boolean;
}

/**
 * The address hook. smtp-server reads only `<path>` with no space or quote in it, so it is shown
 * the path in brackets (legacy clients leave them out) and, for a quoted local part, a stand-in
 * one, which is put back in what it returns. Routing forms are checked first, then parameters.
 */
export function readAddressCommand(
  kind: 'MAIL FROM' | 'RCPT TO',
  line: string,
  parse: AddressParser,
  session: SMTPServerSession,
  options: AddressOptions,
): CheckedAddress | false {
  const name = kind.toLowerCase();
  const written = readCommandPath(kind, line);
  // Nothing readable (an unclosed bracket or quote, a parameter run into the path): smtp-server
  // would not read it either, and answers 501.
  if (!written || (!written.bracketed && options.strict)) return false;
  const quoted = quotedLocalPart(written.path);
  const shown = quoted ? `q@${quoted.domain}` : written.path;
  const library = (params: string): CheckedAddress | false => {
    const parsed = parse(name, `${kind}:<${shown}>${params ? ` ${params}` : ''}`);
    if (!parsed || !quoted) return parsed;
    return { ...parsed, address: `${quoted.local}@${parsed.address.slice(parsed.address.indexOf('@') + 1)}` };
  };
  const parsed = library(written.rest);
  let problem = routingFormProblem(written.path);
  if (!problem && written.path.length > MAX_PATH - 2)
    problem = `it is longer than ${MAX_PATH - 2} characters`;
  // The address alone (without the parameters) fails smtp-server's own syntax check.
  if (!problem && !parsed && !library('')) problem = 'it is not a valid address';
  if (problem) return { address: written.path, args: parsed ? parsed.args : false, routingProblem: problem };

  const smtpUtf8 = Boolean((session.envelope as { smtpUtf8?: boolean } | undefined)?.smtpUtf8);
  const checked = kind === 'MAIL FROM' ? checkMailCommand(line) : checkRcptCommand(line, smtpUtf8);
  if (checked.ok) {
    if (!parsed) return false;
    const extra: Partial<CheckedAddress> =
      kind === 'MAIL FROM'
        ? { mailParameters: checked.value as MailParameters }
        : { rcptParameters: checked.value as RcptParameters };
    return Object.assign(parsed, extra);
  }
  // A bad parameter can make smtp-server refuse the whole line (control characters in an
  // xtext value): the address alone then says whether it is the address that is wrong.
  const address = parsed || library('');
  if (!address) return false;
  return { ...address, args: false, duplicate: undefined, parameterProblem: checked.error };
}

/**
 * The recipients to deliver to (the postmaster's replaced by where it goes, each address once)
 * and the DSN and SMTPUTF8 fields of the queue entry, from what the hook read for this session.
 */
export function envelopeOf(session: SMTPServerSession): {
  recipients: string[];
  fields: Pick<QueueEntry, 'dsn' | 'smtpUtf8' | 'bodyType'> & { recipients: Partial<RecipientState>[] };
} {
  const mail = (session.envelope.mailFrom || undefined) as CheckedAddress | undefined;
  const params = mail?.mailParameters;
  const recipients: string[] = [];
  const perRecipient: Partial<RecipientState>[] = [];
  const seen = new Set<string>();
  for (const r of session.envelope.rcptTo as CheckedAddress[]) {
    const address = r.deliverTo ?? r.address;
    if (seen.has(address.toLowerCase())) continue;
    seen.add(address.toLowerCase());
    recipients.push(address);
    const rcpt = r.rcptParameters;
    perRecipient.push({
      ...(rcpt?.notify ? { notify: rcpt.notify } : {}),
      ...(rcpt?.orcpt ? { orcpt: rcpt.orcpt } : {}),
    });
  }
  return {
    recipients,
    fields: {
      ...(params?.dsn ? { dsn: params.dsn } : {}),
      ...(params?.smtpUtf8 ? { smtpUtf8: true } : {}),
      ...(params?.bodyType ? { bodyType: params.bodyType } : {}),
      recipients: perRecipient,
    },
  };
}
