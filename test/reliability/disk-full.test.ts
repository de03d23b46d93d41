// The spool's disk fills up: the relay answers 452 4.3.1 (try later), keeps no partial message,
// stays up, and takes mail again once there is room; what it accepted before is delivered.
//
// As root with `mount -t tmpfs` allowed, the spool is a real 1 MB tmpfs that fills up and is
// then enlarged (mount -o remount). Elsewhere (no root, or a container without CAP_SYS_ADMIN)
// the relay runs under a small wrapper that makes every file write (FileHandle, fs.write and
// fs.writeSync) fail with ENOSPC while a flag file exists: an injected write error, reported as such in the test's diagnostics
// (SMARTHOST_TEST_NO_TMPFS=1 forces that mode).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { rawSmtpSession } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { makeTempDir, removeTempDir, RELAY_BIN, startRelay, type Relay } from '../helpers/relay.js';
import {
  checkSpoolConsistent,
  filesIn,
  isWhole,
  sendTagged,
  token,
  tokenOf,
  upstreamFor,
  waitUntil,
} from './common.js';

let esp: Esp | undefined;
let relay: Relay | undefined;
let mounted: string | undefined;
let dir: string | undefined;

after(async () => {
  await relay?.kill();
  await esp?.close();
  if (mounted) spawnSync('umount', [mounted]);
  if (dir) await removeTempDir(dir);
});

function tryMountTmpfs(target: string, size: string): boolean {
  if (process.getuid?.() !== 0 || process.env.SMARTHOST_TEST_NO_TMPFS === '1') return false;
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', target]);
  return r.status === 0;
}

/** A relay entry point that fails file writes with ENOSPC while `flag` exists. */
async function injectingWrapper(where: string, flag: string): Promise<string> {
  const file = path.join(where, 'enospc-wrapper.mjs');
  await fs.writeFile(
    file,
    `import fs from 'node:fs';
const flag = ${JSON.stringify(flag)};
const probe = await fs.promises.open(${JSON.stringify(file)}, 'r');
const proto = Object.getPrototypeOf(probe);
await probe.close();
const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
for (const method of ['write', 'writeFile', 'writev']) {
  const original = proto[method];
  proto[method] = function (...args) {
    if (fs.existsSync(flag)) return Promise.reject(enospc());
    return original.apply(this, args);
  };
}
// The spool also writes through file descriptors: inline (writeSync) and in the pool (write).
const write = fs.write;
fs.write = function (...args) {
  if (!fs.existsSync(flag)) return write.apply(this, args);
  const done = args[args.length - 1];
  process.nextTick(() => done(enospc()));
};
const writeSync = fs.writeSync;
fs.writeSync = function (...args) {
  if (fs.existsSync(flag)) throw enospc();
  return writeSync.apply(this, args);
};
await import(${JSON.stringify(pathToFileURL(RELAY_BIN).href)});
`,
  );
  return file;
}

test(
  'spool disk full: 4xx, no partial message, relay up, service back when space returns',
  { timeout: 180_000 },
  async (t) => {
    dir = await makeTempDir('smarthost-diskfull');
    const spoolDir = path.join(dir, 'spool');
    await fs.mkdir(spoolDir);
    const flag = path.join(dir, 'disk-is-full');
    const real = tryMountTmpfs(spoolDir, '1m');
    if (real) mounted = spoolDir;
    t.diagnostic(
      real ? 'spool on a 1 MB tmpfs (a real full disk)' : 'no tmpfs mount here: injected ENOSPC write errors',
    );

    esp = await startEsp();
    await esp.stop(); // messages stay in the spool and fill it
    relay = await startRelay({
      config: {
        allowlist: [{ cidr: '127.0.0.0/8', name: 'lan' }],
        upstream: upstreamFor(esp),
        spool: { dir: spoolDir },
        queue: { retry: ['1s'] },
        log: { level: 'info' },
      },
      bin: real ? undefined : await injectingWrapper(dir, flag),
    });
    const r = relay;

    // Fill it: 120 KB messages until the relay says it has no room.
    const accepted: string[] = [];
    let refusal: { code?: number; response: string } | undefined;
    for (let i = 0; i < 40 && !refusal; i++) {
      if (!real && i === 3) await fs.writeFile(flag, '');
      const tok = token('full');
      const result = await sendTagged(r.port, tok, { bodyBytes: 120_000 });
      if (result.ok) accepted.push(tok);
      else refusal = result;
    }
    assert.ok(accepted.length > 0, 'some messages were accepted before the disk filled');
    assert.ok(refusal, 'the relay never refused: the disk did not fill');
    assert.equal(refusal.code, 452, `a temporary refusal: ${refusal.response}`);
    assert.match(refusal.response, /4\.3\.1/);

    // No partial message: every queued message is whole, nothing left in tmp/, and exactly the accepted are queued.
    const queued = await checkSpoolConsistent(r.spoolDir);
    assert.equal(queued.length, accepted.length, 'queued messages = accepted messages');
    assert.equal(queued.debris, 0, 'a refused message left its files in queue/');
    await waitUntil(
      'tmp/ to be empty',
      async () => (await filesIn(path.join(r.spoolDir, 'tmp'))).length === 0,
      10_000,
    );

    // Still up and answering.
    assert.ok(r.running, 'the relay is still running');
    const replies = await rawSmtpSession(r.port, ['EHLO client.test', 'NOOP', 'QUIT']);
    assert.match(replies[0] ?? '', /^220 /);
    assert.match(replies[1] ?? '', /^250[ -]/);

    // Room again.
    if (real)
      assert.equal(spawnSync('mount', ['-o', 'remount,size=64m', spoolDir]).status, 0, 'remount bigger');
    else await fs.rm(flag);
    const after = token('after');
    const again = await sendTagged(r.port, after, { bodyBytes: 120_000 });
    assert.ok(again.ok, `accepted once there is room: ${again.ok ? '' : again.response}`);
    accepted.push(after);

    await esp.start();
    const e = esp;
    await waitUntil(
      'every accepted message delivered',
      () => accepted.every((tok) => e.messages.some((m) => isWhole(m) && tokenOf(m) === tok)),
      // A delivery attempt whose state could not be written while the disk was full is tried
      // again 10 seconds later (SPOOL_ERROR_RETRY_MS in src/queue/delivery-queue.ts), so allow for that.
      100_000,
    );
  },
);
