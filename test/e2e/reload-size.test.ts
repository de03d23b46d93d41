// Issue 13's acceptance for the size limit: after a reload to `maxMessageSize: 40MB`, EHLO
// advertises it and `MAIL FROM ... SIZE=30000000` is accepted, on a session opened afterwards.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';
import { openConversation } from './relay-common.js';

describe('reload: maxMessageSize applies to EHLO and MAIL at once', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({ config: { limits: { maxMessageSize: '25MB' } } });
  });

  after(async () => {
    await relay?.stop();
  });

  async function sizeAndMail(): Promise<{ size: string | undefined; mail: string }> {
    const c = await openConversation(relay.port);
    try {
      const ehlo = await c.command('EHLO client.test');
      const mail = await c.command('MAIL FROM:<app@corp.example> SIZE=30000000');
      return { size: /^250[ -]SIZE (\d+)$/m.exec(ehlo)?.[1], mail };
    } finally {
      c.destroy();
    }
  }

  test('25MB, then a reload to 40MB', async () => {
    const before = await sizeAndMail();
    assert.equal(before.size, String(25 * 1024 * 1024));
    assert.match(before.mail, /^552 /);

    const config = YAML.parse(await fs.readFile(relay.configFile, 'utf8')) as Record<
      string,
      Record<string, unknown>
    >;
    config.limits = { ...config.limits, maxMessageSize: '40MB' };
    await fs.writeFile(relay.configFile, YAML.stringify(config));
    const reload = await runCli(['reload', '-c', relay.configFile], { cwd: relay.dir });
    assert.equal(reload.code, 0, show(reload));

    const after = await sizeAndMail();
    assert.equal(after.size, String(40 * 1024 * 1024));
    assert.match(after.mail, /^250 /);
  });
});
