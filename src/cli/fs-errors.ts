// A file-system error as one line an admin can act on: what could not be done, where, as which
// user, who owns the place and with what mode, and what to do about it. The normal container
// case is a config folder mounted read-only: `smarthost allowlist add` then says so instead of
// printing a stack trace.
import { statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The error codes that are about permissions or the file system, not a bug. */
const FS_CODES = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOSPC', 'EDQUOT', 'ENOENT', 'ENOTDIR', 'EISDIR']);

const WHY: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'the file system is read-only',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  ENOENT: 'no such file or folder',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'it is a folder',
};

const VERB: Record<string, string> = {
  mkdir: 'create the folder',
  open: 'open',
  rename: 'rename',
  unlink: 'remove',
  rmdir: 'remove',
  scandir: 'list the folder',
  opendir: 'list the folder',
  chmod: 'change the mode of',
  fsync: 'sync',
  copyfile: 'copy',
  access: 'access',
  stat: 'look at',
};

/** "create the folder", "open", ...: what the failed system call was trying to do. */
export function verbOf(err: NodeJS.ErrnoException): string {
  return VERB[err.syscall ?? ''] ?? 'use';
}

export function isFsError(err: unknown): err is NodeJS.ErrnoException & { path: string } {
  const e = err as NodeJS.ErrnoException;
  return Boolean(e && typeof e.code === 'string' && FS_CODES.has(e.code) && typeof e.path === 'string');
}

/** "uid 65534 (nobody)": the user this process runs as. */
export function whoAmI(): string {
  const uid = process.getuid?.();
  if (uid === undefined) return 'this user';
  let name = '';
  try {
    name = os.userInfo().username;
  } catch {
    // a uid with no passwd entry (common in containers)
  }
  return name ? `uid ${uid} (${name})` : `uid ${uid}`;
}

/** "owned by uid 0, mode 0755", for the path or, when it does not exist, its nearest folder. */
function ownerOf(file: string): string {
  for (let p = file; ; p = path.dirname(p)) {
    try {
      const info = statSync(p);
      const what = p === file ? '' : `${p} is `;
      return `${what}owned by uid ${info.uid}, mode 0${(info.mode & 0o777).toString(8)}`;
    } catch {
      if (p === path.dirname(p)) return '';
    }
  }
}

/**
 * "cannot write /etc/smarthost/smarthost.yml: permission denied (running as uid 65534
 * (nobody); /etc/smarthost is owned by uid 0, mode 0755). <advice>"
 */
export function describeFsError(
  err: NodeJS.ErrnoException,
  what: string,
  target = err.path ?? '',
  advice = '',
): string {
  const code = err.code ?? '';
  const why = WHY[code] ?? err.message;
  const detail =
    code === 'EACCES' || code === 'EPERM'
      ? ` (running as ${whoAmI()}; ${ownerOf(target) || 'unknown owner'})`
      : '';
  return `cannot ${what} ${target}: ${why}${detail}.${advice ? ` ${advice}` : ''}`;
}

/** What to do when the config file or its folder cannot be written. */
export function configWriteAdvice(err: NodeJS.ErrnoException): string {
  const readOnly = err.code === 'EROFS' || err.code === 'EACCES' || err.code === 'EPERM';
  if (!readOnly) return 'Nothing was changed.';
  return (
    'Nothing was changed. In a container the config is usually mounted read-only: put it on a writable ' +
    'volume to edit it with the CLI (README, "The config in a container"), or edit it where it comes from ' +
    'and run `smarthost reload`; otherwise run this command as the user who owns the file.'
  );
}

/** What to do when the config file cannot be read. */
export const CONFIG_READ_ADVICE =
  'Make it readable by the user that runs smarthost, or run this command as that user ' +
  '(e.g. sudo -u smarthost smarthost …).';

/** What to do when the spool cannot be created or written at start. */
export function spoolAdvice(spoolDir: string): string {
  const uid = process.getuid?.() ?? 'USER';
  return (
    `The spool (${spoolDir}) must be writable by the user the relay runs as: give it the folder ` +
    `(chown -R ${uid} ${spoolDir}; in a container, a volume writable by the image's user), ` +
    'or set spool.dir to a folder it may write.'
  );
}
