// The logger's formats: JSON lines off a terminal, readable lines on one, secrets always
// redacted, addresses masked when `log.maskAddresses` is on (and after a reload turns it on).
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import {
  applyLogOptions,
  BatchedOutput,
  createLogger,
  maskAddress,
  maskAddressesInText,
} from '../../src/log.js';

function capture(isTTY = false): { stream: Writable & { isTTY?: boolean }; lines: () => string[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  }) as Writable & { isTTY?: boolean };
  stream.isTTY = isTTY;
  return { stream, lines: () => chunks.join('').split('\n').filter(Boolean) };
}

/** winston writes asynchronously: let the stream flush. */
const flush = () => new Promise((resolve) => setImmediate(resolve));

test('maskAddress keeps the first letter and the domain', () => {
  assert.equal(maskAddress('alice@corp.example'), 'a***@corp.example');
  assert.equal(maskAddress('jdoe'), '***');
  assert.equal(maskAddress(''), '');
  assert.equal(
    maskAddressesInText('550 5.1.1 <bob.smith@example.com>: no such user; cc x@y.example'),
    '550 5.1.1 <b***@example.com>: no such user; cc x***@y.example',
  );
  assert.equal(maskAddressesInText('connected to 10.0.0.1:587'), 'connected to 10.0.0.1:587');
});

test('JSON lines when not a terminal, every address field and text masked', async () => {
  const out = capture(false);
  const log = createLogger({ level: 'info', format: 'auto', maskAddresses: true }, out.stream);
  log.info('refused <carol@example.net>', {
    event: 'refused',
    from: 'alice@corp.example',
    to: ['bob@example.com', 'dave@example.org'],
    user: 'jdoe',
    reply: '550 5.7.1 <erin@example.com> denied',
    source: 'printers',
    nested: { recipient: 'frank@example.com' },
  });
  await flush();
  const [line] = out.lines();
  const parsed = JSON.parse(line ?? '') as Record<string, unknown>;
  assert.equal(parsed.message, 'refused <c***@example.net>');
  assert.equal(parsed.from, 'a***@corp.example');
  assert.deepEqual(parsed.to, ['b***@example.com', 'd***@example.org']);
  assert.equal(parsed.user, '***');
  assert.equal(parsed.reply, '550 5.7.1 <e***@example.com> denied');
  assert.equal(parsed.source, 'printers');
  assert.deepEqual(parsed.nested, { recipient: 'f***@example.com' });
  assert.equal(parsed.level, 'info');
  assert.ok(parsed.timestamp);
});

test('without maskAddresses addresses stay; secrets are redacted either way', async () => {
  const out = capture(true);
  const log = createLogger({ level: 'info', format: 'auto' }, out.stream);
  log.info('auth to upstream', {
    from: 'alice@corp.example',
    pass: 'hunter2',
    upstream: { password: 'x' },
    event: 'auth',
  });
  await flush();
  const [line] = out.lines();
  assert.ok(line);
  assert.ok(!line.startsWith('{'), 'a readable line on a terminal, not JSON');
  assert.match(line, /^\d\d:\d\d:\d\d info {2}auth to upstream from=alice@corp\.example pass=\[redacted\]/);
  assert.ok(!line.includes('hunter2'));
  assert.match(line, /upstream=\{"password":"\[redacted\]"\}/);
});

test('a reload can turn masking on and change the level', async () => {
  const out = capture(false);
  const log = createLogger({ level: 'info', format: 'json' }, out.stream);
  log.debug('hidden', { from: 'a@b.example', event: 'accepted' });
  log.info('before', { from: 'alice@corp.example', event: 'accepted' });
  applyLogOptions(log, { level: 'debug', maskAddresses: true });
  log.debug('after', { from: 'alice@corp.example', event: 'accepted' });
  await flush();
  const lines = out.lines().map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    lines.map((l) => [l.message, l.from]),
    [
      ['before', 'alice@corp.example'],
      ['after', 'a***@corp.example'],
    ],
  );
});

test('errors and other objects in fields survive the formats', async () => {
  const out = capture(false);
  const log = createLogger({ level: 'info', format: 'json' }, out.stream);
  log.info('x', { when: new Date(0), nested: { at: new Date(0) }, event: 'accepted' });
  const masked = capture(false);
  const mlog = createLogger({ level: 'info', format: 'json', maskAddresses: true }, masked.stream);
  mlog.info('y', { error: new Error('550 <bob@example.com> unknown'), event: 'attempt_error' });
  await flush();
  const line = JSON.parse(out.lines()[0] ?? '') as Record<string, unknown>;
  assert.equal(line.when, '1970-01-01T00:00:00.000Z');
  assert.deepEqual(line.nested, { at: '1970-01-01T00:00:00.000Z' });
  const mline = JSON.parse(masked.lines()[0] ?? '') as Record<string, unknown>;
  assert.equal(mline.error, '550 <b***@example.com> unknown');
});

test('BatchedOutput: the lines of one turn of the event loop go out in one write, in order', async () => {
  const writes: string[] = [];
  const target = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push(chunk.toString());
      cb();
    },
  });
  const output = new BatchedOutput(target);
  const log = createLogger({ level: 'info', format: 'json' }, output);
  log.info('one', { event: 'accepted' });
  log.info('two', { event: 'accepted' });
  log.info('three', { event: 'accepted' });
  await flush();
  await flush();
  assert.equal(writes.length, 1, 'one write for the turn');
  assert.deepEqual(
    writes[0]!
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { message: string }).message),
    ['one', 'two', 'three'],
  );
  log.info('four', { event: 'accepted' });
  await flush();
  await flush();
  assert.equal(writes.length, 2, 'a later turn writes again');
});

test('BatchedOutput: lines not yet written when the process exits are written before it ends', () => {
  const logModule = path.resolve(import.meta.dirname, '../../src/log.js');
  const script = `
    const { BatchedOutput, createLogger } = await import(${JSON.stringify(logModule)});
    const log = createLogger({ level: 'info', format: 'json' }, new BatchedOutput());
    log.info('last words');
    process.exit(3);
  `;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(child.status, 3);
  assert.match(child.stdout, /"message":"last words"/);
});

test('JSON lines: a field JSON cannot write (a cycle, a BigInt) still gives one parseable line', async () => {
  const { stream, lines } = capture();
  const log = createLogger({ level: 'info', format: 'json' }, stream);
  const looped: Record<string, unknown> = { a: 1 };
  looped.self = looped;
  log.info('plain', { id: 'Q1', recipients: 2, event: 'accepted' });
  log.info('odd', { looped, big: 10n, event: 'accepted' });
  await flush();
  const [plain, odd] = lines().map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    { message: plain!.message, id: plain!.id, recipients: plain!.recipients, level: plain!.level },
    { message: 'plain', id: 'Q1', recipients: 2, level: 'info' },
  );
  assert.equal(odd!.message, 'odd');
  assert.equal(odd!.big, '10');
});
