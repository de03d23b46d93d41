// Where the parameter check (esmtp-params.ts) meets smtp-server. smtp-server answers some bad
// parameters itself with a bare 501, silently drops others (an empty key) and accepts any
// unknown one; so this looks at each MAIL FROM / RCPT TO line as the client wrote it, before
// smtp-server's own checks, and hands onMailFrom / onRcptTo either the parameters read or the
// refusal to send (after the check of who is sending, so a stranger learns nothing more).
// This uses smtp-server's private _parseAddressCommand, as the listener's watchAddresses
// does; test/e2e/dsn.test.ts pins the behaviour, so a change inside smtp-server fails there.
import type { SMTPServerSession } from 'smtp-server';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import type { QueueEntry, RecipientState } from '../spool/entry.js';
import type { SmtpError } from './errors.js';
import {
  checkMailCommand,
  checkRcptCommand,
  splitCommand,
  type MailParameters,
  type RcptParameters,
} from './esmtp-params.js';

/** What the hook adds to the address smtp-server hands to onMailFrom / onRcptTo. */
export interface WithParameters {
  mailParameters?: MailParameters;
  rcptParameters?: RcptParameters;
  /** Set when a parameter is unknown or malformed: the reply to send. */
  parameterProblem?: SmtpError;
}

export function watchParameters(connection: SMTPConnection): void {
  if (typeof connection._parseAddressCommand !== 'function') return;
  const parse = connection._parseAddressCommand.bind(connection);
  connection._parseAddressCommand = (name, command) => {
    const parsed = parse(name, command);
    const text = command.toString();
    const kind = name.trim().toUpperCase();
    if (text.split(':')[0]!.trim().toUpperCase() !== kind) return parsed;
    const smtpUtf8 = Boolean((connection.session?.envelope as { smtpUtf8?: boolean } | undefined)?.smtpUtf8);
    const checked =
      kind === 'MAIL FROM'
        ? checkMailCommand(text)
        : kind === 'RCPT TO'
          ? checkRcptCommand(text, smtpUtf8)
          : undefined;
    if (!checked) return parsed;
    if (checked.ok) {
      if (!parsed) return parsed;
      const extra: WithParameters =
        kind === 'MAIL FROM'
          ? { mailParameters: checked.value as MailParameters }
          : { rcptParameters: checked.value as RcptParameters };
      return Object.assign(parsed, extra);
    }
    // A bad parameter can make smtp-server refuse the whole line (control characters in an
    // xtext value): the address alone then says whether it is the address that is wrong.
    const written = splitCommand(text).address;
    const address = parsed || parse(name, `${kind}:<${written}>`);
    if (!address) return false;
    const marked = {
      ...address,
      args: false as const,
      duplicate: undefined,
      parameterProblem: checked.error,
    };
    return marked;
  };
}

/** The DSN and SMTPUTF8 fields of the queue entry, from what the hook read for this session. */
export function envelopeFields(
  session: SMTPServerSession,
): Pick<QueueEntry, 'dsn' | 'smtpUtf8' | 'bodyType'> & { recipients: Partial<RecipientState>[] } {
  const mail = (session.envelope.mailFrom || undefined) as WithParameters | undefined;
  const params = mail?.mailParameters;
  return {
    ...(params?.dsn ? { dsn: params.dsn } : {}),
    ...(params?.smtpUtf8 ? { smtpUtf8: true } : {}),
    ...(params?.bodyType ? { bodyType: params.bodyType } : {}),
    recipients: session.envelope.rcptTo.map((r) => {
      const rcpt = (r as WithParameters).rcptParameters;
      return {
        ...(rcpt?.notify ? { notify: rcpt.notify } : {}),
        ...(rcpt?.orcpt ? { orcpt: rcpt.orcpt } : {}),
      };
    }),
  };
}
