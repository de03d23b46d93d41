// Issue 4, acceptance 5: the queue commands against a real relay whose upstream is down, over
// the control socket while it runs and on the spool directly while it is stopped; and
// `upstream verify` against the ESP stand-in.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';
import { queuedIds, upstreamFor, waitUntil } from './relay-common.js';

interface Row {
  id: string;
  attempts: number;
  lastError?: string;
  recipients: string[];
}

describe('cli: queue commands with the upstream down, then back', () => {
  let esp: Esp;
  let relay: Relay;
  const ids: string[] = [];
  const cli = (...args: string[]) => runCli([...args, '-c', relay.configFile], { cwd: relay.dir });
  const list = async (): Promise<Row[]> => {
    const r = await cli('queue', 'list', '--json');
    assert.equal(r.code, 0, show(r));
    return JSON.parse(r.stdout) as Row[];
  };

  before(async () => {
    esp = await startEsp();
    await esp.stop(); // the outage: nothing listens on its port
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        // One retry an hour: only `queue retry` can make them go sooner.
        queue: { retry: ['1h'] },
      },
    });
    for (const n of [1, 2, 3]) {
      const sent = await sendMail({
        port: relay.port,
        from: 'app@corp.example',
        to: [`user${n}@example.com`],
        subject: `queued ${n}`,
      });
      assert.ok(sent.ok && sent.queueId, sent.response);
      ids.push(sent.queueId);
    }
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('queue list shows the waiting messages with their attempts and last error', async () => {
    const rows = await waitUntil('a first failed attempt of each', async () => {
      const r = await list();
      return r.length === 3 && r.every((row) => row.lastError) ? r : undefined;
    });
    // The upstream is down: that is not the messages' fault, so no step of their schedule is used.
    assert.ok(
      rows.every((r) => r.attempts === 0),
      'an outage counted as attempts of the messages',
    );
    assert.deepEqual(
      rows.map((r) => r.id),
      ids,
    );
    assert.deepEqual(rows[0]!.recipients, ['user1@example.com']);
    assert.ok(
      rows.every((r) => r.lastError),
      'no last error recorded',
    );

    // Over the control socket, which only its owner may use.
    const socket = await fs.stat(path.join(relay.spoolDir, 'control.sock'));
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);

    const table = await cli('queue', 'list');
    assert.equal(table.code, 0, show(table));
    assert.match(table.stdout, /^ID\s+AGE\s+FROM\s+RECIPIENTS\s+ATTEMPTS\s+NEXT\s+LAST ERROR$/m);
    for (const id of ids) assert.match(table.stdout, new RegExp(`^${id}\\s.*app@corp\\.example`, 'm'));

    const shown = await cli('queue', 'show', ids[0]!);
    assert.equal(shown.code, 0, show(shown));
    assert.match(shown.stdout, /Subject: queued 1/);
    assert.match(shown.stdout, /pending\s+user1@example\.com/);
  });

  test('queue delete removes one for good', async () => {
    const deleted = await cli('queue', 'delete', ids[2]!);
    assert.equal(deleted.code, 0, show(deleted));
    assert.match(deleted.stdout, new RegExp(`deleted 1: ${ids[2]}`));
    assert.deepEqual(await queuedIds(relay.spoolDir), ids.slice(0, 2));
    assert.ok(!(await fs.readdir(path.join(relay.spoolDir, 'queue'))).some((n) => n.startsWith(ids[2]!)));

    const again = await cli('queue', 'delete', ids[2]!);
    assert.equal(again.code, 1, show(again));
    assert.match(again.stderr, /not found/);

    const usage = await cli('queue', 'retry');
    assert.equal(usage.code, 2, show(usage));
  });

  test('with the relay stopped, the queue commands work on the spool directly', async () => {
    await relay.stop();
    const offline = await cli('queue', 'list', '--json');
    assert.equal(offline.code, 0, show(offline));
    assert.match(offline.stderr, /not running/);
    assert.deepEqual(
      (JSON.parse(offline.stdout) as Row[]).map((r) => r.id),
      ids.slice(0, 2),
    );
    await relay.restart();
  });

  test('upstream verify reports the outage, then what the ESP offers', async () => {
    const down = await cli('upstream', 'verify');
    assert.equal(down.code, 1, show(down));
    assert.match(down.stdout, /connect:\s+FAILED/);

    await esp.start();
    const up = await cli('upstream', 'verify');
    assert.equal(up.code, 0, show(up));
    assert.match(up.stdout, /TLS:\s+TLSv1\.[23] .*certificate trusted/);
    assert.match(up.stdout, /AUTH:\s+.*PLAIN/);
    assert.match(up.stdout, new RegExp(`login:\\s+ok as ${esp.user}`));
    assert.equal(esp.messages.length, 0, 'verify must not send mail');
  });

  test('queue retry --all, with the upstream back, delivers them at once', async () => {
    // The ESP is up (previous test); the next scheduled attempt is an hour away.
    const retried = await cli('queue', 'retry', '--all');
    assert.equal(retried.code, 0, show(retried));
    assert.match(retried.stdout, /retrying 2/);
    await esp.waitFor(2);
    const subjects = esp.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString('latin1'))?.[1]).sort();
    assert.deepEqual(subjects, ['queued 1', 'queued 2']);
    await waitUntil('an empty queue', async () => (await list()).length === 0);
    assert.equal(esp.messages.length, 2, 'the deleted message was delivered after all');

    const failed = await cli('queue', 'failed');
    assert.equal(failed.code, 0, show(failed));
    assert.match(failed.stdout, /no dead letters/);
  });
});
