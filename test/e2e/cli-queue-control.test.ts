// Issue 14, queue control: hold and release (a held message is not delivered, even by `queue
// retry --all` with the ESP up, nor resumed by a restart; released, it is), a bulk change by
// filter that needs --yes, and `queue show --body`, all through the real relay and CLI.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { RELAY_BIN, startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';
import { upstreamFor, waitUntil } from './relay-common.js';

interface Row {
  id: string;
  state: string;
  lastError?: string;
}

const subjectOf = (raw: Buffer) => /^Subject: (.*)$/m.exec(raw.toString('latin1'))?.[1];

describe('cli: queue hold, release, filters and --body', () => {
  let esp: Esp;
  let relay: Relay;
  const ids: string[] = [];
  const cli = (...args: string[]) => runCli([...args, '-c', relay.configFile], { cwd: relay.dir });
  const list = async (...filters: string[]): Promise<Row[]> => {
    const r = await cli('queue', 'list', '--json', ...filters);
    assert.equal(r.code, 0, show(r));
    return JSON.parse(r.stdout) as Row[];
  };

  before(async () => {
    esp = await startEsp();
    await esp.stop(); // down: the messages wait in the queue
    relay = await startRelay({ config: { upstream: upstreamFor(esp), queue: { retry: ['1h'] } } });
    for (const n of [1, 2, 3]) {
      const sent = await sendMail({
        port: relay.port,
        from: 'app@corp.example',
        to: [`user${n}@example.com`],
        subject: `held ${n}`,
        text: `body of message ${n}\r\n`.repeat(50),
      });
      assert.ok(sent.ok && sent.queueId, sent.response);
      ids.push(sent.queueId);
    }
    await waitUntil('a first failed attempt of each', async () => {
      const rows = await list();
      return rows.length === 3 && rows.every((r) => r.lastError);
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('hold by id; a change by filter without --yes only counts; with --yes it is done', async () => {
    const held = await cli('queue', 'hold', ids[0]!);
    assert.equal(held.code, 0, show(held));
    assert.match(held.stdout, new RegExp(`held 1: ${ids[0]}`));
    assert.deepEqual(
      (await list('--state', 'held')).map((r) => r.id),
      [ids[0]],
    );
    const table = await cli('queue', 'list');
    assert.match(table.stdout, new RegExp(`^${ids[0]}\\s.*\\sheld\\s`, 'm'));
    assert.match(table.stdout, /3 messages \(1 on hold\)/);

    const counted = await cli('queue', 'delete', '--to', 'USER3@*');
    assert.equal(counted.code, 1, show(counted));
    assert.match(counted.stdout, new RegExp(`1 message would be deleted: ${ids[2]}`));
    assert.match(counted.stderr, /nothing changed: add --yes/);
    assert.equal((await list()).length, 3, 'changed without --yes');
    const all = await cli('queue', 'release', '--all');
    assert.equal(all.code, 1, show(all));
    assert.equal((await list('--state', 'held')).length, 1);

    const deleted = await cli('queue', 'delete', '--to', 'USER3@*', '--yes');
    assert.equal(deleted.code, 0, show(deleted));
    assert.match(deleted.stdout, new RegExp(`deleted 1: ${ids[2]}`));
    assert.deepEqual(
      (await list()).map((r) => [r.id, r.state]),
      [
        [ids[1], 'deferred'],
        [ids[0], 'held'],
      ],
    );
    const none = await cli('queue', 'list', '--from', 'nobody@*');
    assert.match(none.stdout, /no message matches/);
    const bad = await cli('queue', 'list', '--state', 'sleeping');
    assert.equal(bad.code, 2, show(bad));
  });

  test('queue show --body prints the stored message; --headers its header section', async () => {
    const stored = await fs.readFile(path.join(relay.spoolDir, 'hold', `${ids[0]}.eml`), 'latin1');
    const body = await cli('queue', 'show', ids[0]!, '--body');
    assert.equal(body.code, 0, show(body));
    assert.equal(body.stdout, stored);
    assert.match(body.stdout, /^Subject: held 1\r$/m);
    assert.match(body.stdout, /body of message 1/);

    const headers = await cli('queue', 'show', ids[0]!, '--headers');
    assert.equal(headers.code, 0, show(headers));
    assert.match(headers.stdout, /^Subject: held 1$/m);
    assert.doesNotMatch(headers.stdout, /body of message/);

    const summary = await cli('queue', 'show', ids[0]!);
    assert.match(summary.stdout, /\(on hold\)/);

    // Into a reader that stops early: the rest is not wanted, and no stack trace.
    const head = spawnSync(
      'bash',
      [
        '-c',
        `node ${RELAY_BIN} queue show ${ids[0]} --body -c ${relay.configFile} | head -c 20; echo; echo "exit \${PIPESTATUS[0]}"`,
      ],
      { cwd: relay.dir, encoding: 'utf8', env: { PATH: process.env.PATH ?? '', NO_COLOR: '1' } },
    );
    assert.match(head.stdout, /exit 0/, head.stderr);
    assert.doesNotMatch(head.stderr, /EPIPE|at .*\(/);
  });

  test('with the ESP up, retry --all delivers all but the held one, which a restart does not resume', async () => {
    await esp.start();
    const retried = await cli('queue', 'retry', '--all');
    assert.equal(retried.code, 0, show(retried));
    assert.match(retried.stdout, /retrying 1/);
    await esp.waitFor(1);
    await waitUntil('the delivered one gone', async () => (await list()).length === 1);
    const byId = await cli('queue', 'retry', ids[0]!);
    assert.equal(byId.code, 1, show(byId));
    assert.match(byId.stderr, /on hold/);

    await relay.restart();
    const started = await relay.waitForOutput(/"event":"started".*/);
    assert.match(started[0], /"queued":0/, 'the held message was resumed by the restart');
    assert.deepEqual(
      (await list()).map((r) => [r.id, r.state]),
      [[ids[0], 'held']],
    );
    assert.deepEqual(
      esp.messages.map((m) => subjectOf(m.raw)),
      ['held 2'],
    );
  });

  test('release: back in the queue and delivered at once', async () => {
    const released = await cli('queue', 'release', ids[0]!);
    assert.equal(released.code, 0, show(released));
    assert.match(released.stdout, new RegExp(`released 1: ${ids[0]}`));
    await esp.waitFor(2);
    assert.deepEqual(
      esp.messages.map((m) => subjectOf(m.raw)),
      ['held 2', 'held 1'],
    );
    await waitUntil('an empty queue', async () => (await list()).length === 0);
    assert.deepEqual(await fs.readdir(path.join(relay.spoolDir, 'hold')), []);
  });
});
