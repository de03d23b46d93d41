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
 * A TCP port that was free on `host` a moment ago (bind to port 0, read it, close). There is a
 * small race with other processes; good enough for tests on loopback.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
