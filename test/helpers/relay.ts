// Runs the real relay (`bin/smarthost.js start -c <file>`) as a child process on a temporary
// config and spool, and waits until it answers SMTP. Children are killed when the test process
// exits, so a failed test never leaves a relay behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { freePort, makeTempDir } from './tmp.js';

export { freePort, makeTempDir, makeTempDirSync, removeTempDir } from './tmp.js';

/** The repository root: this file runs from <repo>/dist/test/helpers/. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const RELAY_BIN = path.join(REPO_ROOT, 'bin', 'smarthost.js');

export interface StartRelayOptions {
  /** The smarthost.yml content; hostname, listen, spool.dir and log.level are filled in if absent. */
  config: Record<string, unknown>;
  /** Working directory holding smarthost.yml (and data/ by default); a new temp dir if absent. */
  dir?: string;
  /** Extra environment. SMARTHOST_* variables of the test process itself are not passed on. */
  env?: Record<string, string>;
  /** Script run instead of bin/smarthost.js (used by the harness's own tests). */
  bin?: string;
  /** Extra arguments after `start -c <file>`. */
  args?: string[];
  /** How long to wait for the first SMTP reply, default 15 s. */
  readyTimeoutMs?: number;
}

export interface Relay {
  readonly dir: string;
  readonly configFile: string;
  /** The written config, defaults included. */
  readonly config: Record<string, unknown>;
  /** listen[0]'s host and port (the probe target). */
  readonly host: string;
  readonly port: number;
  readonly spoolDir: string;
  /** The current child (a new one after restart()). */
  readonly process: ChildProcess;
  /** Everything the relay wrote to stdout and stderr, over all runs. */
  output(): string;
  /** Where the current run's output starts in output(). */
  readonly runOffset: number;
  /** Whether the current child is still running. */
  readonly running: boolean;
  /** Sends `signal` (default SIGKILL) and resolves once the child has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM, then resolves the exit code (null if it died of a signal); SIGKILL and rejects after `timeoutMs` (default 15 s). */
  stop(timeoutMs?: number): Promise<number | null>;
  /** Stops the relay if still running (SIGTERM), then starts it again with the same config. */
  restart(): Promise<void>;
  /**
   * Resolves the first match of `regex` in the output of the current run (or from `opts.since`,
   * an offset into output()); rejects after `timeoutMs` (default 10 s) or when the relay exits.
   */
  waitForOutput(regex: RegExp, timeoutMs?: number, opts?: { since?: number }): Promise<RegExpMatchArray>;
}

/** Thrown by startRelay/restart when the relay exits or never answers; carries its output. */
export class RelayStartError extends Error {
  constructor(
    message: string,
    readonly output: string,
    readonly exitCode: number | null | undefined,
    readonly signal: NodeJS.Signals | null | undefined,
  ) {
    super(`${message}\n--- relay output ---\n${output}--- end of relay output ---`);
    this.name = 'RelayStartError';
  }
}

// --- child tracking -----------------------------------------------------------------------------

const children = new Set<ChildProcess>();
let exitHookInstalled = false;

function killAllSync(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killAllSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    // Only when nobody else handles the signal, so the default behaviour (exit) is kept.
    if (process.listenerCount(signal) > 0) continue;
    process.once(signal, () => {
      killAllSync();
      process.kill(process.pid, signal);
    });
  }
}

/** Kills (SIGKILL) every relay this process started and waits for them to exit. */
export async function killAllRelays(): Promise<void> {
  const running = [...children];
  await Promise.all(running.map((child) => killChild(child, 'SIGKILL')));
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const exits = new WeakMap<ChildProcess, Promise<Exit>>();

function exited(child: ChildProcess): Promise<Exit> {
  let pending = exits.get(child);
  if (!pending) {
    pending =
      child.exitCode !== null || child.signalCode !== null
        ? Promise.resolve({ code: child.exitCode, signal: child.signalCode })
        : // 'close' rather than 'exit': it comes after stdout/stderr are drained, so output() is complete.
          new Promise<Exit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
    exits.set(child, pending);
  }
  return pending;
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

async function killChild(child: ChildProcess, signal: NodeJS.Signals): Promise<Exit> {
  const done = exited(child);
  if (isRunning(child)) child.kill(signal);
  return done;
}

// --- config -------------------------------------------------------------------------------------

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function withDefaults(config: Record<string, unknown>, dir: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = structuredClone(config);
  out.hostname ??= 'relay.test';
  if (!Array.isArray(out.listen) || out.listen.length === 0) {
    out.listen = [{ host: '127.0.0.1', port: await freePort() }];
  } else {
    out.listen = await Promise.all(
      out.listen.map(async (entry: unknown) =>
        isRecord(entry) && entry.port === undefined
          ? { ...entry, port: await freePort(typeof entry.host === 'string' ? entry.host : '127.0.0.1') }
          : entry,
      ),
    );
  }
  const spool = isRecord(out.spool) ? out.spool : {};
  out.spool = { ...spool, dir: spool.dir ?? path.join(dir, 'data') };
  const log = isRecord(out.log) ? out.log : {};
  out.log = { ...log, level: log.level ?? 'debug' };
  return out;
}

function childEnv(extra: Record<string, string> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('SMARTHOST_') || key === 'NODE_TEST_CONTEXT' || key === 'FORCE_COLOR') continue;
    env[key] = value;
  }
  env.NO_COLOR = '1';
  return { ...env, ...extra };
}

// --- readiness probe ----------------------------------------------------------------------------

/** Connects once and resolves the first complete SMTP reply, or rejects. */
function probeOnce(host: string, port: number, implicitTls: boolean, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: net.Socket = implicitTls
      ? tls.connect({ host, port, rejectUnauthorized: false })
      : net.connect({ host, port });
    let buffer = '';
    const finish = (err: Error | undefined, reply?: string) => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      socket.on('error', () => undefined);
      if (reply !== undefined && !socket.destroyed) {
        socket.end('QUIT\r\n');
        setTimeout(() => socket.destroy(), 200).unref();
      } else {
        socket.destroy();
      }
      if (err) reject(err);
      else resolve(reply ?? '');
    };
    const timer = setTimeout(() => finish(new Error('no greeting')), timeoutMs);
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new Error('closed before the greeting')));
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      const line = buffer.split(/\r?\n/).find((l) => /^\d{3}(?: |$)/.test(l));
      if (line !== undefined) finish(undefined, line);
    });
  });
}

// --- the relay ----------------------------------------------------------------------------------

/** The relay's last start-up line (src/relay.ts), in either log format. */
const STARTED = /smarthost started \(config: /;

class RelayProcess implements Relay {
  private child!: ChildProcess;
  private out = '';
  private offset = 0;
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly dir: string,
    readonly configFile: string,
    readonly config: Record<string, unknown>,
    readonly host: string,
    readonly port: number,
    readonly implicitTls: boolean,
    readonly spoolDir: string,
    private readonly bin: string,
    private readonly args: string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly readyTimeoutMs: number,
  ) {}

  /** Whether the relay's log level (SMARTHOST_LOG_LEVEL wins) prints the info-level "started" line. */
  private get logsStarted(): boolean {
    const log = this.config.log;
    const level = this.env.SMARTHOST_LOG_LEVEL ?? (isRecord(log) ? log.level : undefined);
    return level === 'debug' || level === 'info';
  }

  /** The relay's greetings and greeting-time refusals carry its hostname and banner. */
  private isOwnGreeting(line: string): boolean {
    const hostname = typeof this.config.hostname === 'string' ? this.config.hostname : undefined;
    return /ESMTP smarthost/.test(line) || (hostname !== undefined && line.includes(hostname));
  }

  get process(): ChildProcess {
    return this.child;
  }

  get runOffset(): number {
    return this.offset;
  }

  get running(): boolean {
    return isRunning(this.child);
  }

  output(): string {
    return this.out;
  }

  private append(text: string): void {
    this.out += text;
    if (process.env.SMARTHOST_TEST_ECHO === '1') process.stderr.write(text);
    for (const listener of [...this.listeners]) listener();
  }

  async launch(): Promise<void> {
    installExitHook();
    this.offset = this.out.length;
    const child = spawn(process.execPath, [this.bin, 'start', '-c', this.configFile, ...this.args], {
      cwd: this.dir,
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    children.add(child);
    child.stdout?.on('data', (chunk: Buffer) => this.append(chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => this.append(chunk.toString('utf8')));
    child.once('error', (err) => this.append(`[harness] spawn error: ${err.message}\n`));
    void exited(child).then(() => {
      children.delete(child);
      // Let the output waiters see that the process is gone.
      for (const listener of [...this.listeners]) listener();
    });
    await this.waitReady(child);
  }

  private async waitReady(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    let lastError = '';
    while (Date.now() < deadline) {
      if (!isRunning(child)) {
        const { code, signal } = await exited(child);
        throw new RelayStartError(
          `relay exited during start-up (code ${code}, signal ${signal})`,
          this.out.slice(this.offset),
          code,
          signal,
        );
      }
      // A greeting alone is not proof: another test's server may have taken the port between
      // freePort() and the relay's bind (the relay then exits with EADDRINUSE, but a probe could
      // already have passed). So the greeting must be the relay's, and where the log level shows
      // it, this run's own "started" line must be there.
      if (this.logsStarted && !STARTED.test(this.out.slice(this.offset))) {
        lastError = 'no "started" line in its output yet';
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      try {
        const greeting = await probeOnce(
          this.host,
          this.port,
          this.implicitTls,
          Math.min(3000, deadline - Date.now()),
        );
        if (this.isOwnGreeting(greeting)) return;
        lastError = `another server answers on this port: ${greeting}`;
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await killChild(child, 'SIGKILL');
    throw new RelayStartError(
      `relay did not answer SMTP on ${this.host}:${this.port} within ${this.readyTimeoutMs} ms (last: ${lastError})`,
      this.out.slice(this.offset),
      child.exitCode,
      child.signalCode,
    );
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await killChild(this.child, signal);
  }

  async stop(timeoutMs = 15_000): Promise<number | null> {
    const child = this.child;
    if (!isRunning(child)) return (await exited(child)).code;
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const result = await Promise.race([exited(child), timedOut]);
    clearTimeout(timer);
    if (result === 'timeout') {
      await killChild(child, 'SIGKILL');
      throw new RelayStartError(
        `relay did not exit within ${timeoutMs} ms of SIGTERM (killed)`,
        this.out.slice(this.offset),
        null,
        'SIGKILL',
      );
    }
    return result.code;
  }

  async restart(): Promise<void> {
    if (this.running) await this.stop();
    this.append('[harness] --- relay restarted ---\n');
    await this.launch();
  }

  waitForOutput(regex: RegExp, timeoutMs = 10_000, opts: { since?: number } = {}): Promise<RegExpMatchArray> {
    const since = opts.since ?? this.offset;
    const child = this.child;
    const search = () => this.out.slice(since).match(regex);
    return new Promise((resolve, reject) => {
      const check = () => {
        const match = search();
        if (match) {
          cleanup();
          resolve(match);
        } else if (!isRunning(child)) {
          cleanup();
          reject(
            new RelayStartError(
              `relay exited (code ${child.exitCode}, signal ${child.signalCode}) before its output matched ${regex}`,
              this.out.slice(since),
              child.exitCode,
              child.signalCode,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new RelayStartError(
            `relay output did not match ${regex} within ${timeoutMs} ms`,
            this.out.slice(since),
            child.exitCode,
            child.signalCode,
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }
}

/** Writes smarthost.yml (defaults filled in), starts the relay and waits until it answers SMTP. */
export async function startRelay(opts: StartRelayOptions): Promise<Relay> {
  const bin = opts.bin ?? RELAY_BIN;
  if (!existsSync(bin)) throw new Error(`startRelay: ${bin} does not exist`);
  const dir = opts.dir ?? (await makeTempDir('smarthost-relay'));
  await fs.mkdir(dir, { recursive: true });
  const config = await withDefaults(opts.config, dir);
  const configFile = path.join(dir, 'smarthost.yml');
  await fs.writeFile(configFile, YAML.stringify(config));
  const first = (config.listen as unknown[])[0];
  const listener = isRecord(first) ? first : {};
  const host = typeof listener.host === 'string' ? listener.host : '127.0.0.1';
  const port = Number(listener.port);
  const spoolDir = path.resolve(dir, String((config.spool as Record<string, unknown>).dir));
  const relay = new RelayProcess(
    dir,
    configFile,
    config,
    host,
    port,
    listener.implicitTls === true,
    spoolDir,
    bin,
    opts.args ?? [],
    childEnv(opts.env),
    opts.readyTimeoutMs ?? 15_000,
  );
  await relay.launch();
  return relay;
}
