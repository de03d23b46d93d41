// The spool's lock file (`<spool>/.lock`): two relays must never share one spool (each would
// deliver, retry and delete the other's messages), so the relay takes it before touching the
// spool and a second one refuses to start, naming the first.
//
// No fcntl/flock (Node has none; NFS ignores them anyway): the file is created with O_EXCL
// ('wx') and holds the owner's pid, host name and a random token. The owner touches it every
// LOCK_REFRESH_MS. A lock is stale, and taken over, when
//  - it names this host and a pid that is not running (a kill -9, a crash: the restart must not
//    wait), or this very pid (a container restarted with the same pid 1);
//  - it has not been touched for LOCK_STALE_MS (its owner is gone from another host sharing the
//    folder, or its pid was reused).
import { randomBytes } from 'node:crypto';
import { hostname as osHostname } from 'node:os';
import path from 'node:path';
import { mkdir, open, readFile, stat, unlink, utimes } from 'node:fs/promises';

export const LOCK_FILE = '.lock';
const LOCK_REFRESH_MS = 10_000;
export const LOCK_STALE_MS = 60_000;

interface LockContent {
  pid: number;
  hostname: string;
  token: string;
  started: string;
}

export class SpoolLockedError extends Error {
  constructor(
    readonly file: string,
    readonly owner: Partial<LockContent>,
  ) {
    const who = `pid ${owner.pid ?? '?'}${owner.hostname && owner.hostname !== osHostname() ? ` on host ${owner.hostname}` : ''}`;
    super(
      `the spool ${path.dirname(file)} is in use by another smarthost (${who}, lock file ${file}): ` +
        'two relays must never share one spool. Stop that relay first, or give this one its own spool.dir' +
        ` (a lock left by a relay that is gone is taken over after ${LOCK_STALE_MS / 1000} s).`,
    );
    this.name = 'SpoolLockedError';
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, owned by another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class SpoolLock {
  readonly file: string;
  private token: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly dir: string) {
    this.file = path.join(dir, LOCK_FILE);
  }

  /** Takes the lock, or throws SpoolLockedError naming the relay that holds it. */
  async acquire(): Promise<void> {
    // The spool's own folder, as Spool.init makes it (the lock comes first).
    await mkdir(this.dir, { recursive: true, mode: 0o750 });
    const token = randomBytes(8).toString('hex');
    const content: LockContent = {
      pid: process.pid,
      hostname: osHostname(),
      token,
      started: new Date().toISOString(),
    };
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(this.file, 'wx', 0o600);
        try {
          await handle.writeFile(`${JSON.stringify(content)}\n`);
        } finally {
          await handle.close();
        }
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 2) throw err;
      }
      const owner = await this.owner();
      if (owner && !this.stale(owner.content, owner.ageMs))
        throw new SpoolLockedError(this.file, owner.content);
      await unlink(this.file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    this.token = token;
    this.timer = setInterval(() => {
      const now = new Date();
      utimes(this.file, now, now).catch(() => undefined);
    }, LOCK_REFRESH_MS);
    this.timer.unref();
  }

  /** The lock's holder and how long since it last touched the file; undefined when there is none. */
  private async owner(): Promise<{ content: Partial<LockContent>; ageMs: number } | undefined> {
    let text: string;
    let mtime: number;
    try {
      [text, mtime] = await Promise.all([
        readFile(this.file, 'utf8'),
        stat(this.file).then((s) => s.mtimeMs),
      ]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let content: Partial<LockContent> = {};
    try {
      content = JSON.parse(text) as Partial<LockContent>;
    } catch {
      // Half written by a relay starting right now, or damaged: only its age decides.
    }
    return { content, ageMs: Date.now() - mtime };
  }

  private stale(owner: Partial<LockContent>, ageMs: number): boolean {
    if (ageMs > LOCK_STALE_MS) return true;
    if (owner.hostname !== osHostname() || typeof owner.pid !== 'number') return false;
    return owner.pid === process.pid || !running(owner.pid);
  }

  /** Gives the lock up (only if it is still ours). */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (!this.token) return;
    const token = this.token;
    this.token = undefined;
    const owner = await this.owner().catch(() => undefined);
    if (owner?.content.token === token) await unlink(this.file).catch(() => undefined);
  }
}
