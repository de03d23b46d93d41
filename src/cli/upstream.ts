// `smarthost upstream verify`: connect to each configured ESP the way the relay will
// (STARTTLS, certificate check, AUTH) and report what it offers, before any mail is at stake.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { Command } from 'commander';
import nodemailer from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import type { Upstream } from '../config/load.js';
import { transportOptions } from '../delivery/smtp-courier.js';
import { loadConfigOrExit } from './common.js';
import { CliError, EXIT_REFUSED, printJson, say, withConfigOption } from './output.js';

interface ProbeResult {
  greeting?: string;
  /** EHLO keywords, after STARTTLS when there was one. */
  extensions: string[];
  tls?: { protocol: string | null; cipher: string; trusted: boolean; problem?: string; subject?: string };
  error?: string;
}

interface VerifyReport {
  name: string;
  host: string;
  port: number;
  tls: Upstream['tls'];
  probe: ProbeResult;
  login: { ok: boolean; user?: string; error?: string };
}

/** A small SMTP client: greeting, EHLO, STARTTLS, EHLO again, QUIT. It never authenticates. */
async function probe(upstream: Upstream, hostname: string): Promise<ProbeResult> {
  const timeout = Math.min(upstream.timeout, 15_000);
  const result: ProbeResult = { extensions: [] };
  const ca = upstream.ca ? [readFileSync(upstream.ca, 'utf8')] : undefined;
  const tlsOptions = (socket?: net.Socket): tls.ConnectionOptions => ({
    socket,
    host: upstream.host,
    port: upstream.port,
    // The name the relay checks the certificate against (upstream-client.ts), else the host.
    servername: upstream.servername ?? (net.isIP(upstream.host) ? undefined : upstream.host),
    ca,
    minVersion: 'TLSv1.2',
    // Checked and reported below rather than refused, so the report can say what is wrong.
    rejectUnauthorized: false,
  });
  let socket: net.Socket | tls.TLSSocket | undefined;
  try {
    socket =
      upstream.tls === 'implicit'
        ? await connect(() => tls.connect(tlsOptions()), timeout)
        : await connect(() => net.connect(upstream.port, upstream.host), timeout);
    if (socket instanceof tls.TLSSocket) result.tls = describeTls(socket);
    const session = new Replies(socket, timeout);
    result.greeting = (await session.next()).split('\n')[0];
    let ehlo = await session.command(`EHLO ${hostname}`);
    if (upstream.tls === 'starttls') {
      if (!keywords(ehlo).some((k) => k.toUpperCase() === 'STARTTLS')) {
        throw new Error('the server does not offer STARTTLS (set tls: none only if you really must)');
      }
      const reply = await session.command('STARTTLS');
      if (!reply.startsWith('220')) throw new Error(`STARTTLS refused: ${reply}`);
      session.detach();
      const plain = socket;
      socket = await connect(() => tls.connect(tlsOptions(plain)), timeout, 'secureConnect');
      result.tls = describeTls(socket as tls.TLSSocket);
      session.attach(socket);
      ehlo = await session.command(`EHLO ${hostname}`);
    }
    result.extensions = keywords(ehlo);
    socket.write('QUIT\r\n');
  } catch (err) {
    result.error = (err as Error).message;
  } finally {
    socket?.destroy();
  }
  return result;
}

function keywords(ehlo: string): string[] {
  return ehlo
    .split('\n')
    .slice(1)
    .map((line) => line.slice(4).trim())
    .filter(Boolean);
}

function describeTls(socket: tls.TLSSocket): ProbeResult['tls'] {
  const cert = socket.getPeerCertificate();
  return {
    protocol: socket.getProtocol(),
    cipher: socket.getCipher().name,
    trusted: socket.authorized,
    problem: socket.authorized ? undefined : String(socket.authorizationError ?? 'not trusted'),
    subject: cert?.subject?.CN === undefined ? undefined : String(cert.subject.CN),
  };
}

function connect<T extends net.Socket>(make: () => T, timeout: number, event = 'connect'): Promise<T> {
  return new Promise((resolve, reject) => {
    const socket = make();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection within ${timeout / 1000}s`));
    }, timeout);
    socket.once(event === 'connect' && socket instanceof tls.TLSSocket ? 'secureConnect' : event, () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Splits the byte stream into SMTP replies (multi-line replies joined with "\n"). */
class Replies {
  private buffer = '';
  private lines: string[] = [];
  private ready: string[] = [];
  private waiter: ((reply: string) => void) | undefined;
  private failed: ((err: Error) => void) | undefined;
  private socket: net.Socket | undefined;
  private readonly onData = (chunk: Buffer) => this.push(chunk.toString('latin1'));
  private readonly onClose = () => this.failed?.(new Error('the server closed the connection'));

  constructor(
    socket: net.Socket,
    private readonly timeout: number,
  ) {
    this.attach(socket);
  }

  attach(socket: net.Socket): void {
    this.socket = socket;
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
  }

  detach(): void {
    this.socket?.off('data', this.onData);
    this.socket?.off('close', this.onClose);
  }

  private push(text: string): void {
    this.buffer += text;
    let i: number;
    while ((i = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, i).replace(/\r$/, '');
      this.buffer = this.buffer.slice(i + 1);
      this.lines.push(line);
      if (!/^\d{3}-/.test(line)) {
        const reply = this.lines.join('\n');
        this.lines = [];
        if (this.waiter) this.waiter(reply);
        else this.ready.push(reply);
      }
    }
  }

  next(): Promise<string> {
    const queued = this.ready.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no reply within ${this.timeout / 1000}s`)),
        this.timeout,
      );
      this.waiter = (reply) => {
        clearTimeout(timer);
        this.waiter = undefined;
        this.failed = undefined;
        resolve(reply);
      };
      this.failed = (err) => {
        clearTimeout(timer);
        this.waiter = undefined;
        this.failed = undefined;
        reject(err);
      };
    });
  }

  command(line: string): Promise<string> {
    this.socket?.write(`${line}\r\n`);
    return this.next();
  }
}

/** What the relay itself does before sending: connect, STARTTLS, certificate check, AUTH. */
async function login(upstream: Upstream, hostname: string): Promise<VerifyReport['login']> {
  const {
    pool: _pool,
    maxConnections: _m,
    maxMessages: _mm,
    ...single
  } = transportOptions(upstream, hostname);
  const transport = nodemailer.createTransport(single as SMTPTransport.Options);
  try {
    await transport.verify();
    return { ok: true, user: upstream.user ?? upstream.auth?.user };
  } catch (err) {
    const e = err as Error & { response?: string };
    return { ok: false, user: upstream.user ?? upstream.auth?.user, error: e.response ?? e.message };
  } finally {
    transport.close();
  }
}

export function upstreamCommand(): Command {
  const cmd = new Command('upstream')
    .description('the ESP the relay delivers to')
    .addHelpText('after', '\nExample:\n  smarthost upstream verify');
  withConfigOption(
    cmd
      .command('verify')
      .description('connect, STARTTLS, AUTH; report what the ESP offers')
      .option('--json', 'print JSON'),
    '  smarthost upstream verify -c /etc/smarthost/smarthost.yml',
  ).action(async (opts: { config?: string; json?: boolean }) => {
    const config = loadConfigOrExit(opts.config);
    if (!config.upstreams.length) {
      throw new CliError(
        'no upstream is configured: the relay runs in capture mode (mail is written to files). Set upstream: in the config.',
        EXIT_REFUSED,
      );
    }
    const reports: VerifyReport[] = [];
    for (const upstream of config.upstreams) {
      const [probed, auth] = await Promise.all([
        probe(upstream, config.hostname),
        login(upstream, config.hostname),
      ]);
      reports.push({
        name: upstream.name,
        host: upstream.host,
        port: upstream.port,
        tls: upstream.tls,
        probe: probed,
        login: auth,
      });
    }
    if (opts.json) printJson(reports);
    else for (const r of reports) printReport(r);
    if (reports.some((r) => !r.login.ok)) process.exitCode = EXIT_REFUSED;
  });
  return cmd;
}

function printReport(r: VerifyReport): void {
  const p = r.probe;
  say(`upstream ${r.name} (${r.host}:${r.port}, tls: ${r.tls})`);
  say(`  connect:     ${p.greeting ? `ok: ${p.greeting}` : `FAILED: ${p.error ?? 'no greeting'}`}`);
  if (p.tls) {
    const trust = p.tls.trusted ? 'certificate trusted' : `certificate NOT trusted (${p.tls.problem})`;
    say(
      `  TLS:         ${p.tls.protocol ?? '?'} ${p.tls.cipher}, ${trust}${p.tls.subject ? `, CN ${p.tls.subject}` : ''}`,
    );
  } else if (r.tls !== 'none' && p.greeting) {
    say(`  TLS:         FAILED: ${p.error ?? 'not negotiated'}`);
  } else if (r.tls === 'none') {
    say('  TLS:         none (tls: none): the password and every message cross the network in clear text');
  }
  if (p.extensions.length) say(`  offers:      ${p.extensions.join(', ')}`);
  const auth = p.extensions.find((e) => /^AUTH[ =]/i.test(e));
  if (auth) say(`  AUTH:        ${auth.slice(5)}`);
  const sizeExt = p.extensions.find((e) => /^SIZE\b/i.test(e));
  if (sizeExt) {
    const bytes = Number(sizeExt.split(/\s+/)[1]);
    if (bytes) say(`  max size:    ${(bytes / 1024 / 1024).toFixed(1)} MB`);
  }
  if (r.login.ok)
    say(
      `  login:       ok${r.login.user ? ` as ${r.login.user}` : ' (no AUTH configured)'}: ready to deliver`,
    );
  else say(`  login:       FAILED: ${r.login.error}`);
}
