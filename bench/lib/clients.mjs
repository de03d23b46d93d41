// The load: Postfix's smtp-source, and a small client of our own for accept latency and idle
// connections.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { now, sleep, track, which } from './harness.mjs';
import { toolsMeter } from './servers.mjs';

// --- smtp-source -------------------------------------------------------------------------------

/** Runs smtp-source; resolves the wall time in ms. `reuse`: several messages per connection. */
export async function smtpSource(port, { sessions, messages, size, reuse = false, timeoutMs = 600_000 }) {
  const args = [
    ...(reuse ? ['-d'] : []),
    '-s',
    String(sessions),
    '-m',
    String(messages),
    '-l',
    String(size),
    '-f',
    'device@corp.test',
    '-t',
    'someone@example.com',
    '-M',
    'client.bench.test',
    `127.0.0.1:${port}`,
  ];
  const started = now();
  const [cmd, argv] = toolsMeter.wrap(which('smtp-source'), args);
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = await once(child, 'exit');
  clearTimeout(timer);
  if (code !== 0) throw new Error(`smtp-source exited ${code}: ${stderr.slice(0, 500)}`);
  if (stderr.trim()) console.error(`  smtp-source: ${stderr.trim().slice(0, 300)}`);
  return now() - started;
}

// --- our own small client: accept latency and idle connections --------------------------------

export class SmtpLine {
  constructor(socket) {
    this.socket = socket;
    this.buffer = '';
    this.waiters = [];
    this.lines = [];
    socket.on('data', (d) => {
      this.buffer += d.toString('latin1');
      let i;
      while ((i = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, i).replace(/\r$/, '');
        this.buffer = this.buffer.slice(i + 1);
        if (/^\d{3}-/.test(line)) continue;
        const w = this.waiters.shift();
        if (w) w.resolve(line);
        else this.lines.push(line);
      }
    });
    const fail = () => {
      for (const w of this.waiters.splice(0)) w.reject(new Error('connection closed'));
    };
    socket.on('close', fail);
    socket.on('error', fail);
  }
  reply() {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
  async command(text, expect) {
    this.socket.write(text);
    const line = await this.reply();
    if (!line.startsWith(expect)) throw new Error(`${text.trim().slice(0, 30)} → ${line}`);
    return line;
  }
}

export function connect(port, localAddress) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** `conns` persistent sessions, paced to `rate` messages/s in total; times end-of-DATA → 250. */
export async function latencyRun(port, { rate, conns, seconds }) {
  const body =
    'From: device@corp.test\r\nTo: someone@example.com\r\nSubject: latency\r\n\r\n' +
    `${'x'.repeat(76)}\r\n`.repeat(25) +
    '.\r\n';
  const samples = [];
  const interval = (1000 * conns) / rate;
  const end = now() + seconds * 1000;
  let sent = 0;
  await Promise.all(
    Array.from({ length: conns }, async (_, i) => {
      const socket = await connect(port);
      socket.setNoDelay(true);
      const smtp = new SmtpLine(socket);
      await smtp.reply(); // greeting
      await smtp.command('EHLO client.bench.test\r\n', '250');
      await sleep((interval * i) / conns);
      let next = now();
      while (next < end) {
        await smtp.command('MAIL FROM:<device@corp.test>\r\n', '250');
        await smtp.command('RCPT TO:<someone@example.com>\r\n', '250');
        await smtp.command('DATA\r\n', '354');
        // The whole message and its final dot in one write (no Nagle delay between the two):
        // the time measured is the server's, from the end of DATA to its 250.
        const t0 = now();
        await smtp.command(body, '250');
        samples.push(now() - t0);
        sent++;
        next += interval;
        const wait = next - now();
        if (wait > 0) await sleep(wait);
      }
      await smtp.command('QUIT\r\n', '221').catch(() => undefined);
      socket.destroy();
    }),
  );
  samples.sort((a, b) => a - b);
  return { sent, p50: percentile(samples, 50), p99: percentile(samples, 99), max: samples.at(-1) };
}

/** Opens `count` connections (spread over 127.0.1.x source addresses), each waiting for its greeting. */
export async function openIdle(port, count, timeoutMs = 120_000) {
  const sockets = [];
  const deadline = now() + timeoutMs;
  let greeted = 0;
  const batch = 50;
  for (let i = 0; i < count; i += batch) {
    const group = await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, async (_, j) => {
        const localAddress = `127.0.1.${1 + ((i + j) % 100)}`;
        const socket = await connect(port, localAddress);
        socket.on('error', () => undefined);
        const first = await new Promise((resolve) => {
          const timer = setTimeout(() => resolve(''), Math.max(1000, deadline - now()));
          socket.once('data', (d) => {
            clearTimeout(timer);
            resolve(d.toString());
          });
        });
        if (first.startsWith('220')) greeted++;
        return socket;
      }),
    );
    sockets.push(...group);
  }
  return { sockets, greeted };
}
