// The delivery thread (src/delivery/courier-thread.ts): a real worker delivering to the ESP
// stand-in. What crosses between the threads (bodies from memory and from the spool, results,
// the SIZE learned, log lines) and what happens when the worker dies or is closed.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { parseConfig } from '../../src/config/load.js';
import { Secret } from '../../src/config/secret.js';
import { ThreadedCourier, upstreamsFromRelay, upstreamsToWorker } from '../../src/delivery/courier-thread.js';
import { SIZE_HEADROOM } from '../../src/delivery/smtp-courier.js';
import { createLogger } from '../../src/log.js';
import type { QueueEntry } from '../../src/spool/entry.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

function entry(id: string, to: string[]): QueueEntry {
  return {
    id,
    from: 'scanner@corp.example',
    originalFrom: 'scanner@printer.local',
    recipients: to.map((address) => ({ address, status: 'pending' as const })),
    source: 'lan',
    client: { address: '127.0.0.1' },
    size: 0,
    createdAt: Date.now(),
    attempts: 0,
    nextAttemptAt: 0,
  };
}

function message(subject: string): Buffer {
  return Buffer.from(`Subject: ${subject}\r\nFrom: scanner@corp.example\r\n\r\nbody of ${subject}\r\n`);
}

/** The worker behind a courier, to end it the way a crash would. */
function workerOf(courier: ThreadedCourier): Worker {
  const worker = (courier as unknown as { worker?: Worker }).worker;
  assert.ok(worker, 'the courier has a worker');
  return worker;
}

describe('delivery thread', () => {
  let esp: Esp;
  let dir: string;
  const lines: string[] = [];
  const log = createLogger(
    { level: 'debug', format: 'json' },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  );

  /** The first line the relay's logger wrote for `event`, parsed. */
  function logged(event: string): Record<string, unknown> | undefined {
    return lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.event === event);
  }

  function courierFor(
    port = esp.port,
    ca = esp.caFile,
    extra: Record<string, unknown> = {},
  ): ThreadedCourier {
    const config = parseConfig(
      {
        upstream: {
          name: 'esp',
          host: '127.0.0.1',
          port,
          tls: 'starttls',
          ca,
          user: esp.user,
          pass: esp.pass,
          timeout: '5s',
          ...extra,
        },
      },
      { env: {}, baseDir: dir, source: 'test' },
    );
    return new ThreadedCourier(config.upstreams, 'relay.test', { log });
  }

  before(async () => {
    esp = await startEsp({ size: 100_000 });
    dir = await makeTempDir('courier-thread');
  });

  after(async () => {
    await esp?.close();
    await removeTempDir(dir);
  });

  test('delivers a body from memory and one from its spool file, each byte as it was', async () => {
    const courier = courierFor();
    try {
      const inMemory = message('from memory');
      // A view into a larger buffer, as a Buffer often is: only its own bytes may travel.
      const larger = Buffer.concat([Buffer.from('not part of it'), inMemory]);
      const view = larger.subarray(larger.length - inMemory.length);
      const onDisk = message('from disk');
      const file = path.join(dir, 'B.eml');
      await fs.writeFile(file, onDisk);

      const [first, second] = await Promise.all([
        courier.send(entry('A', ['a@x.example']), ['a@x.example'], { path: '/nonexistent', data: view }),
        courier.send(entry('B', ['b@x.example', 'c@x.example']), ['b@x.example', 'c@x.example'], {
          path: file,
        }),
      ]);
      assert.deepEqual(
        first!.map((r) => [r.recipient, r.outcome, r.upstream]),
        [['a@x.example', 'delivered', 'esp']],
      );
      assert.deepEqual(
        second!.map((r) => r.outcome),
        ['delivered', 'delivered'],
      );
      const raws = esp.messages.map((m) => m.raw.toString()).sort();
      assert.deepEqual(raws, [onDisk.toString(), inMemory.toString()].sort());
      assert.equal(view.toString(), inMemory.toString(), 'the caller’s buffer is left as it was');
    } finally {
      await courier.close();
    }
  });

  test('the SIZE the ESP declares reaches the relay’s thread, and so do the log lines', async () => {
    lines.length = 0; // an earlier test's check may have logged the same line
    const courier = courierFor();
    try {
      assert.equal(courier.sizeLimit(), undefined, 'unknown before the check');
      const ready = new Promise((resolve) => courier.once('upstream', resolve));
      courier.start();
      assert.deepEqual(await ready, { upstream: 'esp', state: 'size', size: 100_000 });
      assert.equal(courier.sizeLimit(), 100_000 - SIZE_HEADROOM);
      assert.equal(courier.sizeLimit('anyone@corp.example'), 100_000 - SIZE_HEADROOM);
      const line = logged('upstream_ready');
      assert.ok(line, 'the worker’s log line was written by the relay’s logger');
      assert.equal(line.level, 'info');
      assert.equal(line.size, 100_000);
    } finally {
      await courier.close();
    }
  });

  test('a worker that dies: what it had in hand is temporary, and the next attempt gets a new one', async () => {
    const courier = courierFor();
    try {
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let arrived!: () => void;
      const atData = new Promise<void>((resolve) => (arrived = resolve));
      esp.onData = async () => {
        arrived();
        await held;
        return undefined;
      };
      const before = esp.messages.length;
      const attempt = courier.send(entry('C', ['c@x.example']), ['c@x.example'], {
        path: '/nonexistent',
        data: message('in hand'),
      });
      await atData;
      const dead = workerOf(courier);
      await dead.terminate();
      const results = await attempt;
      assert.deepEqual(
        results.map((r) => [r.outcome, r.reply]),
        [['temporary', 'the delivery thread stopped unexpectedly']],
      );
      const failure = logged('delivery_thread_failed');
      assert.ok(failure, 'the death is logged');
      assert.equal(failure.level, 'error');
      assert.equal(failure.inHand, 1);
      esp.onData = undefined;
      release();

      const next = await courier.send(entry('D', ['d@x.example']), ['d@x.example'], {
        path: '/nonexistent',
        data: message('after'),
      });
      assert.equal(next[0]!.outcome, 'delivered');
      assert.notEqual(workerOf(courier), dead, 'a new worker');
      assert.ok(esp.messages.slice(before).some((m) => m.raw.toString().includes('Subject: after')));
    } finally {
      esp.onData = undefined;
      await courier.close();
    }
  });

  test('a worker started after a death during shutdown is told to stop waiting for the pace', async () => {
    const courier = courierFor(esp.port, esp.caFile, { rateLimit: '1/hour' });
    try {
      const first = await courier.send(entry('G', ['g@x.example']), ['g@x.example'], {
        path: '/nonexistent',
        data: message('takes the hour'),
      });
      assert.equal(first[0]!.outcome, 'delivered');
      courier.stopping();
      await workerOf(courier).terminate();
      // The next slot is an hour away: only a worker told to stop answers at once.
      const next = courier.send(entry('H', ['h@x.example']), ['h@x.example'], {
        path: '/nonexistent',
        data: message('waits'),
      });
      const late = new Promise<'still waiting'>((resolve) =>
        setTimeout(() => resolve('still waiting'), 5_000).unref(),
      );
      const results = await Promise.race([next, late]);
      assert.notEqual(results, 'still waiting');
      assert.equal((results as Awaited<typeof next>)[0]!.outcome, 'temporary');
    } finally {
      await courier.close();
    }
  });

  test('close ends the worker; an attempt after it is temporary and starts nothing', async () => {
    const courier = courierFor();
    const worker = workerOf(courier);
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    const started = Date.now();
    await courier.close();
    assert.equal(await exited, 0, 'the worker ended by itself, not terminated (code 1)');
    assert.ok(Date.now() - started < 2_000, 'before the grace period ran out');
    const results = await courier.send(entry('E', ['e@x.example']), ['e@x.example'], {
      path: '/nonexistent',
      data: message('late'),
    });
    assert.deepEqual(
      results.map((r) => [r.outcome, r.reply]),
      [['temporary', 'the relay is shutting down']],
    );
    assert.equal((courier as unknown as { worker?: Worker }).worker, undefined);
  });

  test('a worker started after a death uses the CA text read at the start, not the file', async () => {
    const ca = path.join(dir, 'moving-ca.pem');
    await fs.copyFile(esp.caFile, ca);
    const courier = courierFor(esp.port, ca);
    try {
      await fs.rm(ca);
      await workerOf(courier).terminate();
      const results = await courier.send(entry('F', ['f@x.example']), ['f@x.example'], {
        path: '/nonexistent',
        data: message('after the file went'),
      });
      assert.deepEqual(
        results.map((r) => [r.outcome, r.reply.slice(0, 3)]),
        [['delivered', '250']],
      );
    } finally {
      await courier.close();
    }
  });

  test('OAuth2 secrets cross to the worker and are hidden again there', async () => {
    await fs.writeFile(path.join(dir, 'client-secret'), 'the-client-secret\n');
    await fs.writeFile(
      path.join(dir, 'key.json'),
      JSON.stringify({
        type: 'service_account',
        client_email: 'sa@p.iam.gserviceaccount.com',
        private_key: 'PEM-KEY',
      }),
    );
    const config = parseConfig(
      {
        upstreams: [
          {
            name: 'm365',
            host: '127.0.0.1',
            port: 2,
            auth: {
              type: 'oauth2',
              provider: 'microsoft',
              tenant: 'corp.example',
              clientId: 'app',
              clientSecretFile: 'client-secret',
              user: 'relay@corp.example',
            },
          },
          {
            name: 'google',
            host: '127.0.0.1',
            port: 3,
            user: 'relay@corp.example',
            auth: { type: 'oauth2', provider: 'google', serviceAccountFile: 'key.json' },
          },
        ],
      },
      { env: {}, baseDir: dir, source: 'test' },
    );
    // What a worker receives: a structured clone, which keeps enumerable fields only.
    const [m365, google] = upstreamsFromRelay(structuredClone(upstreamsToWorker(config.upstreams)));
    assert.ok(m365!.auth?.clientSecret instanceof Secret, 'a Secret again');
    assert.equal(m365!.auth.clientSecret.reveal(), 'the-client-secret');
    assert.ok(!JSON.stringify(m365).includes('the-client-secret'));
    assert.equal(google!.auth?.serviceAccount?.privateKey.reveal(), 'PEM-KEY');
    assert.equal(google!.auth?.serviceAccount?.clientEmail, 'sa@p.iam.gserviceaccount.com');
    assert.ok(!JSON.stringify(google).includes('PEM-KEY'), 'hidden again');
    // Without the carrying, the clone would have lost them: the test above means something.
    assert.ok(!(structuredClone(config.upstreams)[0]!.auth?.clientSecret instanceof Secret));
  });

  test('the CA text is read with the config: a file gone since then is not needed', async () => {
    const ca = path.join(dir, 'gone-ca.pem');
    await fs.copyFile(esp.caFile, ca);
    const config = parseConfig(
      { upstream: { host: '127.0.0.1', port: esp.port, ca } },
      { env: {}, baseDir: dir, source: 'test' },
    );
    await fs.rm(ca);
    assert.equal(config.upstreams[0]!.caText, await fs.readFile(esp.caFile, 'utf8'));
    const courier = new ThreadedCourier(config.upstreams, 'relay.test', { log });
    await courier.close();
  });
});
