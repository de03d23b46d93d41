// Retention (src/spool/retention.ts): old dead letters and captured messages go, by their
// envelope's mtime; recent ones, other files and everything with retention off stay.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { newQueueId } from '../../src/spool/entry.js';
import { RetentionSweeper, sweepFolder } from '../../src/spool/retention.js';
import { makeTempDir } from '../helpers/tmp.js';

const DAY = 86_400_000;

/** A message's two files in `dir`, both with an mtime `ageMs` ago. */
async function plant(
  dir: string,
  ageMs: number,
  files: ('json' | 'eml')[] = ['json', 'eml'],
): Promise<string> {
  const id = newQueueId(Date.now() - ageMs);
  const when = new Date(Date.now() - ageMs);
  for (const ext of files) {
    const file = path.join(dir, `${id}.${ext}`);
    await fs.writeFile(file, ext === 'json' ? '{}' : 'Subject: x\r\n\r\n');
    await fs.utimes(file, when, when);
  }
  return id;
}

const ls = async (dir: string) => (await fs.readdir(dir)).sort();

describe('retention sweep', () => {
  test('removes messages older than the retention, envelope and body; keeps the rest', async () => {
    const dir = await makeTempDir('retention');
    const old = await plant(dir, 31 * DAY);
    const recent = await plant(dir, 29 * DAY);
    const oldOrphan = await plant(dir, 40 * DAY, ['eml']);
    const newOrphan = await plant(dir, 60_000, ['eml']);
    await fs.writeFile(path.join(dir, 'README'), 'not ours');
    await fs.utimes(path.join(dir, 'README'), new Date(0), new Date(0));
    assert.equal(await sweepFolder(dir, 30 * DAY), 1);
    const left = await ls(dir);
    assert.deepEqual(left, ['README', `${newOrphan}.eml`, `${recent}.eml`, `${recent}.json`].sort());
    assert.ok(!left.some((n) => n.startsWith(old) || n.startsWith(oldOrphan)));
    assert.equal(await sweepFolder(dir, 0), 0, 'retention off removed something');
    assert.equal(await sweepFolder(path.join(dir, 'missing'), DAY), 0);
  });

  test('the sweeper uses the config of the moment; off keeps everything', async () => {
    const root = await makeTempDir('retention');
    const failedDir = path.join(root, 'failed');
    const outboxDir = path.join(root, 'outbox');
    await fs.mkdir(failedDir);
    await fs.mkdir(outboxDir);
    await plant(failedDir, 10 * DAY);
    await plant(outboxDir, 10 * DAY);
    let config = parseConfig(
      { retention: { failed: 'off', outbox: 0 } },
      { env: {}, baseDir: root, source: 't' },
    );
    assert.deepEqual(config.retention, { failed: 0, outbox: 0 });
    const sweeper = new RetentionSweeper({ failedDir, outboxDir, config: () => config, log: silentLogger() });
    assert.deepEqual(await sweeper.sweep(), { failed: 0, outbox: 0 });
    config = parseConfig({}, { env: {}, baseDir: root, source: 't' });
    assert.deepEqual(config.retention, { failed: 30 * DAY, outbox: 7 * DAY });
    assert.deepEqual(await sweeper.sweep(), { failed: 0, outbox: 1 });
    assert.deepEqual(await ls(outboxDir), []);
    assert.equal((await ls(failedDir)).length, 2);
    await sweeper.stop();
  });

  test('a bad retention is refused with the allowed forms', () => {
    assert.throws(
      () => parseConfig({ retention: { failed: 'a month' } }, { env: {}, baseDir: '/tmp', source: 't' }),
      /retention\.failed: got "a month": expected a duration such as 7d or 30d, or off/,
    );
  });
});
