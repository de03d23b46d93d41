// The spool's lock file: a live relay's lock refuses a second one (naming its pid); a lock left
// by a dead process on this host (kill -9), by this very pid (a container restarted as pid 1)
// or untouched for a minute (a host gone) is taken over; release removes only our own lock.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LOCK_STALE_MS, SpoolLock, SpoolLockedError } from '../../src/spool/lock.js';
import { makeTempDir } from '../helpers/tmp.js';

async function lockFile(dir: string, content: object, ageMs = 0): Promise<string> {
  const file = path.join(dir, '.lock');
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(file, JSON.stringify(content));
  if (ageMs) {
    const then = new Date(Date.now() - ageMs);
    await fs.utimes(file, then, then);
  }
  return file;
}

/** A process that is running for the length of the test (and a pid that is surely alive). */
function sleeper() {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  return child;
}

test('a live owner on this host: refused, with its pid in the message; the file is left alone', async (t) => {
  const dir = path.join(await makeTempDir('lock'), 'data');
  const owner = sleeper();
  t.after(() => owner.kill('SIGKILL'));
  const file = await lockFile(dir, { pid: owner.pid, hostname: hostname(), token: 'x' });
  await assert.rejects(new SpoolLock(dir).acquire(), (err: Error) => {
    assert.ok(err instanceof SpoolLockedError);
    assert.match(err.message, new RegExp(`in use by another smarthost \\(pid ${owner.pid}, lock file `));
    return true;
  });
  assert.match(await fs.readFile(file, 'utf8'), /"token":"x"/);
});

test('another host, touched recently: refused (it may be alive); untouched for a minute: taken over', async () => {
  const dir = path.join(await makeTempDir('lock'), 'data');
  await lockFile(dir, { pid: 4242, hostname: 'other-host.example', token: 'x' });
  await assert.rejects(new SpoolLock(dir).acquire(), /pid 4242 on host other-host\.example/);
  await lockFile(dir, { pid: 4242, hostname: 'other-host.example', token: 'x' }, LOCK_STALE_MS + 5_000);
  const lock = new SpoolLock(dir);
  await lock.acquire();
  await lock.release();
});

test('a dead pid (kill -9), or this very pid: taken over at once', async () => {
  const dir = path.join(await makeTempDir('lock'), 'data');
  const gone = sleeper();
  const pid = gone.pid!;
  await new Promise((resolve) => {
    gone.once('exit', resolve);
    gone.kill('SIGKILL');
  });
  await lockFile(dir, { pid, hostname: hostname(), token: 'x' });
  const first = new SpoolLock(dir);
  await first.acquire();
  const content = JSON.parse(await fs.readFile(first.file, 'utf8')) as { pid: number };
  assert.equal(content.pid, process.pid);
  // Held by this process (the same pid after a container restart): taken over too.
  const second = new SpoolLock(dir);
  await second.acquire();
  // The first no longer owns the file: its release leaves the second's lock in place.
  await first.release();
  await fs.access(second.file);
  await second.release();
  await assert.rejects(fs.access(second.file), { code: 'ENOENT' });
});

test('a damaged (half-written) lock file: only its age decides', async () => {
  const dir = path.join(await makeTempDir('lock'), 'data');
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, '.lock'), '{"pid": 12');
  await assert.rejects(new SpoolLock(dir).acquire(), SpoolLockedError);
  const old = new Date(Date.now() - LOCK_STALE_MS - 5_000);
  await fs.utimes(path.join(dir, '.lock'), old, old);
  const lock = new SpoolLock(dir);
  await lock.acquire();
  await lock.release();
});
