// Temporary directories and free loopback ports for tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const tempDirs = new Set<string>();
let cleanupInstalled = false;

/**
 * Creates a fresh directory under the OS temp dir (`<tmp>/<prefix>-XXXXXX`). It is removed when
 * the test process exits, unless SMARTHOST_KEEP_TEST_DIRS=1 (handy to look at a failed run).
 */
export async function makeTempDir(prefix = 'smarthost-test'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${prefix.replace(/[^A-Za-z0-9._-]/g, '_')}-`));
  trackTempDir(dir);
  return dir;
}

/** The synchronous twin of {@link makeTempDir}. */
export function makeTempDirSync(prefix = 'smarthost-test'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `${prefix.replace(/[^A-Za-z0-9._-]/g, '_')}-`));
  trackTempDir(dir);
  return dir;
}

/** Removes a directory made by {@link makeTempDir} now (also fine if it is already gone). */
export async function removeTempDir(dir: string): Promise<void> {
  tempDirs.delete(dir);
  if (process.env.SMARTHOST_KEEP_TEST_DIRS === '1') return;
  await fs.rm(dir, { recursive: true, force: true });
}

function trackTempDir(dir: string): void {
  tempDirs.add(dir);
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', () => {
    if (process.env.SMARTHOST_KEEP_TEST_DIRS === '1') return;
    for (const d of tempDirs) {
      try {
        rmSync(d, { recursive: true, force: true });
      } catch {
        // best effort at exit
      }
    }
  });
}

/**
 * A TCP port that was free on `host` a moment ago. It is drawn at random from 20000-32767, below
 * Linux's ephemeral range (32768-60999), and bind-checked: the servers tests start with port 0
 * (ESP stand-ins, token endpoints) and every outgoing connection take their ports from the
 * ephemeral range, so they cannot take this port in the moment between the check and the relay's
 * own bind. Another test process drawing the same number at the same moment is the race left.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = FREE_PORT_LOW + Math.floor(Math.random() * (FREE_PORT_HIGH - FREE_PORT_LOW));
    if (await bindable(host, port)) return port;
    if (attempt === 50) throw new Error(`freePort: no free port on ${host} after 50 tries`);
  }
}

const FREE_PORT_LOW = 20000;
const FREE_PORT_HIGH = 32768;

function bindable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(false) : reject(err),
    );
    server.listen({ host, port, exclusive: true }, () =>
      server.close((err) => (err ? reject(err) : resolve(true))),
    );
  });
}
