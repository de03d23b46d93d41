// The PROXY protocol parser (src/smtp/proxy-protocol.ts): what a load balancer sends before
// the client's first byte. Whoever reaches a proxyProtocol listener controls these bytes, so
// the hostile cases matter as much as the good ones.
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { parseProxyHeader, V2_SIGNATURE } from '../../src/smtp/proxy-protocol.js';

function v2(command: number, family: number, block: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(block.length);
  return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20 | command, family]), length, block]);
}

const tcp4 = Buffer.from([192, 0, 2, 10, 10, 0, 0, 1, 0x9c, 0x40, 0x00, 0x19]);
const tcp6 = Buffer.concat([
  Buffer.from('20010db8000000000000000000000010', 'hex'),
  Buffer.alloc(16),
  Buffer.from([0x9c, 0x40, 0x00, 0x19]),
]);

const done = (data: Buffer) => {
  const r = parseProxyHeader(data);
  assert.equal(r.state, 'done', JSON.stringify(r));
  return r as Extract<typeof r, { state: 'done' }>;
};
const invalid = (data: Buffer) => {
  const r = parseProxyHeader(data);
  assert.equal(r.state, 'invalid', `${JSON.stringify(data.toString('latin1'))} → ${JSON.stringify(r)}`);
  return (r as Extract<typeof r, { state: 'invalid' }>).reason;
};

describe('PROXY protocol v1', () => {
  test('TCP4 and TCP6 give the source address and port, and the header length', () => {
    const line = Buffer.from('PROXY TCP4 192.0.2.10 10.0.0.1 40000 25\r\nEHLO x\r\n');
    const r = done(line);
    assert.deepEqual(r.header, { kind: 'proxy', version: 1, address: '192.0.2.10', port: 40000 });
    assert.equal(line.subarray(r.length).toString(), 'EHLO x\r\n');
    assert.equal(done(Buffer.from('PROXY TCP6 2001:DB8::10 ::1 1 25\r\n')).header.kind, 'proxy');
  });

  test('UNKNOWN keeps the real peer', () => {
    assert.deepEqual(done(Buffer.from('PROXY UNKNOWN\r\n')).header, { kind: 'local', version: 1 });
  });

  test('a partial line is incomplete, not invalid', () => {
    for (const part of [
      'P',
      'PROXY',
      'PROXY TCP4 192.0.2.10 10.0.0.1 40000 25',
      'PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r',
    ])
      assert.equal(parseProxyHeader(Buffer.from(part)).state, 'incomplete', part);
  });

  test('hostile lines are refused', () => {
    const cases = [
      'EHLO printer\r\n', // no header at all
      'PROXY TCP4 not-an-ip 10.0.0.1 1 25\r\n',
      'PROXY TCP4 2001:db8::1 10.0.0.1 1 25\r\n', // family and address disagree
      'PROXY TCP4 192.0.2.10 10.0.0.1 65536 25\r\n',
      'PROXY TCP4 192.0.2.10 10.0.0.1 -1 25\r\n',
      'PROXY TCP4 192.0.2.10 10.0.0.1 0040 25\r\n',
      'PROXY TCP4 192.0.2.10 10.0.0.1 1\r\n',
      'PROXY TCP4  192.0.2.10 10.0.0.1 1 25\r\n',
      'PROXY UDP4 192.0.2.10 10.0.0.1 1 25\r\n',
      'PROXY TCP4 192.0.2.10\r\n10.0.0.1 1 25\r\n',
      'PROXY TCP4 192.0.2.10\x00 10.0.0.1 1 25\r\n',
      'PROXY TCP4 192.0.2.10 10.0.0.1 1 25\n', // a bare LF is not a line end
      `PROXY ${'x'.repeat(200)}`,
    ];
    for (const c of cases) invalid(Buffer.from(c, 'latin1'));
  });
});

describe('PROXY protocol v2', () => {
  test('PROXY over TCP4 and TCP6; TLVs after the addresses are skipped', () => {
    const tlv = Buffer.from([0x04, 0x00, 0x03, 1, 2, 3]);
    const four = Buffer.concat([v2(1, 0x11, Buffer.concat([tcp4, tlv])), Buffer.from('EHLO')]);
    const r = done(four);
    assert.deepEqual(r.header, { kind: 'proxy', version: 2, address: '192.0.2.10', port: 40000 });
    assert.equal(four.subarray(r.length).toString(), 'EHLO');
    assert.deepEqual(done(v2(1, 0x21, tcp6)).header, {
      kind: 'proxy',
      version: 2,
      address: '2001:db8::10',
      port: 40000,
    });
  });

  test('an IPv4-mapped IPv6 client is its IPv4 address', () => {
    const mapped = Buffer.concat([
      Buffer.from('00000000000000000000ffffc000020a', 'hex'),
      Buffer.alloc(16),
      Buffer.from([0, 1, 0, 25]),
    ]);
    assert.equal((done(v2(1, 0x21, mapped)).header as { address: string }).address, '192.0.2.10');
  });

  test('LOCAL, UNSPEC, UDP and UNIX keep the real peer', () => {
    assert.deepEqual(done(v2(0, 0x00, Buffer.alloc(0))).header, { kind: 'local', version: 2 });
    assert.deepEqual(done(v2(0, 0x11, tcp4)).header, { kind: 'local', version: 2 });
    for (const family of [0x00, 0x12, 0x22, 0x31, 0x32])
      assert.equal(done(v2(1, family, Buffer.alloc(216))).header.kind, 'local');
  });

  test('every prefix of a header is incomplete', () => {
    const whole = v2(1, 0x11, tcp4);
    for (let i = 1; i < whole.length; i++)
      assert.equal(parseProxyHeader(whole.subarray(0, i)).state, 'incomplete', `${i}`);
  });

  test('hostile headers are refused', () => {
    const header = v2(1, 0x11, tcp4);
    const withByte = (index: number, value: number) => {
      const copy = Buffer.from(header);
      copy[index] = value;
      return copy;
    };
    invalid(withByte(12, 0x11)); // version 1 in the v2 framing
    invalid(withByte(12, 0x22)); // command 2
    invalid(withByte(13, 0x41)); // unknown family
    invalid(v2(1, 0x11, tcp4.subarray(0, 11))); // address block too short
    invalid(v2(1, 0x21, tcp6.subarray(0, 35)));
    // A length field of 65535 cannot make the reader wait for (and buffer) 64 KB.
    invalid(Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]));
    // Not quite the signature.
    invalid(Buffer.concat([V2_SIGNATURE.subarray(0, 11), Buffer.from([0x0b])]));
  });
});

describe('smtp-server internals the PROXY reader replaces (smtp-server 3.21.6)', () => {
  test('SMTPServer has _handleProxy(socket, callback) and _expectsProxyHeader(socket)', () => {
    const proto = SMTPServer.prototype as unknown as Record<string, unknown>;
    assert.equal(typeof proto._handleProxy, 'function');
    assert.equal((proto._handleProxy as (...a: unknown[]) => unknown).length, 2);
    assert.equal(typeof proto._expectsProxyHeader, 'function');
    // The connection handler must still call _handleProxy before connect(): if an upgrade
    // reads the header elsewhere, our reader would silently stop being used.
    const server = new SMTPServer({ useProxy: true, logger: false });
    const handler = server.server.listeners('connection')[0] as (...a: unknown[]) => unknown;
    assert.match(String(handler), /_handleProxy\(socket,/);
  });
});

describe('PROXY parser against random bytes (hostile input)', () => {
  test('never throws, and a "done" always carries a real IP address', () => {
    // A fixed-seed generator (mulberry32): the same cases on every run.
    let seed = 0x5eed;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const starts = [V2_SIGNATURE, Buffer.from('PROXY '), Buffer.alloc(0)];
    for (let i = 0; i < 5000; i++) {
      const body = Buffer.from(
        Array.from({ length: Math.floor(random() * 120) }, () => Math.floor(random() * 256)),
      );
      const data = Buffer.concat([starts[i % 3]!, body]);
      const r = parseProxyHeader(data);
      if (r.state === 'done') {
        assert.ok(r.length <= data.length);
        if (r.header.kind === 'proxy') assert.ok(isIP(r.header.address) !== 0, r.header.address);
      }
    }
  });
});
