// The bench's own plumbing: clean-up of everything it starts, temp dirs, ports, waiting, and
// memory sampling. Shared by bench.mjs (smarthost against Postfix) and ab.mjs (two builds).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

// --- clean-up: whatever happens, stop what we started ------------------------------------------

export const cleanups = [];
let cleaned = false;
export function cleanupAll() {
  if (cleaned) return;
  cleaned = true;
  for (const fn of cleanups.reverse()) {
    try {
      fn();
    } catch {
      // keep going
    }
  }
}
process.on('exit', cleanupAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`\n${path.basename(process.argv[1] ?? 'bench')}: ${signal}, stopping everything`);
    cleanupAll();
    process.exit(130);
  });
}

export function track(child) {
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

export function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `smarthost-bench-${prefix}-`));
  fs.chmodSync(dir, 0o755); // Postfix's unprivileged processes must traverse it
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// --- small helpers -----------------------------------------------------------------------------

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const now = () => performance.now();

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function which(cmd) {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const file = path.join(dir, cmd);
    if (fs.existsSync(file)) return file;
  }
  return undefined;
}

export async function waitUntil(predicate, timeoutMs, what) {
  const deadline = now() + timeoutMs;
  while (now() < deadline) {
    if (await predicate()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Resolves the first reply line of an SMTP greeting, or rejects. */
export function greeting(port, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('no greeting'));
    }, timeoutMs);
    s.once('data', (d) => {
      clearTimeout(timer);
      s.end('QUIT\r\n');
      resolve(d.toString());
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

export async function waitGreeting(port, timeoutMs) {
  await waitUntil(
    () =>
      greeting(port).then(
        () => true,
        () => false,
      ),
    timeoutMs,
    `an SMTP greeting on port ${port}`,
  );
}

/** Proportional set size (kB) of a process: shared pages split between their users. */
export function pssKb(pid) {
  try {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return Number(/^Pss:\s+(\d+)/m.exec(text)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** The fields of /proc/<pid>/stat from field 3 (state) on; undefined once the process is gone. */
export function statFields(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/**
 * The direct children of a process, read from /proc in this process. Not through `pgrep`: the
 * memory sampler asks ten times a second, and a program started that often took 8 % of the
 * machine, uncounted ("other work"), during Postfix's runs only.
 */
export function childrenOf(pid) {
  let tasks;
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return []; // gone
  }
  try {
    const children = [];
    for (const task of tasks) {
      const list = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8');
      for (const child of list.split(' ')) if (child.trim()) children.push(Number(child));
    }
    return children;
  } catch {
    return childrenByScan(pid);
  }
}

/** childrenOf without /proc/<pid>/task/<tid>/children (a kernel built without it). */
function childrenByScan(pid) {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry) && statFields(entry)?.[1] === String(pid)) // field 4: the parent
    .map(Number);
}

/** Samples the memory of a server (its processes' PSS, summed) and keeps the peak. */
export class MemorySampler {
  constructor(pids) {
    this.pids = pids;
    this.peak = 0;
    this.timer = undefined;
  }
  current() {
    return this.pids().reduce((sum, pid) => sum + pssKb(pid), 0);
  }
  start() {
    this.peak = this.current();
    this.timer = setInterval(() => {
      this.peak = Math.max(this.peak, this.current());
    }, 100);
    return this;
  }
  stop() {
    clearInterval(this.timer);
    this.peak = Math.max(this.peak, this.current());
    return this.peak;
  }
}
