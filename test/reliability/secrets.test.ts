// Issue 13's "secrets in errors": four broken configs, each with secrets beside the error, go
// through check-config, `smarthost reload` (with the file watcher and SIGHUP) and the relay's
// log; no secret may appear anywhere in what they print.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from '../e2e/cli-common.js';

const SECRETS = ['S3cretPass-a1', 'Cl1entSecret-b2', 'R3freshToken-c3', '87654321', 'hunter2-plain'];

function leaked(text: string): string[] {
  return SECRETS.filter((s) => text.includes(s));
}

/** The four cases, each a config block to add to a valid config. */
const CASES: Record<string, Record<string, unknown>> = {
  'upstream beside upstreams': {
    upstream: { host: 'smtp.example.com', user: 'u', pass: SECRETS[0] },
    upstreams: [
      {
        host: 'smtp.office365.com',
        auth: {
          type: 'oauth2',
          provider: 'microsoft',
          user: 'relay@corp.example',
          tenant: 't',
          clientId: 'c',
          clientSecret: SECRETS[1],
          refreshToken: SECRETS[2],
        },
      },
    ],
  },
  'a numeric pass': { upstream: { host: 'smtp.example.com', user: 'u', pass: Number(SECRETS[3]) } },
  'a plain users[].password': { users: [{ name: 'crm', password: SECRETS[4] }] },
  'a bad port beside a pass': {
    upstream: { host: 'smtp.example.com', port: 99999, user: 'u', pass: SECRETS[0] },
  },
};

describe('secrets never printed in config errors', () => {
  let relay: Relay;
  let good: Record<string, unknown>;

  before(async () => {
    relay = await startRelay({ config: {} });
    good = YAML.parse(await fs.readFile(relay.configFile, 'utf8')) as Record<string, unknown>;
  });

  after(async () => {
    await relay?.stop();
  });

  for (const [name, block] of Object.entries(CASES)) {
    test(`${name}: check-config and reload print no secret`, async () => {
      const file = path.join(relay.dir, `bad-${name.replace(/\W+/g, '-')}.yml`);
      await fs.writeFile(file, YAML.stringify({ ...good, ...block }));
      const checked = await runCli(['check-config', '-c', file], { cwd: relay.dir });
      assert.notEqual(checked.code, 0, show(checked));
      assert.deepEqual(leaked(checked.stdout + checked.stderr), [], show(checked));

      // The running relay's own file, broken the same way: the watcher, SIGHUP and reload.
      const since = relay.output().length;
      await fs.writeFile(relay.configFile, YAML.stringify({ ...good, ...block }));
      await relay.waitForOutput(/reload refused|reload_failed/, 10_000, { since });
      relay.process.kill('SIGHUP');
      const reload = await runCli(['reload', '-c', relay.configFile], { cwd: relay.dir });
      assert.equal(reload.code, 1, show(reload));
      assert.deepEqual(leaked(reload.stdout + reload.stderr), [], show(reload));
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(leaked(relay.output()), [], 'a secret in the relay log');
      await fs.writeFile(relay.configFile, YAML.stringify(good));
    });
  }
});
