// Acceptance 2 of issue 5: `smarthost stats` on a running relay names the source that sent the
// most, and shows who was refused and who hit a rate limit.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { RELAY_BIN, startRelay, type Relay } from '../helpers/relay.js';

interface Row {
  source: string;
  unknown: boolean;
  messages: number;
  refused: number;
  rateLimited: number;
  reasons: Record<string, number>;
}

/** Runs `smarthost <args>` against the relay's config; resolves exit code and output. */
function cli(relay: Relay, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    for (const key of Object.keys(env)) if (key.startsWith('SMARTHOST_')) delete env[key];
    const child = spawn(process.execPath, [RELAY_BIN, ...args, '-c', relay.configFile], {
      cwd: relay.dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('ops: smarthost stats', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({
      config: {
        allowlist: [
          { cidr: '127.0.0.1/32', name: 'printers' },
          { cidr: '127.0.0.3/32', name: 'busy-scanner' },
          { cidr: '127.0.0.4/32', name: 'monitoring', rateLimit: '2/hour' },
        ],
      },
    });
    const send = (localAddress: string) =>
      sendMail({ port: relay.port, localAddress, from: 'device@corp.example', to: ['ops@example.com'] });
    const expect = async (localAddress: string, n: number, ok: boolean) => {
      for (let i = 0; i < n; i++) {
        const r = await send(localAddress);
        assert.equal(r.ok, ok, `${localAddress} #${i}: ${r.response}`);
      }
    };
    await expect('127.0.0.3', 6, true); // the one that sends the most
    await expect('127.0.0.1', 2, true);
    await expect('127.0.0.4', 2, true);
    await expect('127.0.0.4', 3, false); // over its 2/hour: rate-limited
    await expect('127.0.0.2', 4, false); // not in the allowlist
  });

  after(async () => {
    await relay?.stop();
  });

  test('names the top sender first, with the refused and the rate-limited', async () => {
    const { code, stdout, stderr } = await cli(relay, ['stats']);
    assert.equal(code, 0, stderr);
    const sections = stdout.split(/\n\n/);
    const messages = sections.find((s) => s.startsWith('Top sources by messages accepted:'));
    assert.ok(messages, stdout);
    const firstRow = messages.split('\n')[2] ?? '';
    assert.match(firstRow, /^busy-scanner\s+6\s/, `the top sender comes first:\n${stdout}`);
    assert.match(stdout, /^Traffic of the last 1h .*: 10 message\(s\) accepted/m);
    const refusals = sections.find((s) => s.startsWith('Top sources by refusals:')) ?? '';
    assert.match(
      refusals.split('\n')[2] ?? '',
      /^127\.0\.0\.2 \(no source: not allowed\)\s+4\s+not_allowed 4/,
    );
    const limited = sections.find((s) => s.startsWith('Top sources by rate-limit hits:')) ?? '';
    assert.match(limited.split('\n')[2] ?? '', /^monitoring\s+3\s+2$/, stdout);
  });

  test('--json gives the same report for scripts', async () => {
    const { code, stdout, stderr } = await cli(relay, ['stats', '--since', '24h', '--json']);
    assert.equal(code, 0, stderr);
    const report = JSON.parse(stdout) as {
      minutes: number;
      totals: { messages: number; recipients: number; bytes: number; refused: number; rateLimited: number };
      top: { messages: Row[]; refusals: Row[]; rateLimited: Row[] };
    };
    assert.equal(report.minutes, 1440);
    assert.deepEqual(
      report.top.messages.map((r) => [r.source, r.messages]),
      [
        ['busy-scanner', 6],
        ['monitoring', 2],
        ['printers', 2],
      ],
    );
    const { bytes, ...counts } = report.totals;
    assert.deepEqual(counts, { messages: 10, recipients: 10, refused: 7, rateLimited: 3 });
    assert.ok(bytes > 0);
    assert.equal(report.top.refusals[0]?.source, '127.0.0.2');
    assert.equal(report.top.refusals[0]?.unknown, true);
    assert.deepEqual(
      report.top.rateLimited.map((r) => [r.source, r.rateLimited]),
      [['monitoring', 3]],
    );
  });

  test('a bad --since is a usage error (exit 2)', async () => {
    const { code, stderr } = await cli(relay, ['stats', '--since', 'yesterday']);
    assert.equal(code, 2);
    assert.match(stderr, /--since/);
  });
});
