// `smarthost send-test`: send a test message through the relay as a device would, and print
// the queue id it got, to follow it in the logs and in `smarthost queue`.
import { hostname as osHostname } from 'node:os';
import { Command } from 'commander';
import nodemailer from 'nodemailer';
import { loadConfigOrExit, readStdin } from './common.js';
import { CliError, EXIT_REFUSED, say, usage, withConfigOption } from './output.js';

interface Options {
  config?: string;
  to: string;
  from?: string;
  server?: string;
  subject?: string;
  user?: string;
  passwordStdin?: boolean;
}

/** "host:port", "[v6]:port" or "port". */
function parseServer(text: string): { host: string; port: number } {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  const plain = /^([^:[\]]+):(\d+)$/.exec(text);
  const portOnly = /^(\d+)$/.exec(text);
  const found = bracketed ?? plain;
  if (found?.[1] && found[2]) return { host: found[1], port: Number(found[2]) };
  if (portOnly?.[1]) return { host: '127.0.0.1', port: Number(portOnly[1]) };
  usage(`--server: expected HOST:PORT such as 127.0.0.1:2525, got "${text}"`);
}

export function sendTestCommand(): Command {
  return withConfigOption(
    new Command('send-test')
      .description('send a test message through the relay and print its queue id')
      .requiredOption('--to <address>', 'the recipient')
      .option('--from <address>', 'the sender (default: smarthost-test@<hostname>)')
      .option('--server <host:port>', "the relay to send to (default: the config's first listener)")
      .option('--subject <text>', 'the subject')
      .option('--user <name>', 'log in (AUTH) as this user, after STARTTLS')
      .option('--password-stdin', "read --user's password from stdin"),
    '  smarthost send-test --to you@corp.example\n  smarthost send-test --to you@corp.example --server 10.0.0.5:587',
  ).action(async (opts: Options) => {
    let host: string;
    let port: number;
    let hostname = osHostname();
    let implicitTls = false;
    if (opts.server) {
      ({ host, port } = parseServer(opts.server));
    } else {
      const config = loadConfigOrExit(opts.config);
      const listener = config.listen[0]!;
      hostname = config.hostname;
      host = listener.host === '0.0.0.0' ? '127.0.0.1' : listener.host === '::' ? '::1' : listener.host;
      port = listener.port;
      implicitTls = listener.implicitTls;
    }
    if (opts.user && !opts.passwordStdin)
      usage('--user needs --password-stdin (the password is read from stdin)');
    const pass = opts.user ? await readStdin() : undefined;
    const from = opts.from ?? `smarthost-test@${hostname}`;
    const transport = nodemailer.createTransport({
      host,
      port,
      secure: implicitTls,
      name: osHostname(),
      requireTLS: Boolean(opts.user),
      // The relay's own certificate is often self-signed: this is a test of the relay, not of its certificate.
      tls: { rejectUnauthorized: false },
      auth: opts.user ? { user: opts.user, pass: pass ?? '' } : undefined,
      connectionTimeout: 15_000,
      greetingTimeout: 15_000,
      socketTimeout: 30_000,
    });
    try {
      const info = await transport.sendMail({
        envelope: { from, to: [opts.to] },
        from,
        to: opts.to,
        subject: opts.subject ?? `smarthost test message from ${hostname}`,
        text: `This is a test message sent with \`smarthost send-test\` through ${host}:${port} at ${new Date().toISOString()}.\n`,
      });
      const id = /queued as ([A-Za-z0-9]+)/i.exec(info.response)?.[1];
      say(`accepted by ${host}:${port}: ${info.response}`);
      if (id) say(`queue id: ${id}`);
    } catch (err) {
      const e = err as Error & { response?: string };
      throw new CliError(
        `the relay at ${host}:${port} did not accept the test message: ${e.response ?? e.message}`,
        EXIT_REFUSED,
      );
    } finally {
      transport.close();
    }
  });
}
