// The control socket the admin CLI talks to: a Unix socket only its owner may use (mode 0600),
// newline-delimited JSON requests and replies. Commands are plain handlers registered by name,
// so other parts of the relay (stats, metrics) add theirs without touching this file.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from '../log.js';
import { ControlRefusal, MAX_REQUEST_BYTES, type ControlRequest, type ControlResponse } from './protocol.js';

export type ControlHandler = (args: Record<string, unknown>) => unknown;

export class ControlServer {
  private readonly handlers = new Map<string, ControlHandler>();
  private server: net.Server | undefined;
  private readonly connections = new Set<net.Socket>();

  constructor(
    readonly socketPath: string,
    private readonly log: Logger,
  ) {
    this.registerHandler('ping', () => ({ pid: process.pid, commands: [...this.handlers.keys()].sort() }));
  }

  /** Adds (or replaces) the command `name`. A handler may be async; throw ControlRefusal to say no. */
  registerHandler(name: string, handler: ControlHandler): void {
    this.handlers.set(name, handler);
  }

  /** Listens on the socket. A stale socket file (no one answering) from a crash is replaced. */
  async listen(): Promise<void> {
    await fs.mkdir(path.dirname(this.socketPath), { recursive: true, mode: 0o750 });
    if (await answers(this.socketPath)) {
      throw new Error(
        `another process answers on ${this.socketPath} (is another smarthost running on this spool?)`,
      );
    }
    await fs.unlink(this.socketPath).catch(() => undefined);
    const server = net.createServer((socket) => this.serve(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket file is created by listen(): with this umask it is owner-only from the
      // start, not for a moment world-writable until the chmod below.
      const previous = process.umask(0o177);
      try {
        server.listen(this.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(previous);
      }
    });
    await fs.chmod(this.socketPath, 0o600);
    server.on('error', (err) =>
      this.log.error('control socket error', { event: 'control_error', error: err.message }),
    );
    this.server = server;
    this.log.debug(`control socket on ${this.socketPath}`, { event: 'control_listening' });
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const socket of this.connections) socket.end();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.connections) socket.destroy();
    await fs.unlink(this.socketPath).catch(() => undefined);
  }

  private serve(socket: net.Socket): void {
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => undefined);
    socket.setEncoding('utf8');
    let buffer = '';
    let chain = Promise.resolve();
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_REQUEST_BYTES) {
        socket.end(
          `${JSON.stringify({ id: 0, ok: false, error: 'request too large', code: 'bad_request' })}\n`,
        );
        return;
      }
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line.trim()) continue;
        // One at a time per connection, replies in request order.
        chain = chain.then(async () => {
          const response = await this.handle(line);
          if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
        });
      }
    });
  }

  private async handle(line: string): Promise<ControlResponse> {
    let request: ControlRequest;
    try {
      request = JSON.parse(line) as ControlRequest;
      if (typeof request !== 'object' || request === null || typeof request.command !== 'string') {
        throw new Error('expected {"id":1,"command":"…","args":{…}}');
      }
    } catch (err) {
      return { id: 0, ok: false, error: `bad request: ${(err as Error).message}`, code: 'bad_request' };
    }
    const id = typeof request.id === 'number' ? request.id : 0;
    const handler = this.handlers.get(request.command);
    if (!handler) {
      return { id, ok: false, error: `unknown command "${request.command}"`, code: 'unknown' };
    }
    try {
      const args = request.args && typeof request.args === 'object' ? request.args : {};
      return { id, ok: true, result: (await handler(args)) ?? null };
    } catch (err) {
      if (err instanceof ControlRefusal) return { id, ok: false, error: err.message, code: 'refused' };
      this.log.error(`control command ${request.command} failed`, {
        event: 'control_error',
        command: request.command,
        error: (err as Error).message,
      });
      return { id, ok: false, error: (err as Error).message, code: 'internal' };
    }
  }
}

/** Whether something accepts connections on the socket. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
