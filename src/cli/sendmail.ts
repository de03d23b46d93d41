// `smarthost sendmail`, also run as `sendmail` (a symlink /usr/sbin/sendmail → bin/smarthost.js):
// the command cron, logwatch, smartd and PHP's mail() call. It never loses a script's mail:
//
// 1. the message (stdin) is written durably into <spool>/maildrop/ (maildrop/writer.ts);
// 2. the running relay is asked over its control socket to take it now (`pickup`), and says
//    whether it queued or refused it: a refusal is sendmail's non-zero exit, as with Postfix;
// 3. a relay that is not running, or a socket this user may not use, changes nothing for the
//    script: exit 0, and the relay takes the file up when it starts, or within seconds.
//
// Errors are one line on stderr and a sysexits.h code (sendmail-args.ts).
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, stat } from 'node:fs/promises';
import { hostname as hostnameOf, userInfo } from 'node:os';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError, findConfigFile, loadConfig, SYSTEM_CONFIG, type Config } from '../config/load.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import { maildropDir, MAILDROP_DIR_MODE, type PickupResult } from '../maildrop/pickup.js';
import { checkLocalEnvelope } from '../maildrop/submit.js';
import { writeDrop } from '../maildrop/writer.js';
import { routingFormProblem } from '../policy/address.js';
import { PolicyEngine } from '../policy/engine.js';
import { SmtpError } from '../smtp/errors.js';
import { isRefusalReason } from '../events.js';
import { EX, parseSendmailArgs, SendmailError, type SendmailArgs } from './sendmail-args.js';
import { headerRecipients, outgoingHeader, readMessage, untilDot } from './sendmail-message.js';

/** How long sendmail waits for the running relay's answer before leaving it the file. */
const PICKUP_TIMEOUT_MS = 30_000;

interface Target {
  file: string;
  spoolDir: string;
  socket: string;
  hostname: string;
  /** The whole config when it loads (for the checks before writing), else undefined. */
  config?: Config;
}

/** Runs sendmail with `argv` (the arguments after the command name); resolves the exit code. */
export async function runSendmail(
  argv: string[],
  stdin: AsyncIterable<Buffer> = process.stdin,
): Promise<number> {
  let verbose = argv.includes('-v');
  try {
    const args = parseSendmailArgs(argv);
    verbose = args.verbose;
    for (const flag of args.ignored) if (verbose) info(`ignored ${flag}`);
    if (args.mode === 'i') return EX.OK; // newaliases: there are no aliases here
    if (args.mode !== 'm')
      throw new SendmailError(
        `-b${args.mode} is not supported (only -bm, the default); to talk SMTP, use the relay's listener`,
        EX.USAGE,
      );
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
  if (policy) await precheck(() => checkLocalEnvelope(policy, { from: sender, recipients, size: 0 }));

  const dir = await prepareMaildrop(target.spoolDir);
  const header = outgoingHeader(message.fields, sender, args.fullName);
  async function* whole(): AsyncGenerator<Buffer> {
    yield header;
    yield* message!.body;
  }
  let written;
  try {
    written = await writeDrop(dir, { from: sender, recipients, user }, whole(), (size) => {
      if (!policy?.sources.local) return;
      const limit = policy.messageSizeLimit(policy.sources.local, sender);
      if (size > limit) throw policy.sizeError(policy.sources.local, limit, sender);
    });
  } catch (err) {
    if (err instanceof SmtpError) throw refusal(err);
    if (err instanceof SendmailError) throw err;
    throw writeError(err as NodeJS.ErrnoException, dir);
  }
  if (args.verbose) info(`written to ${written.file} (${written.size} bytes)`);
  return await handOver(target.socket, written.name, args.verbose);
}

/** Asks the running relay to take the file now; its refusal is the exit code. */
async function handOver(socket: string, name: string, verbose: boolean): Promise<number> {
  let result: PickupResult;
  try {
    result = (await controlRequest(socket, 'pickup', { name }, PICKUP_TIMEOUT_MS)) as PickupResult;
  } catch (err) {
    if (err instanceof RelayNotRunning) {
      if (verbose) info('the relay is not running: it sends the message when it starts');
      return EX.OK;
    }
    if (err instanceof ControlError) {
      if (verbose) info(`the relay takes the message from maildrop/ within seconds (${err.message})`);
      return EX.OK;
    }
    throw err;
  }
  if (result.status === 'queued') {
    if (verbose) info(`queued as ${result.id}`);
    return EX.OK;
  }
  if (result.status === 'refused') {
    throw refusal(
      new SmtpError(
        result.code,
        result.enhanced,
        result.message,
        isRefusalReason(result.reason) ? result.reason : 'refused',
      ),
    );
  }
  if (verbose)
    info(result.status === 'deferred' ? `kept for later: ${result.message}` : 'taken by the relay');
  return EX.OK;
}

async function precheck(check: () => Promise<void>): Promise<void> {
  try {
    await check();
  } catch (err) {
    if (err instanceof SmtpError && !err.temporary) throw refusal(err);
    // A rate limit now is no reason to refuse: the relay keeps the file until it may send it.
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

function writeError(err: NodeJS.ErrnoException, dir: string): SendmailError {
  if (err.code === 'EACCES' || err.code === 'EPERM')
    return new SendmailError(
      `cannot write to ${dir}: permission denied (run as root or as the relay's user, or add this user to the group of ${dir}; see README, "Linux servers and scripts")`,
      EX.CANTCREAT,
    );
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT')
    return new SendmailError(`cannot write to ${dir}: the disk is full`, EX.TEMPFAIL);
  return new SendmailError(`cannot write to ${dir}: ${err.message}`, EX.IOERR);
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

/**
 * The relay's config as `start` finds it (-C, $SMARTHOST_CONFIG, ./smarthost.yml, then
 * /etc/smarthost/smarthost.yml: a cron job runs in $HOME). Without a file: an error, not the
 * built-in ./data, which would be a folder in the job's working directory no relay looks at.
 * A config that does not load whole (a secret file only the relay may read) still names the
 * spool, which is all sendmail needs.
 */
function findTarget(explicit?: string): Target {
  const file = findConfigFile(explicit);
  if (!file)
    throw new SendmailError(
      `no relay config found: use -C FILE or set SMARTHOST_CONFIG (looked for ./smarthost.yml and ${SYSTEM_CONFIG})`,
      EX.CONFIG,
    );
  try {
    const config = loadConfig(file);
    return {
      file,
      spoolDir: config.spool.dir,
      socket: config.control.socket,
      hostname: config.hostname,
      config,
    };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return lenientTarget(file, err);
  }
}

function lenientTarget(file: string, problem: ConfigError): Target {
  let doc;
  try {
    doc = parseDocument(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SendmailError(`cannot read the relay config ${file}: ${(err as Error).message}`, EX.CONFIG);
  }
  if (doc.errors.length) throw new SendmailError(problem.message.replace(/\n/g, ' '), EX.CONFIG);
  const spool = process.env.SMARTHOST_SPOOL_DIR || doc.getIn(['spool', 'dir']);
  const host = doc.get('hostname');
  return {
    file,
    spoolDir: path.resolve(path.dirname(file), typeof spool === 'string' && spool ? spool : './data'),
    socket: controlSocketPath(file),
    hostname: typeof host === 'string' && host ? host : hostnameOf(),
  };
}

/**
 * The maildrop folder, made when the relay never ran yet. Made by root, it is given to the
 * owner and group of the spool folder, so the relay can read and remove what is in it.
 */
async function prepareMaildrop(spoolDir: string): Promise<string> {
  const dir = maildropDir(spoolDir);
  if (existsSync(dir)) return dir;
  try {
    await mkdir(spoolDir, { recursive: true, mode: 0o750 });
    await mkdir(dir);
    await chmod(dir, MAILDROP_DIR_MODE);
    if (process.getuid?.() === 0) {
      const owner = await stat(spoolDir);
      await chown(dir, owner.uid, owner.gid);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw writeError(err as NodeJS.ErrnoException, dir);
  }
  return dir;
}
