// Reading a PROXY protocol header (v1 or v2, parsed by proxy-protocol.ts) off a new socket,
// before the SMTP session starts. server-adapter.ts puts it in place of smtp-server's own
// reader, which takes only v1.
import type net from 'node:net';
import { parseProxyHeader, V2_MAX_LENGTH, type ProxyHeader } from './proxy-protocol.js';

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
