// `sendmail -bs`: SMTP on standard input and output, the way Symfony Mailer and Laravel call
// sendmail by default ("/usr/sbin/sendmail -bs"), as Postfix's sendmail offers it. Each message
// of the conversation takes the path of one given on sendmail's standard input: the sender and
// recipients are checked against the policy of the local source as MAIL and RCPT come (when
// the config is readable), the message is written durably into maildrop/, and the running
// relay is asked to take it; its answer is the reply to the final ".". A 250 is only ever sent
// once the message is on disk, in the queue or in maildrop/.
//
// Trusted the way sendmail's arguments are (the caller is a local user, and the relay applies
// the local source's policy again at pickup), but still bounded: command lines and the header
// section have limits, a message streams, and a refusal keeps the conversation in step.
import { userInfo } from 'node:os';
import { localSource } from '../maildrop/submit.js';
import { routingFormProblem } from '../policy/address.js';
import { PolicyEngine } from '../policy/engine.js';
import { readPath } from '../smtp/envelope-syntax.js';
import { SmtpError } from '../smtp/errors.js';
import { EX, SendmailError, type SendmailArgs } from './sendmail-args.js';
import { outgoingHeader, readMessage } from './sendmail-message.js';
import { askRelay, findTarget, permanentRefusal, writeToMaildrop, type Target } from './sendmail-submit.js';
import { InputEnded, StdioLines } from './stdio-lines.js';

/** Recipients of one message, at most (Postfix's smtpd_recipient_limit). */
const MAX_RECIPIENTS = 1000;

interface Envelope {
  from: string;
  recipients: string[];
}

/** Runs the conversation to QUIT or the end of the input; resolves sendmail's exit code. */
export async function smtpSession(
  args: SendmailArgs,
  stdin: AsyncIterable<Buffer>,
  stdout: NodeJS.WritableStream,
): Promise<number> {
  const target = findTarget(args.config);
  const session = new Session(target, args, stdout);
  const input = new StdioLines(stdin);
  // A client that hangs up (EPIPE) ends the conversation; it must not crash the command.
  stdout.on('error', () => void input.close());
  session.reply(220, `${target.hostname} ESMTP smarthost sendmail (SMTP on standard input)`);
  try {
    for (;;) {
      const line = await input.command();
      if (line === undefined) return EX.OK;
      if (line === 'too long') {
        session.reply(500, '5.5.2 Line too long');
        continue;
      }
      if (!(await session.command(line, input))) return EX.OK;
    }
  } catch (err) {
    if (!(err instanceof InputEnded)) throw err;
    throw new SendmailError(`${err.message}: nothing was sent`, EX.NOINPUT);
  } finally {
    await input.close(); // lets go of stdin; the replies still buffered are written before exit
  }
}

class Session {
  private envelope: Envelope | undefined;
  private readonly policy: PolicyEngine | undefined;
  private readonly user = userInfo().username;

  constructor(
    private readonly target: Target,
    private readonly args: SendmailArgs,
    private readonly out: NodeJS.WritableStream,
  ) {
    this.policy = target.config ? new PolicyEngine(target.config) : undefined;
  }

  reply(code: number, text: string): void {
    this.out.write(`${code} ${text}\r\n`);
  }

  private refuse(err: SmtpError): void {
    this.reply(err.code, `${err.enhanced} ${err.text}`);
  }

  /** Carries out one command; false once the conversation is over (QUIT). */
  async command(line: string, input: StdioLines): Promise<boolean> {
    const verb = /^\S*/.exec(line)![0].toUpperCase();
    const argument = line.slice(verb.length).trim();
    switch (verb) {
      case 'EHLO':
        this.envelope = undefined;
        this.out.write(`250-${this.target.hostname}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n`);
        return true;
      case 'HELO':
        this.envelope = undefined;
        this.reply(250, this.target.hostname);
        return true;
      case 'MAIL':
        await this.mail(argument);
        return true;
      case 'RCPT':
        await this.rcpt(argument);
        return true;
      case 'DATA':
        await this.data(input);
        return true;
      case 'RSET':
        this.envelope = undefined;
        this.reply(250, '2.0.0 OK');
        return true;
      case 'NOOP':
        this.reply(250, '2.0.0 OK');
        return true;
      case 'VRFY':
        this.reply(252, '2.5.0 Send some mail, I will try my best');
        return true;
      case 'QUIT':
        this.reply(221, '2.0.0 Bye');
        return false;
      default:
        this.reply(502, `5.5.2 Command not recognised: ${JSON.stringify(verb.slice(0, 20))}`);
        return true;
    }
  }

  private async mail(argument: string): Promise<void> {
    if (this.envelope) return this.reply(503, '5.5.1 Error: nested MAIL command');
    const written = /^FROM:/i.test(argument) ? readPath(argument.slice(5)) : undefined;
    if (!written) return this.reply(501, '5.5.4 Syntax: MAIL FROM:<address>');
    const parameter = written.rest
      .split(/\s+/)
      .find((p) => p && !/^(SIZE=\d+|BODY=(7BIT|8BITMIME))$/i.test(p));
    if (parameter)
      return this.reply(555, `5.5.4 MAIL FROM parameter ${parameter.split('=')[0]} is not supported`);
    const from = written.path === '' ? '' : this.qualify(written.path);
    const problem = from && routingFormProblem(from);
    if (problem) return this.reply(553, `5.1.7 Bad sender address "${from}": ${problem}`);
    const senderChecked = await this.checked(async (policy) => {
      await policy.checkSender(localSource(policy), from);
    });
    if (!senderChecked) return;
    this.envelope = { from, recipients: [] };
    this.reply(250, '2.1.0 OK');
  }

  private async rcpt(argument: string): Promise<void> {
    const envelope = this.envelope;
    if (!envelope) return this.reply(503, '5.5.1 Error: need MAIL command');
    const written = /^TO:/i.test(argument) ? readPath(argument.slice(3)) : undefined;
    if (!written || !written.path) return this.reply(501, '5.5.4 Syntax: RCPT TO:<address>');
    if (written.rest) return this.reply(555, '5.5.4 RCPT TO parameters are not supported here');
    if (envelope.recipients.length >= MAX_RECIPIENTS)
      return this.reply(452, '4.5.3 Error: too many recipients');
    const rcpt = this.qualify(written.path);
    const problem = routingFormProblem(rcpt);
    if (problem) return this.reply(553, `5.1.3 Bad recipient address "${rcpt}": ${problem}`);
    const count = envelope.recipients.length + 1;
    if (!(await this.checked((policy) => policy.checkRcpt(localSource(policy), rcpt, count)))) return;
    if (!envelope.recipients.some((r) => r.toLowerCase() === rcpt.toLowerCase()))
      envelope.recipients.push(rcpt);
    this.reply(250, '2.1.5 OK');
  }

  private async data(input: StdioLines): Promise<void> {
    const envelope = this.envelope;
    if (!envelope) return this.reply(503, '5.5.1 Error: need MAIL command');
    if (!envelope.recipients.length) return this.reply(503, '5.5.1 Error: need RCPT command');
    this.reply(354, 'End data with <CR><LF>.<CR><LF>');
    const stream = input.message();
    this.envelope = undefined;
    try {
      const message = await readMessage(stream);
      const header = outgoingHeader(message.fields, envelope.from, this.args.fullName);
      async function* whole(): AsyncGenerator<Buffer> {
        yield header;
        yield* message.body;
      }
      const drop = { ...envelope, user: this.user };
      const written = await writeToMaildrop(this.target, this.policy, drop, whole());
      const handed = await askRelay(this.target.socket, written.name);
      if (handed.status === 'queued') this.reply(250, `2.0.0 Ok: queued as ${handed.id}`);
      else this.reply(250, `2.0.0 Ok: kept for the relay (${handed.why})`);
    } catch (err) {
      await stream.drain(); // the rest of the message, so the next command is read as one
      if (err instanceof SmtpError) return this.refuse(err);
      if (!(err instanceof SendmailError)) throw err;
      if (err.exitCode === EX.DATAERR) return this.reply(554, `5.6.0 ${err.message}`);
      // TEMPFAIL: the disk is full (writeToMaildrop); anything else: the file could not be made.
      if (err.exitCode === EX.TEMPFAIL) return this.reply(452, `4.3.1 ${err.message}`);
      this.reply(451, `4.3.0 ${err.message}`);
    }
  }

  /**
   * Runs a policy check when the config is readable (else the relay checks at pickup); a
   * permanent refusal is replied, and false (permanentRefusal says which count).
   */
  private async checked(check: (policy: PolicyEngine) => Promise<void>): Promise<boolean> {
    const policy = this.policy;
    const refused = policy && (await permanentRefusal(() => check(policy)));
    if (refused) this.refuse(refused);
    return !refused;
  }

  private qualify(address: string): string {
    return address.includes('@') ? address : `${address}@${this.target.hostname}`;
  }
}
