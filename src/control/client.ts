// The admin CLI's side of the control socket: find the socket a config's relay listens on,
// send one request, wait for its reply.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { ControlResponse } from './protocol.js';

/** Nobody listens on the socket: the relay is not running (or runs with another spool). */
export class RelayNotRunning extends Error {
  constructor(readonly socketPath: string) {
    super(`the relay is not running (nothing answers on ${socketPath})`);
    this.name = 'RelayNotRunning';
  }
}

/** The relay answered, and said no. */
export class ControlError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

/**
 * Where the relay using this config file listens, as load.ts works it out (control.socket, else
 * <spool.dir>/control.sock, relative paths from the file's folder). Read leniently: even a
 * config that no longer validates (or parses) still names its socket, so `smarthost reload` can
 * reach the relay to report what is wrong with it.
 */
export function controlSocketPath(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const baseDir = file ? path.dirname(file) : process.cwd();
  let socket: unknown;
  let spoolDir: unknown;
  if (file) {
    try {
      const doc = parseDocument(readFileSync(file, 'utf8'));
      socket = doc.getIn(['control', 'socket']);
      spoolDir = doc.getIn(['spool', 'dir']);
    } catch {
      // unreadable: the defaults below
    }
  }
  if (typeof socket === 'string' && socket) return path.resolve(baseDir, socket);
  if (env.SMARTHOST_SPOOL_DIR) spoolDir = env.SMARTHOST_SPOOL_DIR;
  const dir = typeof spoolDir === 'string' && spoolDir ? spoolDir : './data';
  return path.join(path.resolve(baseDir, dir), 'control.sock');
}

let nextId = 1;

/**
 * Sends one command and resolves its result. Throws RelayNotRunning when no relay listens,
 * ControlError when it answers with an error.
 */
export function controlRequest(
  socketPath: string,
  command: string,
  args: Record<string, unknown> = {},
  timeoutMs = 60_000,
): Promise<unknown> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let buffer = '';
    let settled = false;
    const finish = (err: Error | undefined, result?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(result);
    };
    const timer = setTimeout(
      () => finish(new ControlError(`no answer from the relay within ${Math.round(timeoutMs / 1000)}s`)),
      timeoutMs,
    );
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write(`${JSON.stringify({ id, command, args })}\n`));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTSOCK') {
        finish(new RelayNotRunning(socketPath));
      } else if (err.code === 'EACCES' || err.code === 'EPERM') {
        finish(
          new ControlError(
            `permission denied on ${socketPath}: run this as the user the relay runs as (or root)`,
            'refused',
          ),
        );
      } else {
        finish(new ControlError(`control socket ${socketPath}: ${err.message}`));
      }
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const newline = buffer.indexOf('\n');
      if (newline < 0) return;
      let response: ControlResponse;
      try {
        response = JSON.parse(buffer.slice(0, newline)) as ControlResponse;
      } catch {
        finish(new ControlError('the relay sent a reply that is not JSON'));
        return;
      }
      if (response.ok) finish(undefined, response.result);
      else finish(new ControlError(response.error, response.code));
    });
    socket.on('close', () =>
      finish(new ControlError('the relay closed the control connection without a reply')),
    );
  });
}
