// A reload (`smarthost reload`, SIGHUP, a changed file) applies changes to the upstream section
// without a restart: a rotated password (passFile), another ESP with other credentials. Mail
// queued before the reload goes out through the new upstream; a reload that leaves the upstream
// alone keeps the courier and its pooled connection. The first part runs the real relay and the
// real CLI against two ESP stand-ins; the second builds the Relay in-process to look at which
// courier it holds.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { ConfigReloader } from '../../src/config/watch.js';
import { OutboxCourier } from '../../src/delivery/outbox-courier.js';
import { ThreadedCourier } from '../../src/delivery/courier-thread.js';
import { silentLogger } from '../../src/log.js';
import { Relay as InProcessRelay } from '../../src/relay.js';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp, type EspMessage } from '../helpers/esp.js';
import { makeTempDir, startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';
import { explained, upstreamFor, waitUntil } from './relay-common.js';
import { events } from './upstream-common.js';

describe('reload: upstream changes take effect without a restart', () => {
  let espA: Esp;
  let espB: Esp;
  let relay: Relay;
  let passFile: string;
  /** The passwords ESP A takes now (an ESP revokes the old key when it issues a new one). */
  let validA = new Set(['key-1']);
  /** Which password each ESP session logged in with. */
  const loginPassword = new Map<string, string>();

  /** The relay's config as written, with `changes` applied. */
  function configWith(changes: Record<string, unknown>): Record<string, unknown> {
    return { ...structuredClone(relay.config), ...changes };
  }

  async function reloadWith(config: Record<string, unknown>): Promise<string> {
    await fs.writeFile(relay.configFile, YAML.stringify(config));
    const result = await runCli(['reload', '-c', relay.configFile], { cwd: relay.dir });
    assert.equal(result.code, 0, show(result));
    assert.match(result.stdout, /reloaded/, show(result));
    assert.doesNotMatch(result.stderr, /restart/, 'an upstream change needs no restart');
    return result.stdout;
  }

  async function send(subject: string): Promise<string> {
    const sent = await sendMail({
      port: relay.port,
      from: 'app@corp.example',
      to: ['customer@example.com'],
      subject,
    });
    assert.ok(
      sent.ok && sent.queueId,
      `accepted with a queue id: ${JSON.stringify(sent.ok ? sent : sent.response)}`,
    );
    return sent.queueId;
  }

  async function arrived(esp: Esp, subject: string): Promise<EspMessage> {
    return explained(
      relay,
      waitUntil(`"${subject}" at the ESP`, () =>
        esp.messages.find((m) => m.raw.includes(`Subject: ${subject}`)),
      ),
    );
  }

  before(async () => {
    espA = await startEsp({
      onAuth: (auth, session) => {
        if (auth.username !== 'apikey' || !validA.has(auth.password ?? '')) return false;
        loginPassword.set(session.id, auth.password!);
        return true;
      },
    });
    espB = await startEsp({ user: 'b-account', pass: 'b-secret' });
    const dir = await makeTempDir('reload-upstream');
    passFile = path.join(dir, 'esp-a.pass');
    await fs.writeFile(passFile, 'key-1\n');
    relay = await startRelay({
      dir,
      config: {
        upstream: {
          host: '127.0.0.1',
          port: espA.port,
          tls: 'starttls',
          user: 'apikey',
          passFile,
          ca: espA.caFile,
          timeout: '10s',
        },
        allowlist: [{ cidr: '127.0.0.1/32', name: 'this-host' }],
        // Far longer than the test: a deferred message goes out again only if the reload sends it.
        queue: { retry: ['1h'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await espA?.close();
    await espB?.close();
  });

  test('a reload that leaves the upstream alone keeps the courier and its pooled connection', async () => {
    await send('before any reload');
    const first = await arrived(espA, 'before any reload');
    // Another allowlist entry: the policy changes, the upstream does not.
    const allowlist = [
      { cidr: '127.0.0.1/32', name: 'this-host' },
      { cidr: '127.0.0.2/32', name: 'other-host' },
    ];
    const said = await reloadWith(configWith({ allowlist }));
    assert.doesNotMatch(said, /upstream changed/, 'the admin is not told of a change that did not happen');
    await relay.waitForOutput(/config reloaded/);
    await send('after a policy reload');
    const second = await arrived(espA, 'after a policy reload');
    assert.equal(second.sessionId, first.sessionId, 'the same pooled connection carried both messages');
    assert.equal(events(relay, 'upstream_changed').length, 0, 'no new courier for an unchanged upstream');
  });

  test('a rotated password (passFile) is used by the next delivery after `smarthost reload`', async () => {
    // The ESP issues a new key and revokes the old one; the admin writes it to the passFile.
    validA = new Set(['key-2']);
    await fs.writeFile(passFile, 'key-2\n');
    const since = relay.output().length;
    // The config text itself is unchanged: only the reload command notices the new key.
    await reloadWith(configWith({}));
    await relay.waitForOutput(/upstream settings changed/, 10_000, { since });
    await send('after the key rotation');
    const message = await arrived(espA, 'after the key rotation');
    assert.equal(loginPassword.get(message.sessionId), 'key-2', 'logged in with the new key');
    assert.equal(message.user, 'apikey');
    assert.doesNotMatch(relay.output(), /key-[12]/, 'the keys are never logged');
  });

  test('a delivery in progress during a switch to another ESP finishes; the next goes to the new ESP', async () => {
    // ESP A holds the end of DATA until told to answer: the delivery is in progress.
    let release!: () => void;
    const answer = new Promise<void>((resolve) => (release = resolve));
    let holding = false;
    espA.onData = async () => {
      holding = true;
      await answer;
      return undefined;
    };
    const inProgress = await send('in progress during the switch');
    await explained(
      relay,
      waitUntil('ESP A holding the message', () => holding),
    );
    const upstreamA = relay.config.upstream;
    await reloadWith(configWith({ upstream: upstreamFor(espB) }));
    await send('after the switch');
    const next = await arrived(espB, 'after the switch');
    assert.equal(next.user, 'b-account');
    assert.equal(espB.authFailures, 0);
    release();
    await arrived(espA, 'in progress during the switch');
    espA.onData = undefined;
    await explained(
      relay,
      waitUntil(`the delivered line of ${inProgress}`, () => events(relay, 'delivered', inProgress)[0]),
    );
    assert.equal(events(relay, 'delivered', inProgress)[0]!.upstream, `127.0.0.1:${espA.port}`);
    assert.equal(
      espB.messages.filter((m) => m.raw.includes('Subject: in progress during the switch')).length,
      0,
      'delivered once, by the ESP it was handed to',
    );
    // Back to ESP A for the next test.
    await reloadWith(configWith({ upstream: upstreamA }));
  });

  test('mail queued before a switch to another ESP goes out through the new one', async () => {
    // ESP A goes away: a message is accepted and deferred (its next retry is an hour away).
    await espA.stop();
    const queued = await send('queued before the switch');
    await explained(
      relay,
      waitUntil(`the deferral of ${queued}`, () => events(relay, 'deferred', queued).length > 0),
    );
    await reloadWith(configWith({ upstream: upstreamFor(espB) }));
    const early = await arrived(espB, 'queued before the switch');
    assert.equal(early.user, 'b-account');
    assert.deepEqual(early.to, ['customer@example.com']);
    // The ESP has the message before the relay has read its 250 and logged the delivery.
    await explained(
      relay,
      waitUntil(`the delivered line of ${queued}`, () => events(relay, 'delivered', queued)[0]),
    );
    const delivered = events(relay, 'delivered', queued);
    assert.equal(delivered.length, 1);
    assert.equal(delivered[0]!.upstream, `127.0.0.1:${espB.port}`);
  });
});

describe('reload: when the relay builds a new courier', () => {
  let dir: string;
  let file: string;
  let passFile: string;
  let relay: InProcessRelay;

  async function writeConfig(changes: Record<string, unknown> = {}): Promise<void> {
    const config = {
      hostname: 'relay.test',
      spool: { dir: path.join(dir, 'data') },
      // Nothing listens here: the relay is never started, so nothing connects.
      upstream: { host: '127.0.0.1', port: 2587, tls: 'starttls', user: 'apikey', passFile },
      allowlist: [{ cidr: '127.0.0.1/32', name: 'this-host' }],
      ...changes,
    };
    await fs.writeFile(file, YAML.stringify(config));
  }

  before(async () => {
    dir = await makeTempDir('reload-courier');
    file = path.join(dir, 'smarthost.yml');
    passFile = path.join(dir, 'esp.pass');
    await fs.writeFile(passFile, 'key-1\n');
    await writeConfig();
    relay = new InProcessRelay({ config: loadConfig(file, {}), log: silentLogger() });
  });

  after(async () => {
    await relay?.courier.close();
  });

  test('an unchanged upstream section keeps the courier; new credentials replace it', async () => {
    const reloader = new ConfigReloader(relay, silentLogger());
    const first = relay.courier;
    assert.ok(first instanceof ThreadedCourier);

    await writeConfig({ allowlist: [{ cidr: '127.0.0.2/32', name: 'other-host' }] });
    assert.equal(reloader.reload('test').ok, true);
    assert.equal(relay.config.allowlist[0]!.cidr, '127.0.0.2/32', 'the new config is in force');
    assert.equal(
      relay.courier,
      first,
      'same courier (and pooled connections) when the upstream is unchanged',
    );

    await fs.writeFile(passFile, 'key-2\n');
    const result = reloader.reload('test');
    assert.equal(result.ok, true);
    assert.deepEqual(result.restartNeeded, [], 'upstream changes need no restart');
    const second = relay.courier;
    assert.notEqual(second, first, 'a new password means a new courier');
    assert.ok(second instanceof ThreadedCourier);
    assert.equal(second.upstreams[0]!.upstream.pass?.reveal(), 'key-2');

    // The policy's size limit reads the courier in force, not the one of the start.
    second.upstreams[0]!.maxSize = 5_000_000;
    assert.equal(relay.policy.upstreamSizeLimit?.(), second.sizeLimit());
    assert.ok(relay.policy.upstreamSizeLimit?.() !== undefined);

    // No upstream at all: capture mode.
    await writeConfig({ upstream: undefined });
    assert.equal(reloader.reload('test').ok, true);
    assert.ok(relay.courier instanceof OutboxCourier);
    assert.equal(relay.policy.upstreamSizeLimit?.(), undefined);
  });

  test('a reload whose upstream cannot be set up is refused and changes nothing', async () => {
    await writeConfig();
    const reloader = new ConfigReloader(relay, silentLogger());
    assert.equal(reloader.reload('test').ok, true);
    const before = relay.courier;
    const config = relay.config;
    await writeConfig({
      upstream: { host: '127.0.0.1', port: 2587, ca: path.join(dir, 'missing-ca.pem') },
      allowlist: [],
    });
    const result = reloader.reload('test');
    assert.equal(result.ok, false);
    assert.match(result.error ?? '', /missing-ca\.pem/);
    assert.equal(relay.courier, before);
    assert.equal(relay.config, config);
  });
  test('a new OAuth2 client secret (clientSecretFile) means a new courier', async () => {
    const secretFile = path.join(dir, 'client-secret');
    await fs.writeFile(secretFile, 'secret-1\n');
    const oauth = {
      host: '127.0.0.1',
      port: 2587,
      tls: 'starttls',
      auth: {
        type: 'oauth2',
        provider: 'microsoft',
        tenant: 'corp.example',
        clientId: 'app-id',
        clientSecretFile: secretFile,
        user: 'relay@corp.example',
      },
    };
    await writeConfig({ upstream: oauth });
    const reloader = new ConfigReloader(relay, silentLogger());
    assert.equal(reloader.reload('test').ok, true);
    const first = relay.courier;
    assert.equal(reloader.reload('test').ok, true);
    assert.equal(relay.courier, first, 'the same secret keeps the courier');
    // The secret is hidden from JSON in the config; the reload must still see it change.
    await fs.writeFile(secretFile, 'secret-2\n');
    assert.equal(reloader.reload('test').ok, true);
    assert.notEqual(relay.courier, first, 'a rotated client secret was not noticed');
    assert.ok(relay.courier instanceof ThreadedCourier);
    assert.equal(relay.courier.upstreams[0]!.upstream.auth?.clientSecret?.reveal(), 'secret-2');
  });
});
