// Runs the real CLI under the name `sendmail`: a symlink named sendmail in a temp folder to
// bin/smarthost.js, as an admin installs it in /usr/sbin, with SMARTHOST_CONFIG set.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { startEsp, type Esp } from '../helpers/esp.js';
import { makeTempDir, RELAY_BIN, startRelay, type Relay } from '../helpers/relay.js';
import { upstreamFor } from './relay-common.js';

export interface SendmailRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A folder holding `sendmail -> bin/smarthost.js`; returns the symlink's path. */
export async function sendmailSymlink(): Promise<string> {
  const dir = await makeTempDir('smarthost-sbin');
  const link = path.join(dir, 'sendmail');
  await fs.symlink(RELAY_BIN, link);
  return link;
}

/** Runs `link args…` with `input` on stdin and SMARTHOST_CONFIG=`config` (unless env says otherwise). */
export function runSendmail(
  link: string,
  args: string[],
  input: string | Buffer,
  opts: { config?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<SendmailRun> {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('SMARTHOST_') || key === 'NODE_TEST_CONTEXT') continue;
    env[key] = value;
  }
  if (opts.config) env.SMARTHOST_CONFIG = opts.config;
  return new Promise((resolve, reject) => {
    // node keeps the script's name as given (argv[1]): the program sees it is `sendmail`.
    const child = spawn(process.execPath, [link, ...args], {
      cwd: opts.cwd,
      env: { ...env, NO_COLOR: '1', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.once('error', reject);
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/**
 * The ESP stand-in, a relay delivering to it whose `sendmail` source may send to example.com
 * and corp.example only, and a `sendmail` symlink to the CLI.
 */
export async function startSendmailRelay(): Promise<{ esp: Esp; relay: Relay; link: string }> {
  const esp = await startEsp();
  const relay = await startRelay({
    config: {
      upstream: upstreamFor(esp),
      queue: { retry: ['1s'] },
      sendmail: { allowedRecipientDomains: ['example.com', 'corp.example'] },
    },
  });
  return { esp, relay, link: await sendmailSymlink() };
}
