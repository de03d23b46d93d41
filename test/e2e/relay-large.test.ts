// Acceptance 7 of issue 2: a 30 MB message relays, unchanged, while the relay's resident memory
// grows by less than 64 MB (it streams: client → spool file → ESP, never the whole message in
// memory). Memory is read from /proc/<pid>/status of the relay child: VmHWM (the peak) at the
// end against VmRSS once warmed up, and VmRSS sampled meanwhile.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import {
  explained,
  header,
  headerFields,
  procMemory,
  queuedIds,
  upstreamFor,
  waitUntil,
} from './relay-common.js';

const MB = 1024 * 1024;
const SIZE = 30 * MB;
const MAX_GROWTH = 64 * MB;

/** A MIME-like message of about `size` bytes: headers, then 76-character base64-ish lines. */
function bigMessage(size: number): Buffer {
  const head = Buffer.from(
    [
      'From: scanner@corp.example',
      'To: archive@example.com',
      'Subject: big-scan',
      'Message-ID: <big-scan@corp.example>',
      'Date: Mon, 01 Jan 2024 10:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: application/pdf',
      'Content-Transfer-Encoding: base64',
      '',
      '',
    ].join('\r\n'),
  );
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const lines = Math.ceil((size - head.length) / 78);
  const body = Buffer.alloc(lines * 78);
  let seed = 12345;
  for (let l = 0; l < lines; l++) {
    const at = l * 78;
    for (let c = 0; c < 76; c++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      body[at + c] = alphabet.charCodeAt(seed & 63);
    }
    body[at + 76] = 0x0d;
    body[at + 77] = 0x0a;
  }
  return Buffer.concat([head, body]);
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('relay: a 30 MB message', { skip: !existsSync('/proc/self/status') && 'needs /proc' }, () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        limits: { maxMessageSize: '40MB' },
        queue: { retry: ['1s'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('relays unchanged with the relay RSS growing by less than 64 MB', async () => {
    const pid = relay.process.pid!;
    // Warm up every code path (receive, spool, TLS to the ESP, AUTH) so their one-time cost is
    // not counted as growth.
    const warm = await sendMail({ port: relay.port, from: 'scanner@corp.example', to: ['a@example.com'] });
    assert.ok(warm.ok, warm.response);
    await esp.waitFor(1);
    const baseline = await procMemory(pid, 'VmRSS');
    assert.ok(baseline, 'VmRSS readable');

    let sampledMax = baseline;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const rss = await procMemory(pid, 'VmRSS');
        if (rss && rss > sampledMax) sampledMax = rss;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();

    const original = bigMessage(SIZE);
    assert.ok(original.length >= SIZE);
    let peak: number | undefined;
    try {
      const sent = await sendMail({
        port: relay.port,
        from: 'scanner@corp.example',
        to: ['archive@example.com'],
        raw: original,
        timeoutMs: 60_000,
      });
      assert.ok(sent.ok, sent.response);
      await explained(relay, esp.waitFor(2, 60_000));
      await waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0);
      peak = await procMemory(pid, 'VmHWM');
    } finally {
      sampling = false;
      await sampler;
    }

    const got = esp.messages.find((m) => header(m.raw, 'subject') === 'big-scan');
    assert.ok(got, 'the big message arrived');
    assert.deepEqual(got.to, ['archive@example.com']);
    const trace = headerFields(got.raw)[0]!;
    assert.equal(trace.name, 'received');
    const relayed = got.raw.subarray(trace.raw.length + 2);
    assert.equal(relayed.length, original.length, 'same size apart from the Received line');
    assert.equal(sha256(relayed), sha256(original), 'same bytes');

    const growth = Math.max(peak ?? 0, sampledMax) - baseline;
    const show = (n: number) => `${(n / MB).toFixed(1)} MB`;
    assert.ok(
      growth < MAX_GROWTH,
      `relay RSS grew by ${show(growth)} (baseline ${show(baseline)}, peak ${show(peak ?? 0)}, sampled max ${show(sampledMax)})`,
    );
  });
});
