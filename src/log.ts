// Structured logging with winston: one line per event, JSON lines when stdout is not a
// terminal (for journald, Docker, log shippers), readable lines on a terminal. Events of a
// message's life carry its queue id under `id`.
import winston from 'winston';

export type Logger = winston.Logger;

export interface LogOptions {
  level: string;
  format: 'auto' | 'json' | 'text';
}

export function createLogger(options: LogOptions, stream: NodeJS.WritableStream = process.stdout): Logger {
  const json =
    options.format === 'json' || (options.format === 'auto' && !(stream as NodeJS.WriteStream).isTTY);
  const format = json
    ? winston.format.combine(winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        winston.format.timestamp({ format: 'HH:mm:ss' }),
        winston.format.printf(({ timestamp, level, message, ...fields }) => {
          const extra = Object.entries(fields)
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ');
          return `${timestamp} ${level.padEnd(5)} ${message}${extra ? ` ${extra}` : ''}`;
        }),
      );
  return winston.createLogger({
    level: options.level,
    format,
    transports: [new winston.transports.Stream({ stream })],
  });
}

/** "alice@corp.example" → "a***@corp.example", for `log.maskAddresses`. */
export function maskAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at <= 0) return address ? '***' : address;
  return `${address[0]}***${address.slice(at)}`;
}

export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
