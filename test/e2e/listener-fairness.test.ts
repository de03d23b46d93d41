// Fair connections through the real relay (issue 13, point 5): with the default limits, 260
// outsider connections held open leave room for an allowlisted device; an outsider repeating
// refused commands is cut off after limits.maxRefusedCommands; a command line or a message
// trickled in a byte at a time ends at its deadline, however slowly it keeps coming.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { rawSmtpSession, sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { sleep, waitUntil } from './relay-common.js';

/** Opens a connection and resolves its first reply line; the socket stays open. */
function hold(port: number, localAddress: string): Promise<{ socket: net.Socket; greeting: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      const end = buffer.indexOf('\r\n');
      if (end !== -1) resolve({ socket, greeting: buffer.slice(0, end) });
    });
    socket.once('error', reject);
    socket.once('close', () => resolve({ socket, greeting: buffer }));
  });
}

/**
 * Writes `first`, then one byte of `drip` every `everyMs`, and collects what comes back until
 * the server closes the connection (or `giveUpMs` passes: the test then fails).
 */
function trickle(
  port: number,
  localAddress: string,
  script: { first: string; drip: string; everyMs: number; giveUpMs: number },
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let text = '';
    let dripping: NodeJS.Timeout | undefined;
    const finish = (closed: boolean) => {
      clearInterval(dripping);
      clearTimeout(giveUp);
      socket.destroy();
      resolve({ text, closed });
    };
    const giveUp = setTimeout(() => finish(false), script.giveUpMs);
    socket.on('error', () => undefined);
    socket.on('close', () => finish(true));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (dripping || !/^220 /.test(text)) return;
      socket.write(script.first);
      let i = 0;
      dripping = setInterval(() => {
        if (!socket.destroyed) socket.write(script.drip[i++ % script.drip.length]!);
      }, script.everyMs);
    });
  });
}

describe('listener: fair connections with the default limits', () => {
  let relay: Relay;
  const held: net.Socket[] = [];

  before(async () => {
    relay = await startRelay({
      config: { allowlist: [{ cidr: '127.0.0.1/32', name: 'printer' }], log: { level: 'info' } },
    });
  });

  after(async () => {
    for (const socket of held) socket.destroy();
    await relay?.stop();
  });

  test('260 outsiders held open: they get their share (250), the allowlisted printer still sends', async () => {
    // Spread over ten addresses, so maxConnectionsPerIp (50) is not the limit that bites.
    const opened = await Promise.all(
      Array.from({ length: 260 }, (_, i) => hold(relay.port, `127.0.0.${2 + (i % 10)}`)),
    );
    held.push(...opened.map((o) => o.socket));
    const greeted = opened.filter((o) => o.greeting.startsWith('220 ')).length;
    const refused = opened.filter((o) => o.greeting.startsWith('421 4.7.0 ')).length;
    assert.equal(greeted, 250, 'a quarter of the default maxConnections (1000)');
    assert.equal(refused, 10);
    assert.match(
      opened.find((o) => o.greeting.startsWith('421'))!.greeting,
      /limits\.maxUntrustedConnections/,
    );
    const sent = await sendMail({ port: relay.port, from: 'scanner@corp.example', to: ['a@corp.example'] });
    assert.ok(sent.ok, sent.response);
    // Let them go, and wait until the relay has counted them out.
    for (const socket of held.splice(0)) socket.destroy();
    await waitUntil('the outsiders counted out', async () => {
      const probe = await hold(relay.port, '127.0.0.20');
      probe.socket.destroy();
      return probe.greeting.startsWith('220 ');
    });
  });

  test('an outsider repeating refused MAIL commands is cut off after 10 (421 4.7.0)', async () => {
    const lines = ['EHLO stranger.test', ...Array.from({ length: 15 }, () => 'MAIL FROM:<x@example.net>')];
    const replies = await rawSmtpSession(relay.port, lines, { localAddress: '127.0.0.20' });
    for (let i = 2; i < 12; i++) assert.match(replies[i] ?? '', /^550 5\.7\.1 /, `refusal ${i - 1}`);
    assert.match(
      replies[12] ?? '',
      /^421 4\.7\.0 Too many refused commands \(10, limits\.maxRefusedCommands\)/,
    );
    assert.equal(replies.length, 13, 'nothing is answered after the 421: the connection is closed');
  });
});

describe('listener: deadlines that trickled bytes do not extend', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({
      config: {
        allowlist: [{ cidr: '127.0.0.1/32', name: 'printer' }],
        limits: { commandTimeout: '3s', untrustedCommandTimeout: '2s', dataTimeout: '3s' },
      },
    });
  });

  after(async () => {
    await relay?.stop();
  });

  test('an outsider trickling a command line a byte at a time is cut off (421 4.4.2)', async () => {
    const { text, closed } = await trickle(relay.port, '127.0.0.2', {
      first: 'E',
      drip: 'HLO slow.example',
      everyMs: 300,
      giveUpMs: 20_000,
    });
    assert.ok(closed, `the relay closed the connection: ${text}`);
    assert.match(
      text,
      /421 4\.4\.2 Timeout: no complete command within 2s \(limits\.untrustedCommandTimeout\)/,
    );
  });

  test('a device trickling its message is cut off at dataTimeout (421 4.4.2)', async () => {
    const { text, closed } = await trickle(relay.port, '127.0.0.1', {
      first: 'EHLO printer.test\r\nMAIL FROM:<s@corp.example>\r\nRCPT TO:<a@corp.example>\r\nDATA\r\n',
      drip: 'Subject: slow\r\n\r\nbody ',
      everyMs: 200,
      giveUpMs: 20_000,
    });
    assert.ok(closed, `the relay closed the connection: ${text}`);
    assert.match(text, /354 /);
    assert.match(
      text,
      /421 4\.4\.2 Timeout: the message did not arrive in full within 3s \(limits\.dataTimeout\)/,
    );
  });

  test('a device sending whole commands in time keeps its connection past the deadline', async () => {
    const lines = ['EHLO printer.test'];
    const replies: string[] = [];
    // Five NOOPs a second apart: 5 s in all, longer than commandTimeout (3s).
    for (let i = 0; i < 5; i++) lines.push('NOOP');
    const socket = net.connect({ host: '127.0.0.1', port: relay.port });
    let buffer = '';
    socket.on('data', (chunk: Buffer) => (buffer += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    await sleep(200);
    for (const line of lines) {
      socket.write(`${line}\r\n`);
      await sleep(1000);
    }
    socket.end('QUIT\r\n');
    await new Promise((resolve) => socket.once('close', resolve));
    replies.push(...buffer.split('\r\n').filter((l) => /^\d{3} /.test(l)));
    assert.equal(replies.filter((r) => r.startsWith('250 2.0.0 OK')).length, 5, buffer);
    assert.doesNotMatch(buffer, /421/);
  });
});
