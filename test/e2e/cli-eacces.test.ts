// Issue 14, CLI hygiene: a config or spool the command may not touch (a read-only config mount
// in a container, a spool owned by another user) gives one line saying what, where, as which
// user and what to do; exit 1, no stack trace. Run as uid 65534 (nobody) when the tests run as
// root (root may write anything), else with the modes taken away from this user.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { freePort, makeTempDir } from '../helpers/relay.js';
import { runCli, show, type CliResult } from './cli-common.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** A folder with a config this test's CLI may read but not write (folder or file). */
async function setup(mode: { dir: number; file: number }): Promise<{ dir: string; file: string }> {
  const dir = await makeTempDir('eacces');
  const file = path.join(dir, 'smarthost.yml');
  const port = await freePort();
  await fs.writeFile(file, `listen:\n  - port: ${port}\nspool:\n  dir: ./data\n`);
  await fs.chmod(file, mode.file);
  await fs.chmod(dir, mode.dir);
  return { dir, file };
}

/** As root: the files stay root's and the CLI runs as nobody. Else: the modes bind this user. */
const modes = (forOthers: number, forOwner: number) => (isRoot ? forOthers : forOwner);

function cli(args: string[], cwd: string, input?: string): Promise<CliResult> {
  return runCli(args, { cwd, input, ...(isRoot ? { uid: NOBODY, gid: NOBODY } : {}) });
}

function assertOneLine(result: CliResult, pattern: RegExp): void {
  assert.equal(result.code, 1, show(result));
  assert.match(result.stderr, pattern);
  assert.doesNotMatch(result.stderr, /\n\s+at |Error:/, `a stack trace:\n${result.stderr}`);
  assert.equal(result.stderr.trim().split('\n').length, 1, `more than one line:\n${result.stderr}`);
}

describe('filesystem errors as one actionable line', { skip: process.platform === 'win32' }, () => {
  test('allowlist add and user add with a read-only config folder', async () => {
    // Readable by all, writable by none but root (as root: nobody reads, cannot write).
    const { dir, file } = await setup({ dir: modes(0o755, 0o555), file: modes(0o644, 0o444) });
    const before = await fs.readFile(file, 'utf8');
    const who = isRoot ? /running as uid 65534/ : /running as uid \d+/;
    const added = await cli(['allowlist', 'add', '10.1.2.0/24', '--name', 'lab', '-c', file], dir);
    assertOneLine(added, /^smarthost: cannot write the config \(smarthost\.yml\) in .*: permission denied/);
    assert.match(added.stderr, who);
    assert.match(added.stderr, /read-only: put it on a writable volume/);
    const user = await cli(
      ['user', 'add', 'crm', '--password-stdin', '-c', file],
      dir,
      'a long password 123',
    );
    assertOneLine(user, /cannot write the config .*permission denied/);
    await fs.chmod(dir, 0o755);
    assert.equal(await fs.readFile(file, 'utf8'), before, 'the config changed');
  });

  test('check-config and start with an unreadable config', async () => {
    const { dir, file } = await setup({ dir: 0o755, file: modes(0o600, 0o000) });
    for (const command of ['check-config', 'start']) {
      const result = await cli([command, '-c', file], dir);
      assertOneLine(result, /^smarthost: cannot read the config file .*smarthost\.yml: permission denied/);
      assert.match(result.stderr, /Make it readable by the user that runs smarthost/);
    }
  });

  test('start with a spool it cannot create', async () => {
    const { dir, file } = await setup({ dir: modes(0o755, 0o555), file: 0o644 });
    const result = await cli(['start', '-c', file], dir);
    assert.equal(result.code, 1, show(result));
    const output = result.stdout + result.stderr;
    assert.match(output, /"event":"start_failed"/);
    assert.match(output, /could not start: cannot create the folder .*data: permission denied/);
    assert.match(output, /The spool .* must be writable by the user the relay runs as/);
    assert.doesNotMatch(output, /ports below 1024|\n\s+at /);
  });
});
