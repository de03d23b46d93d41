// How `sendmail` hands a message over, whichever way it came (its standard input, or an SMTP
// conversation with -bs): the relay's config found as `start` finds it, the message written
// durably into <spool>/maildrop/, then the running relay asked to take it now (`pickup`).
// A relay that is not running, or a socket this user may not use, leaves the file where the
// relay takes it up when it starts, or within seconds: the message is safe either way.
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, stat } from 'node:fs/promises';
import { hostname as hostnameOf } from 'node:os';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError, findConfigFile, loadConfig, SYSTEM_CONFIG, type Config } from '../config/load.js';
import { controlRequest, controlSocketPath, RelayNotRunning } from '../control/client.js';
import { isRefusalReason } from '../events.js';
import type { DropEnvelope } from '../maildrop/format.js';
import { maildropDir, MAILDROP_DIR_MODE, type PickupResult } from '../maildrop/pickup.js';
import { writeDrop, type WrittenDrop } from '../maildrop/writer.js';
import type { PolicyEngine } from '../policy/engine.js';
import { SmtpError } from '../smtp/errors.js';
import { EX, SendmailError } from './sendmail-args.js';

/** How long sendmail waits for the running relay's answer before leaving it the file. */
const PICKUP_TIMEOUT_MS = 30_000;

export interface Target {
  file: string;
  spoolDir: string;
  socket: string;
  hostname: string;
  /** The whole config when it loads (for the checks before writing), else undefined. */
  config?: Config;
}

/** What became of a message once written: queued by the relay, or kept for it in maildrop/. */
export type Handed = { status: 'queued'; id: string } | { status: 'kept'; why: string };

/**
 * Writes a message (`parts`: its header section, then its body) into maildrop/, the relay's
 * size limit checked before it is committed. Throws the SmtpError of that limit, or a
 * SendmailError when the file cannot be written.
 */
export async function writeToMaildrop(
  target: Target,
  policy: PolicyEngine | undefined,
  envelope: DropEnvelope,
  parts: AsyncIterable<Buffer>,
): Promise<WrittenDrop> {
  const dir = await prepareMaildrop(target.spoolDir);
  try {
    return await writeDrop(dir, envelope, parts, (size) => {
      if (!policy?.sources.local) return;
      const limit = policy.messageSizeLimit(policy.sources.local, envelope.from);
      if (size > limit) throw policy.sizeError(policy.sources.local, limit, envelope.from);
    });
  } catch (err) {
    if (err instanceof SmtpError || err instanceof SendmailError) throw err;
    throw writeError(err as NodeJS.ErrnoException, dir);
  }
}

/**
 * The relay's permanent refusal of what `check` tests (the sendmail policy, checked here first
 * so that a refusal reaches the caller, not a file that waits in maildrop for nothing), if any.
 * A temporary one (a rate limit) is no reason to refuse: the relay keeps the file until it may
 * send it; anything else is left for the relay's own check at pickup.
 */
export async function permanentRefusal(check: () => Promise<void>): Promise<SmtpError | undefined> {
  try {
    await check();
  } catch (err) {
    if (err instanceof SmtpError && !err.temporary) return err;
  }
  return undefined;
}

/** Asks the running relay to take a written message now. Throws its refusal as an SmtpError. */
export async function askRelay(socket: string, name: string): Promise<Handed> {
  let result: PickupResult;
  try {
    result = (await controlRequest(socket, 'pickup', { name }, PICKUP_TIMEOUT_MS)) as PickupResult;
  } catch (err) {
    if (err instanceof RelayNotRunning)
      return { status: 'kept', why: 'the relay is not running: it sends the message when it starts' };
    // The message is already safe in maildrop/, so whatever went wrong in asking, the relay
    // still takes it: saying anything but "kept" would make a client send it a second time.
    const why = err instanceof Error ? err.message : String(err);
    return { status: 'kept', why: `the relay takes the message from maildrop/ within seconds (${why})` };
  }
  if (result.status === 'queued') return result;
  if (result.status === 'refused') {
    throw new SmtpError(
      result.code,
      result.enhanced,
      result.message,
      isRefusalReason(result.reason) ? result.reason : 'refused',
    );
  }
  return {
    status: 'kept',
    why: result.status === 'deferred' ? `kept for later: ${result.message}` : 'taken by the relay',
  };
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

/**
 * The relay's config as `start` finds it (-C, $SMARTHOST_CONFIG, ./smarthost.yml, then
 * /etc/smarthost/smarthost.yml: a cron job runs in $HOME). Without a file: an error, not the
 * built-in ./data, which would be a folder in the job's working directory no relay looks at.
 * A config that does not load whole (a secret file only the relay may read) still names the
 * spool, which is all sendmail needs.
 */
export function findTarget(explicit?: string): Target {
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
