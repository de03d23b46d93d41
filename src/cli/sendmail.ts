// `smarthost sendmail`, also run as `sendmail` (a symlink /usr/sbin/sendmail → bin/smarthost.js):
// the command cron, logwatch, smartd and PHP's mail() call. It never loses a script's mail:
//
// 1. the message (stdin) is written durably into <spool>/maildrop/ (maildrop/writer.ts);
// 2. the running relay is asked over its control socket to take it now (`pickup`), and says
//    whether it queued or refused it: a refusal is sendmail's non-zero exit, as with Postfix;
// 3. a relay that is not running, or a socket this user may not use, changes nothing for the
//    script: exit 0, and the relay takes the file up when it starts, or within seconds.
//
// With -bs the same path is taken by each message of an SMTP conversation on stdin and stdout
// (sendmail-smtp.ts). Errors are one line on stderr and a sysexits.h code (sendmail-args.ts).
import { userInfo } from 'node:os';
import { checkLocalEnvelope } from '../maildrop/submit.js';
import { routingFormProblem } from '../policy/address.js';
import { PolicyEngine } from '../policy/engine.js';
import { SmtpError } from '../smtp/errors.js';
import { EX, parseSendmailArgs, SendmailError, type SendmailArgs } from './sendmail-args.js';
import { headerRecipients, outgoingHeader, readMessage, untilDot } from './sendmail-message.js';
import { smtpSession } from './sendmail-smtp.js';
import { askRelay, findTarget, permanentRefusal, writeToMaildrop } from './sendmail-submit.js';

/** Runs sendmail with `argv` (the arguments after the command name); resolves the exit code. */
export async function runSendmail(
  argv: string[],
  stdin: AsyncIterable<Buffer> = process.stdin,
  stdout: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  let verbose = argv.includes('-v');
  try {
    const args = parseSendmailArgs(argv);
    verbose = args.verbose;
    for (const flag of args.ignored) if (verbose) info(`ignored ${flag}`);
    if (args.mode === 'i') return EX.OK; // newaliases: there are no aliases here
    if (args.mode === 's') return await smtpSession(args, stdin, stdout);
    if (args.mode !== 'm')
      throw new SendmailError(`-b${args.mode} is not supported (only -bm, the default, and -bs)`, EX.USAGE);
    return await send(args, stdin);
  } catch (err) {
    if (err instanceof SendmailError) {
      process.stderr.write(`sendmail: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`sendmail: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return EX.SOFTWARE;
  }
}

function info(message: string): void {
  process.stderr.write(`sendmail: ${message}\n`);
}

async function send(args: SendmailArgs, stdin: AsyncIterable<Buffer>): Promise<number> {
  const target = findTarget(args.config);
  const user = userInfo().username;
  const from = args.from ?? `${user}@${target.hostname}`;
  const qualify = (address: string) => (address.includes('@') ? address : `${address}@${target.hostname}`);
  if (from && routingFormProblem(qualify(from)))
    throw new SendmailError(`bad sender address "${from}": ${routingFormProblem(qualify(from))}`, EX.DATAERR);

  let message;
  try {
    message = await readMessage(untilDot(stdin, args.ignoreDots));
  } catch (err) {
    if (err instanceof SendmailError) throw err;
    throw new SendmailError(
      `cannot read the message on standard input: ${(err as Error).message}`,
      EX.NOINPUT,
    );
  }
  if (message.empty) throw new SendmailError('no message on standard input', EX.NOINPUT);
  const recipients = unique([
    ...args.recipients.flatMap(splitList),
    ...(args.extract ? headerRecipients(message.fields) : []),
  ]).map(qualify);
  if (!recipients.length) {
    throw new SendmailError(
      args.extract
        ? 'no recipients: the message has no To, Cc or Bcc, and none were given as arguments'
        : 'no recipients: give them as arguments, or use -t to take them from To, Cc and Bcc',
      EX.USAGE,
    );
  }
  for (const rcpt of recipients) {
    const problem = routingFormProblem(rcpt);
    if (problem) throw new SendmailError(`bad recipient address "${rcpt}": ${problem}`, EX.NOUSER);
  }
  const sender = from ? qualify(from) : '';
  // The relay's own checks, made here first when the config is readable: a refusal now is an
  // exit code the script sees, not a message that waits in maildrop for nothing.
  const policy = target.config ? new PolicyEngine(target.config) : undefined;
  const refused =
    policy &&
    (await permanentRefusal(() => checkLocalEnvelope(policy, { from: sender, recipients, size: 0 })));
  if (refused) throw refusal(refused);

  const header = outgoingHeader(message.fields, sender, args.fullName);
  async function* whole(): AsyncGenerator<Buffer> {
    yield header;
    yield* message!.body;
  }
  try {
    const written = await writeToMaildrop(target, policy, { from: sender, recipients, user }, whole());
    if (args.verbose) info(`written to ${written.file} (${written.size} bytes)`);
    const handed = await askRelay(target.socket, written.name);
    if (args.verbose) info(handed.status === 'queued' ? `queued as ${handed.id}` : handed.why);
    return EX.OK;
  } catch (err) {
    throw err instanceof SmtpError ? refusal(err) : err;
  }
}

/** A relay's refusal as sendmail's error: its words, and the sysexits code that fits. */
function refusal(err: SmtpError): SendmailError {
  const code =
    err.reason === 'bad_address'
      ? EX.NOUSER
      : ['not_allowed', 'sender_not_allowed', 'recipient_domain'].includes(err.reason)
        ? EX.NOPERM
        : ['size', 'header_too_large', 'header_line_too_long', 'maildrop_invalid'].includes(err.reason)
          ? EX.DATAERR
          : err.temporary
            ? EX.TEMPFAIL
            : EX.UNAVAILABLE;
  return new SendmailError(`refused by the relay: ${err.code} ${err.enhanced} ${err.text}`, code);
}

function unique(addresses: string[]): string[] {
  const seen = new Set<string>();
  return addresses.filter((a) => {
    const key = a.toLowerCase();
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** "a@x, b@y" as one argument (some scripts do this) is two recipients. */
function splitList(arg: string): string[] {
  return arg
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
}
