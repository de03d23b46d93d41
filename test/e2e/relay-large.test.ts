// Acceptance 7 of issue 2, and rule 3 (stream, don't buffer): a 30 MB message relays unchanged,
// and what it costs in memory does not grow with its size: client → spool file → ESP, never the
// whole message in memory.
//
// Resident memory is read from /proc/<pid>/status of the relay child (VmRSS sampled, and VmHWM).
// A large message leaves garbage behind that V8 collects late: each isolate (the main thread
// and the delivery thread) lets up to about 64 MB of Buffer memory wait for its next collection,
// whatever the message's size. So the growth for one 30 MB message alone says little (48-71 MB
// here, by GC timing), while a relay that buffered messages would pay the whole extra size of a
// bigger one. The test sends 30 MB, then 90 MB, and checks that the 90 MB message adds less
// than half of its extra 60 MB to the peak, and that the peak stays under an absolute cap.
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
/** The 90 MB message may raise the peak by at most this over the 30 MB one's (buffering: +60 MB). */
const MAX_EXTRA = 30 * MB;
/** Whatever the GC timing, the peak growth stays under this. */
const MAX_GROWTH = 160 * MB;

/** A MIME-like message of about `size` bytes: headers, then 76-character base64-ish lines. */
function bigMessage(size: number, subject: string): Buffer {
  const head = Buffer.from(
    [
      'From: scanner@corp.example',
      'To: archive@example.com',
      `Subject: ${subject}`,
      `Message-ID: <${subject}@corp.example>`,
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
        limits: { maxMessageSize: '100MB' },
        queue: { retry: ['1s'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  /** Sends `size` bytes, waits until delivered; resolves the peak VmRSS meanwhile and the message. */
  async function relayOne(size: number, subject: string, delivered: number) {
    const pid = relay.process.pid!;
    let sampledMax = (await procMemory(pid, 'VmRSS')) ?? 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const rss = await procMemory(pid, 'VmRSS');
        if (rss && rss > sampledMax) sampledMax = rss;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const original = bigMessage(size, subject);
    try {
      const sent = await sendMail({
        port: relay.port,
        from: 'scanner@corp.example',
        to: ['archive@example.com'],
        raw: original,
        timeoutMs: 60_000,
      });
      assert.ok(sent.ok, sent.response);
      await explained(relay, esp.waitFor(delivered, 60_000));
      await waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0);
    } finally {
      sampling = false;
      await sampler;
    }
    const peak = Math.max(sampledMax, (await procMemory(pid, 'VmHWM')) ?? 0);
    return { peak, original };
  }

  test('relays unchanged, and the memory it costs does not grow with its size', async (t) => {
    const pid = relay.process.pid!;
    // Warm up every code path (receive, spool, TLS to the ESP, AUTH) so their one-time cost is
    // not counted as growth.
    const warm = await sendMail({ port: relay.port, from: 'scanner@corp.example', to: ['a@example.com'] });
    assert.ok(warm.ok, warm.response);
    await esp.waitFor(1);
    const baseline = await procMemory(pid, 'VmRSS');
    assert.ok(baseline, 'VmRSS readable');

    const first = await relayOne(SIZE, 'big-scan', 2);
    const got = esp.messages.find((m) => header(m.raw, 'subject') === 'big-scan');
    assert.ok(got, 'the big message arrived');
    assert.deepEqual(got.to, ['archive@example.com']);
    const trace = headerFields(got.raw)[0]!;
    assert.equal(trace.name, 'received');
    const relayed = got.raw.subarray(trace.raw.length + 2);
    assert.equal(relayed.length, first.original.length, 'same size apart from the Received line');
    assert.equal(sha256(relayed), sha256(first.original), 'same bytes');
    // The recording ESP keeps what it received; let the next message's copy be the only one.
    esp.messages.length = 0;

    const second = await relayOne(3 * SIZE, 'bigger-scan', 1);
    const show = (n: number) => `${(n / MB).toFixed(1)} MB`;
    const growth30 = first.peak - baseline;
    const growth90 = second.peak - baseline;
    const detail = `30 MB: +${show(growth30)}, 90 MB: +${show(growth90)} (baseline ${show(baseline)})`;
    t.diagnostic(detail);
    assert.ok(growth90 - growth30 < MAX_EXTRA, `memory grows with the message size: ${detail}`);
    assert.ok(growth90 < MAX_GROWTH, `memory grew too much: ${detail}`);
  });
});
