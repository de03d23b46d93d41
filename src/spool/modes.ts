// The spool holds mail (and the self-signed certificate's key): its folders are the relay's
// alone. New folders are made 0700 and new files 0600; a folder an earlier version (or an
// admin) left looser is tightened when the relay starts, and the log says so.
import { chmod, mkdir, stat } from 'node:fs/promises';

/** The mode of every folder in the spool (queue/, tmp/, failed/, outbox/, tls/). */
export const PRIVATE_DIR_MODE = 0o700;
/** The mode of every file the spool writes (bodies, envelopes, dead letters, the outbox). */
export const PRIVATE_FILE_MODE = 0o600;

export interface Tightened {
  dir: string;
  /** The mode found, e.g. "0750". */
  was: string;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

/** Creates `dir` 0700 when missing (and its parents as needed). */
export async function makePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/**
 * Takes group and other access away from each folder of `dirs` that exists and has any; a
 * missing folder is skipped (it is made 0700 when first needed). Returns what was changed.
 */
export async function tightenDirs(dirs: string[]): Promise<Tightened[]> {
  const tightened: Tightened[] = [];
  for (const dir of dirs) {
    let mode: number;
    try {
      const info = await stat(dir);
      if (!info.isDirectory()) continue;
      mode = info.mode;
    } catch {
      continue;
    }
    if ((mode & 0o077) === 0) continue;
    await chmod(dir, PRIVATE_DIR_MODE);
    tightened.push({ dir, was: octal(mode) });
  }
  return tightened;
}
