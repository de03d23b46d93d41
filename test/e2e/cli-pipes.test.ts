// A command whose reader goes away (`smarthost --help | true`, `queue show ID | head`) stops
// quietly, with its own exit code, instead of dying with an EPIPE stack trace.
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RELAY_BIN, makeTempDirSync, removeTempDir } from '../helpers/relay.js';

/** Runs `smarthost ARGS | (reader that closes at once)` and returns the CLI's exit code and stderr. */
function intoClosedPipe(args: string, cwd: string): { code: string; stderr: string } {
  // The reader closes its end before node has started, so the CLI's first write meets EPIPE.
  const script = `node ${RELAY_BIN} ${args} 2>"$ERRFILE" | { exec 0<&-; }; echo "\${PIPESTATUS[0]}"; cat "$ERRFILE"`;
  const out = spawnSync('bash', ['-c', script], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: cwd, ERRFILE: `${cwd}/stderr.txt`, NO_COLOR: '1' },
  });
  const [code = '', ...rest] = out.stdout.split('\n');
  return { code, stderr: rest.join('\n') };
}

test('--help into a closed pipe: exit 0, no stack trace', async () => {
  const dir = makeTempDirSync();
  try {
    const result = intoClosedPipe('--help', dir);
    assert.equal(result.code, '0', result.stderr);
    assert.doesNotMatch(result.stderr, /EPIPE|at .*\(/);
  } finally {
    await removeTempDir(dir);
  }
});

test('queue list into a closed pipe: no stack trace', async () => {
  const dir = makeTempDirSync();
  try {
    const result = intoClosedPipe('queue list', dir);
    assert.equal(result.code, '0', result.stderr);
    assert.doesNotMatch(result.stderr, /EPIPE|Unhandled|at .*\(/);
  } finally {
    await removeTempDir(dir);
  }
});
