// nodemailer opens its sockets with Nagle's algorithm on. The end of every message (the last
// chunk, then "\r\n.\r\n") is then two small writes, and the second waits for the ESP to
// acknowledge the first, which a receiver delays by up to 40 ms: about 45 ms lost per message
// and connection (measured: 21 messages/s over one connection, 358/s without Nagle).
// nodemailer has no option for TCP_NODELAY, but it lets the caller supply the connection
// (`getSocket` returning `{ connection }`); it still does implicit TLS, STARTTLS and the rest.
//
// The socket is handed over while it is still connecting, so that a failure to connect
// reaches nodemailer's own error handling (which takes the connection out of its pool); a
// connection that hangs is ended by nodemailer's greeting timeout.
import net from 'node:net';

interface SocketRequest {
  host?: string;
  port?: number;
}

type SocketCallback = (err: Error | null, socketOptions?: { connection: net.Socket }) => void;

/** nodemailer's `getSocket`: a TCP connection to the upstream with TCP_NODELAY set. */
export function connectWithoutDelay(options: SocketRequest, callback: SocketCallback): void {
  const socket = net.connect({ host: options.host, port: options.port ?? 587, noDelay: true });
  // nodemailer attaches its handler synchronously in the callback below; this one only makes
  // sure that an error can never be an uncaught exception.
  socket.on('error', () => undefined);
  callback(null, { connection: socket });
}
