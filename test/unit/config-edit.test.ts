// The config editor (src/config/edit.ts), the allowlist's CIDR arithmetic (src/policy/cidr.ts),
// the control socket's path finding and the file watcher (src/config/watch.ts).
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { includesPublic, parseRange } from '../../src/policy/cidr.js';
import {
  applyEdit,
  ConfigEditError,
  editConfigFile,
  ensureSeq,
  writeFileAtomic,
} from '../../src/config/edit.js';
import { loadConfig, type Config } from '../../src/config/load.js';
import { ConfigReloader } from '../../src/config/watch.js';
import { controlSocketPath } from '../../src/control/client.js';
import { silentLogger } from '../../src/log.js';
import { makeTempDir } from '../helpers/tmp.js';

const COMMENTED = `# head office relay
hostname: relay.corp.example # shown in the greeting

# devices by network
allowlist:
  # printers on the 3rd floor
  - cidr: 10.20.30.0/24
    name: printers
    allowedRecipientDomains: [corp.example, example.com]
  - cidr: "10.20.31.0/24" # quoted on purpose
    name: scanners

users: []

queue:
  maxAge: 72h # three days
`;

const addLab = (doc: Parameters<Parameters<typeof applyEdit>[1]>[0]) => {
  ensureSeq(doc, 'allowlist').add(doc.createNode({ cidr: '10.9.8.0/24', name: 'lab' }));
};

describe('config edit: the file stays as the admin wrote it', () => {
  test('adding an entry changes nothing but that entry: comments, order, quoting, flow lists kept', () => {
    const { text, config } = applyEdit(COMMENTED, addLab, '/etc/smarthost/smarthost.yml', {});
    assert.equal(
      text,
      COMMENTED.replace('    name: scanners\n', '    name: scanners\n  - cidr: 10.9.8.0/24\n    name: lab\n'),
    );
    assert.deepEqual(
      config.allowlist.map((e) => e.name),
      ['printers', 'scanners', 'lab'],
    );
  });

  test('an empty flow list becomes a block list when something is added', () => {
    const { text } = applyEdit(
      COMMENTED,
      (doc) => {
        ensureSeq(doc, 'users').add(doc.createNode({ name: 'crm', password: 'scrypt$1$2$3$a$b' }));
      },
      '/x/smarthost.yml',
      {},
    );
    assert.match(text, /\nusers:\n {2}- name: crm\n {4}password: scrypt\$1\$2\$3\$a\$b\n/);
  });

  test('an edit that would make the config invalid is refused with the reason', () => {
    assert.throws(
      () =>
        applyEdit(
          COMMENTED,
          (doc) => {
            ensureSeq(doc, 'allowlist').add(doc.createNode({ cidr: '10.1.0.0/16', name: 'printers' }));
          },
          '/x/smarthost.yml',
          {},
        ),
      (err: unknown) =>
        err instanceof ConfigEditError &&
        /would not be valid/.test(err.message) &&
        /used twice/.test(err.message),
    );
  });

  test('a file that is not valid YAML is not edited', () => {
    assert.throws(
      () => applyEdit('allowlist: [unclosed\n', addLab, '/x/smarthost.yml', {}),
      (err: unknown) => err instanceof ConfigEditError && /not valid YAML/.test(err.message),
    );
  });

  test('an empty file gets a header comment and the new key', () => {
    const { text } = applyEdit('', addLab, '/x/smarthost.yml', {});
    assert.match(text, /^# smarthost config, created by the smarthost CLI\./);
    assert.match(text, /\nallowlist:\n {2}- cidr: 10\.9\.8\.0\/24\n {4}name: lab\n$/);
  });
});

describe('config edit: atomic write with a backup', () => {
  test('the previous version is kept as .bak, the mode is kept, no temp file is left', async () => {
    const dir = await makeTempDir('config-edit');
    const file = path.join(dir, 'smarthost.yml');
    await fs.writeFile(file, COMMENTED, { mode: 0o640 });
    await fs.chmod(file, 0o640);
    const result = await editConfigFile(file, addLab, {});
    assert.equal(result.created, false);
    assert.equal(result.backup, `${file}.bak`);
    assert.equal(await fs.readFile(`${file}.bak`, 'utf8'), COMMENTED);
    assert.match(await fs.readFile(file, 'utf8'), /name: lab/);
    assert.equal((await fs.stat(file)).mode & 0o777, 0o640);
    assert.deepEqual((await fs.readdir(dir)).sort(), ['smarthost.yml', 'smarthost.yml.bak']);
  });

  test('a refused edit writes nothing: no change, no .bak', async () => {
    const dir = await makeTempDir('config-edit');
    const file = path.join(dir, 'smarthost.yml');
    await fs.writeFile(file, COMMENTED);
    await assert.rejects(
      editConfigFile(
        file,
        (doc) => {
          ensureSeq(doc, 'allowlist').add(doc.createNode({ cidr: '10.1.0.0/99', name: 'bad' }));
        },
        {},
      ),
      (err: unknown) => err instanceof ConfigEditError && /allowlist\.2\.cidr/.test(err.message),
    );
    assert.equal(await fs.readFile(file, 'utf8'), COMMENTED);
    assert.deepEqual(await fs.readdir(dir), ['smarthost.yml']);
  });

  test('a new file is created owner-only', async () => {
    const dir = await makeTempDir('config-edit');
    const file = path.join(dir, 'smarthost.yml');
    const result = await editConfigFile(file, addLab, {});
    assert.equal(result.created, true);
    assert.equal(result.backup, undefined);
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    await writeFileAtomic(file, 'hostname: x\n', { backup: true });
    assert.equal(await fs.readFile(file, 'utf8'), 'hostname: x\n');
    assert.match(await fs.readFile(`${file}.bak`, 'utf8'), /name: lab/);
  });
});

describe('allowlist CIDR checks', () => {
  test('host bits are cleared and reported', () => {
    const r = parseRange('10.1.2.3/24')!;
    assert.equal(r.text, '10.1.2.0/24');
    assert.equal(r.hostBitsSet, true);
    assert.equal(parseRange('10.1.2.0/24')!.hostBitsSet, false);
    assert.equal(parseRange('10.1.2.3')!.text, '10.1.2.3/32');
    assert.equal(parseRange('fd00:1:2:3::5/64')!.text, 'fd00:1:2:3::/64');
    assert.equal(parseRange('10.1.2.0/33'), undefined);
    assert.equal(parseRange('nonsense/8'), undefined);
  });

  test('private, loopback, link-local, CGNAT and ULA ranges are fine; anything reaching beyond is public', () => {
    for (const ok of [
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.1.0/24',
      '127.0.0.0/8',
      '169.254.0.0/16',
      '100.64.0.0/10',
      '::1/128',
      'fe80::/10',
      'fd00::/8',
      '::ffff:10.1.2.0/120',
    ]) {
      assert.equal(includesPublic(parseRange(ok)!), false, ok);
    }
    for (const bad of [
      '0.0.0.0/0',
      '::/0',
      '8.8.8.0/24',
      '10.0.0.0/7',
      '172.0.0.0/8',
      '192.168.0.0/15',
      '2001:db8::/32',
      '100.0.0.0/8',
    ]) {
      assert.equal(includesPublic(parseRange(bad)!), true, bad);
    }
  });
});

describe('control socket path', () => {
  test('found even in a config that no longer parses', async () => {
    const dir = await makeTempDir('config-edit');
    const file = path.join(dir, 'smarthost.yml');
    await fs.writeFile(file, 'spool:\n  dir: ./spool\nallowlist: [ { cidr: 1\n');
    assert.equal(controlSocketPath(file, {}), path.join(dir, 'spool', 'control.sock'));
    await fs.writeFile(file, 'control:\n  socket: /run/smarthost/control.sock\n');
    assert.equal(controlSocketPath(file, {}), '/run/smarthost/control.sock');
    assert.equal(controlSocketPath(file, {}), loadConfig(file, {}).control.socket);
    await fs.writeFile(file, 'hostname: x\n');
    assert.equal(controlSocketPath(file, {}), loadConfig(file, {}).control.socket);
  });
});

/** A config file, and a reloader watching it (50 ms debounce) for a relay that records what it applies. */
async function watched(text: string, debounceMs = 50) {
  const dir = await makeTempDir('config-watch');
  const file = path.join(dir, 'smarthost.yml');
  await fs.writeFile(file, text);
  const applied: Config[] = [];
  const target = {
    config: loadConfig(file, {}),
    applyConfig(config: Config) {
      applied.push(config);
      this.config = config;
    },
  };
  const reloader = new ConfigReloader(target, silentLogger(), debounceMs);
  return { dir, file, applied, target, reloader };
}

describe('config watch', () => {
  test('an editor replacing the file by a rename triggers one reload; a broken file is refused', async () => {
    const { dir, file, applied, target, reloader } = await watched('hostname: one\n');
    reloader.watch();
    try {
      // What vim and the CLI do: write a new file beside it, rename it over the old one.
      await fs.writeFile(path.join(dir, '.smarthost.yml.swp'), 'hostname: two\n');
      await fs.rename(path.join(dir, '.smarthost.yml.swp'), file);
      await waitFor(() => applied.length >= 1);
      assert.equal(applied[0]!.hostname, 'two');

      await fs.writeFile(file, 'hostname: [broken\n');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(applied.length, 1, 'a broken file was applied');
      assert.equal(target.config.hostname, 'two');
      const result = reloader.reload('test');
      assert.equal(result.ok, false);
      assert.match(result.error ?? '', /not valid YAML/);

      await fs.writeFile(file, 'hostname: three\n');
      await waitFor(() => applied.length >= 2);
      assert.equal(applied[1]!.hostname, 'three');
      assert.equal(applied.length, 2);
    } finally {
      reloader.close();
    }
  });
});

describe('config watch: files caught half-written', () => {
  const withUpstream = 'hostname: one\nupstream: { host: 127.0.0.1, port: 2587, tls: none }\n';

  test('an emptied file is never taken as the built-in defaults (capture mode)', async () => {
    const { file, applied, reloader } = await watched(withUpstream);
    reloader.watch();
    try {
      // What an editor writing in place does first: truncate.
      await fs.writeFile(file, '');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(applied.length, 0, 'the empty file was applied');
      const result = reloader.reload('test');
      assert.equal(result.ok, false);
      assert.match(result.error ?? '', /empty/);
      // Then the text arrives.
      await fs.writeFile(file, withUpstream.replace('one', 'two'));
      await waitFor(() => applied.length >= 1);
      assert.equal(applied[0]!.hostname, 'two');
      assert.equal(applied[0]!.upstreams.length, 1);
      assert.equal(applied.length, 1);
    } finally {
      reloader.close();
    }
  });

  test('a text is applied only once a second look finds it unchanged', async () => {
    // The debounce timer's callback, called by hand so that no timing decides the outcome
    // (the 1-hour debounce keeps the real timer from firing).
    const { file, applied, reloader } = await watched('hostname: one\n', 3_600_000);
    const look = () => (reloader as unknown as { changed(target: string): void }).changed(file);
    try {
      // A writer stalled half-way: the first look finds a partial text.
      await fs.writeFile(file, 'hostname: on');
      look();
      assert.equal(applied.length, 0, 'applied on the first look');
      await fs.writeFile(file, 'hostname: two\n');
      look();
      assert.equal(applied.length, 0, 'applied a text that had just changed');
      look();
      assert.equal(applied.length, 1);
      assert.equal(applied[0]!.hostname, 'two');
    } finally {
      reloader.close();
    }
  });

  test('a file change that removes every upstream waits for an explicit reload', async () => {
    const { file, applied, target, reloader } = await watched(withUpstream);
    reloader.watch();
    try {
      await fs.writeFile(file, 'hostname: one\n');
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(applied.length, 0, 'switched to capture mode on a file change alone');
      assert.equal(target.config.upstreams.length, 1);
      const result = reloader.reload('smarthost reload');
      assert.equal(result.ok, true, result.error);
      assert.equal(target.config.upstreams.length, 0, 'an explicit reload applies it');
    } finally {
      reloader.close();
    }
  });
});

async function waitFor(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('config reload result', () => {
  test('says where mail goes when the upstreams changed, and nothing when they did not', async () => {
    const dir = await makeTempDir('config-reload-result');
    const file = path.join(dir, 'smarthost.yml');
    await fs.writeFile(file, 'hostname: one\n');
    let next: string | undefined = 'delivering to esp.example:587 (starttls)';
    const target = {
      config: loadConfig(file, {}),
      applyConfig(config: Config) {
        this.config = config;
        return { upstreamChanged: next };
      },
    };
    const reloader = new ConfigReloader(target, silentLogger(), 50);
    assert.equal(reloader.reload('test').upstreamChanged, 'delivering to esp.example:587 (starttls)');
    next = undefined;
    assert.equal(reloader.reload('test').upstreamChanged, undefined);
  });
});
