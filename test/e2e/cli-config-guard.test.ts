// Issue 14: an allowlist entry written by hand that makes the relay an open relay (0.0.0.0/0,
// ::/0, a public range without its acknowledgement) fails `check-config` and `start`, saying why.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { makeTempDir } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';

async function configWith(allowlist: string): Promise<{ dir: string; file: string }> {
  const dir = await makeTempDir('guard');
  const file = path.join(dir, 'smarthost.yml');
  await fs.writeFile(file, `listen:\n  - port: 2599\nspool:\n  dir: ./data\nallowlist:\n${allowlist}`);
  return { dir, file };
}

describe('the allowlist guard on load', () => {
  for (const cidr of ['0.0.0.0/0', '::/0']) {
    test(`check-config and start refuse a hand-written ${cidr}`, async () => {
      const { dir, file } = await configWith(
        `  - cidr: ${cidr}\n    name: everyone\n    publicRange: true\n`,
      );
      const checked = await runCli(['check-config', '-c', file], { cwd: dir });
      assert.equal(checked.code, 1, show(checked));
      assert.match(
        checked.stderr,
        /allowlist\.0\.cidr: .*5\.7\.1 open relay risk: .* is every IPv[46] address/,
      );
      assert.match(checked.stderr, /OPEN RELAY/);
      assert.doesNotMatch(checked.stderr, /\n\s+at /, 'a stack trace');

      const started = await runCli(['start', '-c', file], { cwd: dir });
      assert.equal(started.code, 1, show(started));
      assert.match(started.stderr, /5\.7\.1 open relay risk/);
      // Refused before anything was set up.
      await assert.rejects(fs.stat(path.join(dir, 'data')), /ENOENT/);
    });
  }

  test('a public range passes only with publicRange: true on its entry', async () => {
    const bare = await configWith('  - cidr: 198.51.100.0/24\n    name: dmz\n');
    const refused = await runCli(['check-config', '-q', '-c', bare.file], { cwd: bare.dir });
    assert.equal(refused.code, 1, show(refused));
    assert.match(refused.stderr, /public internet addresses.*publicRange: true/);

    const acked = await configWith('  - cidr: 198.51.100.0/24\n    name: dmz\n    publicRange: true\n');
    const passed = await runCli(['check-config', '-q', '-c', acked.file], { cwd: acked.dir });
    assert.equal(passed.code, 0, show(passed));
  });
});
