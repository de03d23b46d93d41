// What a crash can leave in the spool, found and put right at start (Spool.init), before the
// queue resumes: temp files, bodies apart from their envelopes, moves and splits cut short. None
// of what is removed here was ever acknowledged; nothing acknowledged is removed.
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { fileExists, fsyncDir } from './fsync.js';
import { trimToBody } from './one-file.js';
import type { Spool } from './spool.js';

export interface Swept {
  /** Leftovers of tmp/ (a retry's new state not yet renamed over the old). */
  tmpFiles: number;
  /** Bodies without their envelope: a reception cut short in an older version's layout. */
  orphanBodies: number;
  /** Moves to failed/ cut short after the body went. */
  interruptedMoves: number;
  /** Holds and releases cut short (hold.ts). */
  reunited: number;
  /** Splits of a one-file message cut short (one-file.ts). */
  splitsFinished: number;
}

export async function sweepCrashLeftovers(spool: Spool): Promise<Swept> {
  // Before the sweep below: a body a crash left apart from its envelope is no orphan.
  const { reunited } = await spool.held.init();
  let tmpFiles = 0;
  for (const name of await readdir(spool.tmpDir)) {
    await unlink(path.join(spool.tmpDir, name)).catch(() => undefined);
    tmpFiles++;
  }
  const names = new Set(await readdir(spool.queueDir));
  const splitsFinished = await finishSplits(spool, names);
  let orphanBodies = 0;
  let interruptedMoves = 0;
  for (const name of names) {
    if (name.endsWith('.eml') && !names.has(name.replace(/\.eml$/, '.json'))) {
      await unlink(path.join(spool.queueDir, name)).catch(() => undefined);
      orphanBodies++;
    } else if (name.endsWith('.json') && !names.has(name.replace(/\.json$/, '.eml'))) {
      // An envelope without its body: a move to failed/ was cut short after the body went
      // (moveToFailed writes the dead letter first). Finish it, or the message would be
      // retried from a body that is not there until it expired, and bounced twice.
      const id = name.slice(0, -5);
      if (await fileExists(spool.failed.bodyPath(id))) {
        await unlink(path.join(spool.queueDir, name)).catch(() => undefined);
        interruptedMoves++;
      }
    }
  }
  // A .msg alone is a new message, or a reception cut short: the queue reads each when it
  // comes to it, and Spool.sweepIfIncomplete removes those without a whole envelope.
  return { tmpFiles, orphanBodies, interruptedMoves, reunited, splitsFinished };
}

/** A .msg beside a .json: a split a crash cut short. Finishes each, and updates `names`. */
async function finishSplits(spool: Spool, names: Set<string>): Promise<number> {
  let finished = 0;
  for (const name of [...names]) {
    if (!name.endsWith('.msg')) continue;
    const id = name.slice(0, -4);
    if (!names.has(`${id}.json`)) continue;
    const entry = await spool.read(id);
    if (!entry) continue; // a torn .json: Spool.sweepIfIncomplete removes the message
    await trimToBody(spool.msgPath(id), spool.bodyPath(id), entry.size);
    names.delete(name);
    names.add(`${id}.eml`);
    finished++;
  }
  if (finished) await fsyncDir(spool.queueDir);
  return finished;
}
