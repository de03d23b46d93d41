// PROXY protocol v1 and v2 on a listener with `proxyProtocol: true`. smtp-server reads only v1
// (a text line); AWS NLB and HAProxy's `send-proxy-v2` send only the binary v2. This replaces
// the library's header reader (SMTPServer._handleProxy, smtp-server 3.21.6; pinned by
// test/smtp/proxy-reader.test.ts) with one that takes both, through proxy-protocol.ts.
//
// The library keeps its pre-connect guard around the call: a socket that never completes its
// header is closed by that guard's timeout, and its slot counts against maxClients meanwhile.
import crypto from 'node:crypto';
import type net from 'node:net';
import type { SMTPServer } from 'smtp-server';
import { parseProxyHeader, V2_MAX_LENGTH, type ProxyHeader } from './proxy-protocol.js';

/** Why a connection was closed before its SMTP session: for one log line naming the peer. */
export type ProxyRejected = (peer: string, reason: string) => void;

/** A header that has not arrived whole in this time is not coming (the guard's own is 60 s). */
const HEADER_TIMEOUT_MS = 10_000;

/**
 * Reads one PROXY header from `socket` and leaves the bytes after it (the client's first SMTP
 * command, for a client that talks first) in the socket, for the session.
 */
export function readProxyHeader(socket: net.Socket, timeoutMs = HEADER_TIMEOUT_MS): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    let finished = false;
    const timer = setTimeout(
      () => finish(new Error(`no complete PROXY header within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const finish = (err: Error | undefined, header?: ProxyHeader) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onEnd);
      socket.removeListener('error', onError);
      if (err) reject(err);
      else resolve(header!);
    };
    const onEnd = () => finish(new Error('connection closed before a complete PROXY header'));
    const onError = (err: Error) => finish(new Error(`socket error before the PROXY header: ${err.message}`));
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
        received = Buffer.concat([received, chunk]);
        const result = parseProxyHeader(received);
        if (result.state === 'incomplete') {
          if (received.length > V2_MAX_LENGTH) finish(new Error('PROXY header too long'));
          continue;
        }
        if (result.state === 'invalid') return finish(new Error(result.reason));
        const rest = received.subarray(result.length);
        if (rest.length) socket.unshift(rest);
        return finish(undefined, result.header);
      }
    };
    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onError);
  });
}

/** The session id smtp-server would have made (its format: 16 base-32 characters). */
function sessionId(): string {
  return BigInt(`0x${crypto.randomBytes(10).toString('hex')}`)
    .toString(32)
    .padStart(16, '0');
}

/** Makes `server` read PROXY v1 and v2 headers with our reader. */
export function installProxyReader(server: SMTPServer, rejected: ProxyRejected): void {
  const original = server._handleProxy.bind(server);
  server._handleProxy = (socket, callback) => {
    // Listeners without proxyProtocol (and peers not expected to send a header) as before.
    if (!server._expectsProxyHeader(socket)) return original(socket, callback);
    const peer = socket.remoteAddress ?? 'unknown';
    readProxyHeader(socket).then(
      (header) => {
        const id = sessionId();
        if (header.kind === 'local') return callback(null, { id });
        callback(null, { id, remoteAddress: header.address, remotePort: header.port });
      },
      (err: Error) => {
        rejected(peer, err.message);
        // Nothing can be said to a client that has not sent a valid header; a late error on a
        // closing socket must not become an uncaught exception.
        socket.on('error', () => undefined);
        socket.destroy();
        callback(err);
      },
    );
  };
}
