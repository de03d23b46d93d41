// The ESP's SIZE, smaller than the relay's own limit, is learned at start and enforced at
// accept time with a 552 5.3.4, instead of accepting mail that could only bounce. Messages
// under the limit still go through.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SIZE_HEADROOM } from '../../src/delivery/smtp-courier.js';
import { rawSmtpSession, sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { header, upstreamFor } from './relay-common.js';

const ESP_SIZE = 100_000;
const LIMIT = ESP_SIZE - SIZE_HEADROOM;

function message(subject: string, bytes: number): Buffer {
  const head = `From: scanner@corp.example\r\nTo: ops@example.com\r\nSubject: ${subject}\r\n\r\n`;
  const line = `${'x'.repeat(76)}\r\n`;
  return Buffer.from(head + line.repeat(Math.ceil(bytes / line.length)));
}

describe('relay: the upstream ESP’s size limit', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp({ size: ESP_SIZE });
    relay = await startRelay({ config: { upstream: upstreamFor(esp) } });
    await relay.waitForOutput(
      /"event":"upstream_ready"[^\n]*"size":100000|"size":100000[^\n]*"event":"upstream_ready"/,
    );
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('a message over the ESP’s SIZE is refused at DATA with 552 5.3.4', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['ops@example.com'],
      raw: message('too-big', ESP_SIZE + 10_000),
    });
    assert.equal(sent.ok, false);
    assert.ok(!sent.ok && sent.code === 552, `expected 552, got ${sent.response}`);
    assert.match(sent.response, /5\.3\.4/);
    assert.match(
      sent.response,
      new RegExp(`Message too big for the upstream ESP \\(limit ${LIMIT} bytes\\)`),
    );
  });

  test('a declared SIZE over it is refused at MAIL FROM, naming the upstream ESP', async () => {
    const replies = await rawSmtpSession(relay.port, [
      'EHLO client.test',
      `MAIL FROM:<scanner@corp.example> SIZE=${ESP_SIZE}`,
      'QUIT',
    ]);
    assert.equal(replies[2], `552 5.3.4 Message too big for the upstream ESP (limit ${LIMIT} bytes)`);
  });

  test('a message under it goes through', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['ops@example.com'],
      raw: message('fits', LIMIT - 5_000),
    });
    assert.ok(sent.ok, sent.response);
    await esp.waitFor(1);
    assert.equal(header(esp.messages[0]!.raw, 'subject'), 'fits');
  });
});
