// A deliberately lenient upstream, as lax as the MTAs of the 2023 SMTP-smuggling research: no
// TLS, no AUTH, it ends DATA on any end-of-data look-alike (a "." line between any of CR, LF
// and CRLF) and reads whatever follows as new commands. Used to prove that nothing a source
// sends can become a second transaction upstream. It records each transaction and its bytes.
import net from 'node:net';

export interface LenientTransaction {
  from: string;
  to: string[];
  /** The message as received, dot-stuffing and all, up to the end it saw. */
  data: Buffer;
}

export interface LenientUpstream {
  port: number;
  transactions: LenientTransaction[];
  close(): Promise<void>;
}

/** Any line end, a dot, any line end: what a lenient server takes for the end of DATA. */
const LAX_END = /(\r\n|\r|\n)\.(\r\n|\r|\n)/;
const LAX_LINE = /\r\n|\r|\n/;

export async function startLenientUpstream(): Promise<LenientUpstream> {
  const transactions: LenientTransaction[] = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    let buffer = Buffer.alloc(0);
    let inData = false;
    let current: LenientTransaction = { from: '', to: [], data: Buffer.alloc(0) };
    const reply = (text: string) => socket.write(`${text}\r\n`);
    const command = (line: string) => {
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === 'EHLO' || verb === 'HELO') return reply('250-lenient.test\r\n250 8BITMIME');
      if (verb === 'MAIL') {
        current = { from: /<([^>]*)>/.exec(line)?.[1] ?? '', to: [], data: Buffer.alloc(0) };
        return reply('250 ok');
      }
      if (verb === 'RCPT') {
        current.to.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
        return reply('250 ok');
      }
      if (verb === 'DATA') {
        inData = true;
        return reply('354 go on');
      }
      if (verb === 'QUIT') {
        reply('221 bye');
        return socket.end();
      }
      return reply('250 ok');
    };
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const text = buffer.toString('latin1');
        if (inData) {
          // The message starts right after the 354: a leading "." line ends it too.
          const match = LAX_END.exec(`\n${text}`);
          if (!match) return;
          const end = match.index - 1 + match[0].length;
          current.data = Buffer.from(text.slice(0, Math.max(match.index - 1, 0)), 'latin1');
          transactions.push(current);
          buffer = buffer.subarray(end);
          inData = false;
          reply('250 queued');
          continue;
        }
        const match = LAX_LINE.exec(text);
        if (!match) return;
        buffer = buffer.subarray(match.index + match[0].length);
        command(text.slice(0, match.index));
      }
    });
    reply('220 lenient.test ESMTP');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    transactions,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
