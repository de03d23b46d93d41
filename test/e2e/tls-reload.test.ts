// Issue 14, certificates: a renewed tls.cert/tls.key is served without a restart — after
// `smarthost reload`, after SIGHUP, and after nothing at all (the files are watched) — to new
// STARTTLS and implicit-TLS connections, while a session already in TLS goes on; a bad pair is
// refused and the old certificate stays; check-config refuses missing, mismatched and expired
// pairs; the expiry is on /metrics. The files are laid out as certbot does: live/ symlinks into
// archive/, swapped at each renewal.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { makeCert, type CertPair } from '../helpers/certs.js';
import { freePort, makeTempDir, removeTempDir, startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';
import { httpGet, metricValue } from './ops-common.js';

const DAY = 86_400_000;
const EXPIRY_METRIC = 'smarthost_tls_certificate_expiry_timestamp_seconds';

function fingerprint(pair: CertPair): string {
  return new X509Certificate(pair.cert).fingerprint256;
}

/** SMTP replies read off a stream, one complete (possibly multi-line) reply at a time. */
function replyReader(stream: Duplex): { next(): Promise<string>; detach(): void } {
  let buffer = '';
  let lines: string[] = [];
  const ready: string[] = [];
  const waiting: ((reply: string) => void)[] = [];
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString('latin1');
    for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
      const line = buffer.slice(0, i).replace(/\r$/, '');
      buffer = buffer.slice(i + 1);
      lines.push(line);
      if (!/^\d{3}(?: |$)/.test(line)) continue;
      const reply = lines.join('\n');
      lines = [];
      const waiter = waiting.shift();
      if (waiter) waiter(reply);
      else ready.push(reply);
    }
  };
  stream.on('data', onData);
  return {
    next: () =>
      ready.length ? Promise.resolve(ready.shift()!) : new Promise((resolve) => waiting.push(resolve)),
    detach: () => stream.off('data', onData),
  };
}

interface TlsSession {
  /** SHA-256 fingerprint of the certificate the relay presented. */
  fingerprint: string;
  command(line: string): Promise<string>;
  close(): void;
}

/** An SMTP session in TLS: STARTTLS on a plain listener, or TLS from the first byte. */
async function tlsSession(port: number, mode: 'starttls' | 'implicit'): Promise<TlsSession> {
  const options = { rejectUnauthorized: false, servername: 'localhost' };
  let secure: tls.TLSSocket;
  if (mode === 'implicit') {
    secure = tls.connect({ host: '127.0.0.1', port, ...options });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
  } else {
    const plain = net.connect({ host: '127.0.0.1', port });
    plain.on('error', () => undefined);
    const reader = replyReader(plain);
    assert.match(await reader.next(), /^220 /);
    plain.write('EHLO client.test\r\n');
    assert.match(await reader.next(), /STARTTLS/);
    plain.write('STARTTLS\r\n');
    assert.match(await reader.next(), /^220 /);
    reader.detach();
    secure = tls.connect({ socket: plain, ...options });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
  }
  secure.on('error', () => undefined);
  const reader = replyReader(secure);
  if (mode === 'implicit') assert.match(await reader.next(), /^220 /);
  return {
    fingerprint: secure.getPeerCertificate().fingerprint256,
    command: (line) => {
      secure.write(`${line}\r\n`);
      return reader.next();
    },
    close: () => secure.destroy(),
  };
}

/**
 * Lays a pair out as certbot does: archive/{fullchain,privkey}N.pem and live/ symlinks to them,
 * each swapped by a rename (as `ln -sfn` would leave them), so the configured paths never change.
 */
class CertbotDir {
  private serial = 0;
  constructor(readonly dir: string) {}

  get cert(): string {
    return path.join(this.dir, 'live', 'fullchain.pem');
  }

  get key(): string {
    return path.join(this.dir, 'live', 'privkey.pem');
  }

  async renew(pair: { cert: string; key: string }): Promise<void> {
    const n = ++this.serial;
    await fs.mkdir(path.join(this.dir, 'archive'), { recursive: true });
    await fs.mkdir(path.join(this.dir, 'live'), { recursive: true });
    await fs.writeFile(path.join(this.dir, 'archive', `fullchain${n}.pem`), pair.cert);
    await fs.writeFile(path.join(this.dir, 'archive', `privkey${n}.pem`), pair.key, { mode: 0o600 });
    for (const [name, target] of [
      ['fullchain.pem', `fullchain${n}.pem`],
      ['privkey.pem', `privkey${n}.pem`],
    ] as const) {
      const tmp = path.join(this.dir, 'live', `.${name}.new`);
      await fs.symlink(path.join('..', 'archive', target), tmp);
      await fs.rename(tmp, path.join(this.dir, 'live', name));
    }
  }
}

describe('TLS certificate renewal without a restart', { timeout: 120_000 }, () => {
  let relay: Relay;
  let certbot: CertbotDir;
  let certDir: string;
  let implicitPort: number;
  let metricsPort: number;
  const pairs: CertPair[] = [];

  /** A pair of its own with a distinct expiry (so the metric tells them apart). */
  const pair = (i: number) => pairs[i]!;

  before(async () => {
    for (let i = 0; i < 4; i++) {
      pairs.push(
        await makeCert({ commonName: `relay${i}.test`, notAfter: new Date(Date.now() + (100 + i) * DAY) }),
      );
    }
    certDir = await makeTempDir('smarthost-tls');
    certbot = new CertbotDir(certDir);
    await certbot.renew(pair(0));
    implicitPort = await freePort();
    metricsPort = await freePort();
    relay = await startRelay({
      config: {
        listen: [{ host: '127.0.0.1' }, { host: '127.0.0.1', port: implicitPort, implicitTls: true }],
        // Not watched here, so what the reload and SIGHUP do is seen alone (the watch is below).
        tls: { cert: certbot.cert, key: certbot.key, watch: false },
        metrics: { host: '127.0.0.1', port: metricsPort },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    if (certDir) await removeTempDir(certDir);
  });

  async function served(): Promise<{ starttls: string; implicit: string }> {
    const a = await tlsSession(relay.port, 'starttls');
    const b = await tlsSession(implicitPort, 'implicit');
    a.close();
    b.close();
    return { starttls: a.fingerprint, implicit: b.fingerprint };
  }

  async function expiryMetric(): Promise<number | undefined> {
    const { body } = await httpGet(metricsPort, '/metrics');
    return metricValue(body, EXPIRY_METRIC, { cert: certbot.cert });
  }

  const notAfterSeconds = (p: CertPair) => Math.floor(Date.parse(new X509Certificate(p.cert).validTo) / 1000);

  test('at start: the configured certificate on both listeners, its expiry on /metrics', async () => {
    assert.deepEqual(await served(), { starttls: fingerprint(pair(0)), implicit: fingerprint(pair(0)) });
    assert.equal(await expiryMetric(), notAfterSeconds(pair(0)));
  });

  test('renewed, then `smarthost reload`: new connections get it, an open session goes on', async () => {
    const open = await tlsSession(relay.port, 'starttls');
    assert.equal(open.fingerprint, fingerprint(pair(0)));
    assert.match(await open.command('EHLO client.test'), /^250/);

    await certbot.renew(pair(1));
    const since = relay.output().length;
    const reload = await runCli(['reload', '-c', relay.configFile], { cwd: relay.dir });
    assert.equal(reload.code, 0, show(reload));
    assert.match(reload.stdout, /TLS: new certificate in force: .*relay1\.test/, show(reload));

    assert.deepEqual(await served(), { starttls: fingerprint(pair(1)), implicit: fingerprint(pair(1)) });
    // The session opened before the renewal still works, on its own handshake.
    assert.match(await open.command('MAIL FROM:<app@corp.example>'), /^250 /);
    assert.match(await open.command('RSET'), /^250 /);
    open.close();

    const line = await relay.waitForOutput(/^.*"event":"tls_reloaded".*$/m, 5_000, { since });
    assert.match(line[0], /relay1\.test/, 'the log line names the new subject');
    assert.match(line[0], /"notAfter":"20\d\d-/, 'and its expiry');
    assert.equal(await expiryMetric(), notAfterSeconds(pair(1)));
  });

  test('renewed, then SIGHUP', async () => {
    await certbot.renew(pair(2));
    const since = relay.output().length;
    relay.process.kill('SIGHUP');
    await relay.waitForOutput(
      /"event":"tls_reloaded".*relay2\.test|relay2\.test.*"event":"tls_reloaded"/,
      5_000,
      {
        since,
      },
    );
    assert.deepEqual(await served(), { starttls: fingerprint(pair(2)), implicit: fingerprint(pair(2)) });
  });

  test('a bad pair is refused with the reason and the old certificate stays', async () => {
    const expired = await makeCert({
      commonName: 'expired.test',
      notBefore: new Date(Date.now() - 30 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    const cases: { name: string; pair: { cert: string; key: string }; reason: RegExp }[] = [
      {
        name: 'key of another certificate',
        pair: { cert: pair(3).cert, key: pair(0).key },
        reason: /does not belong/,
      },
      {
        name: 'garbage certificate',
        pair: { cert: 'not a certificate\n', key: pair(3).key },
        reason: /not a certificate/,
      },
      {
        name: 'garbage key',
        pair: { cert: pair(3).cert, key: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' },
        reason: /not a private key/,
      },
      { name: 'expired', pair: expired, reason: /expired on/ },
    ];
    for (const c of cases) {
      await certbot.renew(c.pair);
      const since = relay.output().length;
      const reload = await runCli(['reload', '-c', relay.configFile], { cwd: relay.dir });
      assert.equal(reload.code, 1, `${c.name}: ${show(reload)}`);
      assert.match(reload.stderr, c.reason, `${c.name}: ${show(reload)}`);
      assert.match(reload.stderr, /the one in use stays/, c.name);
      const line = await relay.waitForOutput(/^.*"event":"tls_reload_failed".*$/m, 5_000, { since });
      assert.match(line[0], /"path":"[^"]+\.pem"/, `${c.name}: the line names the file`);
      assert.deepEqual(
        await served(),
        { starttls: fingerprint(pair(2)), implicit: fingerprint(pair(2)) },
        c.name,
      );
    }
    assert.doesNotMatch(relay.output(), /PRIVATE KEY|AAAA/, 'no key material in the log');
    assert.equal(await expiryMetric(), notAfterSeconds(pair(2)), 'the metric still shows the pair in use');
    // A good pair after the bad ones is taken again.
    await certbot.renew(pair(3));
    const reload = await runCli(['reload', '-c', relay.configFile], { cwd: relay.dir });
    assert.equal(reload.code, 0, show(reload));
    assert.deepEqual(await served(), { starttls: fingerprint(pair(3)), implicit: fingerprint(pair(3)) });
    assert.equal(await expiryMetric(), notAfterSeconds(pair(3)));
  });
});

describe('TLS certificate renewal picked up by the watch alone', { timeout: 60_000 }, () => {
  let relay: Relay;
  let certDir: string;
  let certbot: CertbotDir;

  after(async () => {
    await relay?.stop();
    if (certDir) await removeTempDir(certDir);
  });

  test('certbot swaps the symlinks, nothing else: new connections get the new pair', async () => {
    const first = await makeCert({ commonName: 'first.test' });
    const renewed = await makeCert({ commonName: 'renewed.test' });
    certDir = await makeTempDir('smarthost-tls-watch');
    certbot = new CertbotDir(certDir);
    await certbot.renew(first);
    relay = await startRelay({ config: { tls: { cert: certbot.cert, key: certbot.key } } });
    assert.equal((await tlsSession(relay.port, 'starttls')).fingerprint, fingerprint(first));

    const since = relay.output().length;
    await certbot.renew(renewed);
    await relay.waitForOutput(/"event":"tls_reloaded"/, 10_000, { since });
    const session = await tlsSession(relay.port, 'starttls');
    session.close();
    assert.equal(session.fingerprint, fingerprint(renewed));
  });

  test('a file rewritten in place (cp over it) is picked up too', async () => {
    const copied = await makeCert({ commonName: 'copied.test' });
    const since = relay.output().length;
    // Through the symlinks, into the archive files: the folders of both are watched.
    await fs.writeFile(certbot.key, copied.key);
    await fs.writeFile(certbot.cert, copied.cert);
    await relay.waitForOutput(
      /"event":"tls_reloaded".*copied\.test|copied\.test.*"event":"tls_reloaded"/,
      10_000,
      {
        since,
      },
    );
    const session = await tlsSession(relay.port, 'starttls');
    session.close();
    assert.equal(session.fingerprint, fingerprint(copied));
  });
});

describe('check-config and start check the certificate', { timeout: 60_000 }, () => {
  let dir: string;
  let good: CertPair;
  let other: CertPair;

  before(async () => {
    dir = await makeTempDir('smarthost-tls-check');
    good = await makeCert({ commonName: 'good.test' });
    other = await makeCert({ commonName: 'other.test' });
  });

  after(async () => {
    if (dir) await removeTempDir(dir);
  });

  /** Writes the files (undefined: left out) and a config naming them; returns the config file. */
  async function setup(name: string, pair: { cert?: string; key?: string }): Promise<string> {
    const sub = path.join(dir, name);
    await fs.mkdir(sub, { recursive: true });
    const cert = path.join(sub, 'cert.pem');
    const key = path.join(sub, 'key.pem');
    if (pair.cert !== undefined) await fs.writeFile(cert, pair.cert);
    if (pair.key !== undefined) await fs.writeFile(key, pair.key, { mode: 0o600 });
    const file = path.join(sub, 'smarthost.yml');
    await fs.writeFile(
      file,
      YAML.stringify({
        listen: [{ port: await freePort() }],
        tls: { cert, key },
        spool: { dir: path.join(sub, 'data') },
      }),
    );
    return file;
  }

  test('a good pair passes', async () => {
    const result = await runCli(['check-config', '-q', '-c', await setup('good', good)]);
    assert.equal(result.code, 0, show(result));
    assert.equal(result.stderr, '', show(result));
  });

  test('a missing certificate fails and names the file', async () => {
    const result = await runCli(['check-config', '-c', await setup('missing', { key: good.key })]);
    assert.equal(result.code, 1, show(result));
    assert.match(
      result.stderr,
      /missing\/cert\.pem: the certificate \(tls\.cert\) does not exist/,
      show(result),
    );
  });

  test('a key that is not the certificate’s fails', async () => {
    const result = await runCli([
      'check-config',
      '-q',
      '-c',
      await setup('mismatch', { cert: good.cert, key: other.key }),
    ]);
    assert.equal(result.code, 1, show(result));
    assert.match(
      result.stderr,
      /key\.pem: this private key does not belong to the certificate/,
      show(result),
    );
  });

  test('an expired certificate fails; one expiring within 14 days warns', async () => {
    const expired = await makeCert({
      notBefore: new Date(Date.now() - 90 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    const failed = await runCli(['check-config', '-q', '-c', await setup('expired', expired)]);
    assert.equal(failed.code, 1, show(failed));
    assert.match(failed.stderr, /the certificate expired on \d{4}-\d\d-\d\d; renew it/, show(failed));

    const soon = await makeCert({ notAfter: new Date(Date.now() + 5 * DAY) });
    const warned = await runCli(['check-config', '-q', '-c', await setup('soon', soon)]);
    assert.equal(warned.code, 0, show(warned));
    assert.match(warned.stderr, /WARNING: .*expires \d{4}-\d\d-\d\d \(in [45] days\)/, show(warned));
  });

  test('start refuses a mismatched pair with the reason', async () => {
    const result = await runCli([
      'start',
      '-c',
      await setup('start-mismatch', { cert: good.cert, key: other.key }),
    ]);
    assert.equal(result.code, 1, show(result));
    assert.match(
      result.stdout + result.stderr,
      /could not start: .*does not belong to the certificate/,
      show(result),
    );
  });
});
