// MAIL FROM / RCPT TO as the client wrote them, before smtp-server's own checks (the adapter
// hands each line here with smtp-server's parser). smtp-server drops a source route without a
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
  splitCommand,
  type MailParameters,
  type RcptParameters,
} from './esmtp-params.js';
import type { AddressParser, ParsedAddress } from './server-adapter.js';

/** What onMailFrom / onRcptTo receive: smtp-server's parse, with what this module found. */
export interface CheckedAddress extends ParsedAddress {
  mailParameters?: MailParameters;
  rcptParameters?: RcptParameters;
  /** Set when a parameter is unknown or malformed: the reply to send. */
  parameterProblem?: SmtpError;
  /** Set when the address as the client wrote it is in a routing form or malformed. */
  routingProblem?: string;
}

/** The address hook: routing forms first, then the parameters. */
export function readAddressCommand(
  kind: 'MAIL FROM' | 'RCPT TO',
  line: string,
  parse: AddressParser,
  session: SMTPServerSession,
): CheckedAddress | false {
  const smtpUtf8 = Boolean((session.envelope as { smtpUtf8?: boolean } | undefined)?.smtpUtf8);
  return withParameters(kind, line, (name, text) => withRoutingCheck(name, text, parse), smtpUtf8);
}

/** A routing form or a malformed address reaches onMailFrom / onRcptTo marked with the problem. */
function withRoutingCheck(name: string, command: string, parse: AddressParser): CheckedAddress | false {
  const parsed = parse(name, command);
  const written =
    command
      .slice(command.indexOf(':') + 1)
      .trim()
      .split(/\s+/)[0] ?? '';
  const inner = /^<[^<>]*>$/.test(written) ? written.slice(1, -1) : written;
  let problem = routingFormProblem(inner);
  if (!problem && !parsed && /^<[^<>]*>$/.test(written)) {
    // The address alone (without the parameters) fails smtp-server's own syntax check.
    if (!parse(name, `${name.toUpperCase()}:${written}`)) problem = 'it is not a valid address';
  }
  if (!problem) return parsed;
  return { address: inner, args: parsed ? parsed.args : false, routingProblem: problem };
}

/** The parameters read (or the refusal to send) added to the address. */
function withParameters(
  kind: 'MAIL FROM' | 'RCPT TO',
  text: string,
  parse: (name: string, line: string) => CheckedAddress | false,
  smtpUtf8: boolean,
): CheckedAddress | false {
  const parsed = parse(kind.toLowerCase(), text);
  if (text.split(':')[0]!.trim().toUpperCase() !== kind) return parsed;
  const checked = kind === 'MAIL FROM' ? checkMailCommand(text) : checkRcptCommand(text, smtpUtf8);
  if (checked.ok) {
    if (!parsed) return parsed;
    const extra: Partial<CheckedAddress> =
      kind === 'MAIL FROM'
        ? { mailParameters: checked.value as MailParameters }
        : { rcptParameters: checked.value as RcptParameters };
    return Object.assign(parsed, extra);
  }
  // A bad parameter can make smtp-server refuse the whole line (control characters in an
  // xtext value): the address alone then says whether it is the address that is wrong.
  const written = splitCommand(text).address;
  const address = parsed || parse(kind.toLowerCase(), `${kind}:<${written}>`);
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
    const address = r.address;
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
