// Helpers for the admin CLI tests: run `node bin/smarthost.js …` as a child process, and hold
// an SMTP session open step by step (to show that a reload does not drop it).
import { spawn } from 'node:child_process';
import net from 'node:net';
import { RELAY_BIN } from '../helpers/relay.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with `args`; `input` is written to its stdin (then closed). Never throws on exit codes. */
export function runCli(
  args: string[],
  opts: { cwd?: string; input?: string; env?: Record<string, string>; uid?: number; gid?: number } = {},
): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('SMARTHOST_') || key === 'NODE_TEST_CONTEXT') continue;
    env[key] = value;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RELAY_BIN, ...args], {
      cwd: opts.cwd,
      env: { ...env, NO_COLOR: '1', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid ?? opts.uid } : {}),
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
    child.stdin.end(opts.input ?? '');
  });
}

/** For assertion messages. */
export function show(result: CliResult): string {
  return `exit ${result.code}\n--- stdout ---\n${result.stdout}--- stderr ---\n${result.stderr}`;
}

/** An SMTP session driven one command at a time. */
export interface StepSession {
  greeting: string;
  send(line: string): Promise<string>;
  close(): void;
}

export async function openSession(port: number, localAddress?: string): Promise<StepSession> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  let buffer = '';
  let lines: string[] = [];
  const replies: string[] = [];
  let waiter: ((reply: string) => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('latin1');
    let i: number;
    while ((i = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, i).replace(/\r$/, '');
      buffer = buffer.slice(i + 1);
      lines.push(line);
      if (/^\d{3}-/.test(line)) continue;
      const reply = lines.join('\n');
      lines = [];
      if (waiter) {
        const w = waiter;
        waiter = undefined;
        w(reply);
      } else replies.push(reply);
    }
  });
  socket.on('close', () => waiter?.('(connection closed)'));
  const next = () =>
    new Promise<string>((resolve, reject) => {
      const queued = replies.shift();
      if (queued !== undefined) return resolve(queued);
      const timer = setTimeout(() => reject(new Error('no SMTP reply within 10 s')), 10_000);
      waiter = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
    });
  const greeting = await next();
  return {
    greeting,
    send(line: string) {
      socket.write(`${line}\r\n`);
      return next();
    },
    close() {
      socket.destroy();
    },
  };
}
