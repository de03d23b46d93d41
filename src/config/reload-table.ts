// What a reload does with each config key: the one place that says it. `live`: the running relay
// uses the new value at once (new connections and transactions, the next delivery attempt);
// `courier`: delivery to the ESPs moves to a new courier (new connections, pace and health; the
// attempts in flight finish on the old one); `restart`: set up once at start, so the new value
// waits for a restart. The reload's reply and log line are made from it, and so is the relay's
// decision to build a new courier (relay.ts).
import type { Config } from './load.js';
import { comparable } from './secret.js';

export type ReloadEffect = 'live' | 'courier' | 'restart';

/**
 * Each key (a dotted path into Config; a key stands for everything below it) and its effect.
 * A key missing here that changes counts as `restart` (so a key forgotten here is never
 * claimed to apply when it does not).
 */
export const RELOAD_TABLE: Readonly<Record<string, ReloadEffect>> = {
  // The greeting, EHLO to the ESP and the self-signed certificate are made at start.
  hostname: 'restart',
  listen: 'restart',
  // New paths are read at once (the files are re-read on every reload anyway, and watched:
  // smtp/cert-reload.ts); adding or removing the whole `tls:` block counts as `tls`: restart.
  'tls.cert': 'live',
  'tls.key': 'live',
  // The watch is set up at start.
  'tls.watch': 'restart',
  upstreams: 'courier',
  'spool.dir': 'restart',
  // The queue reads these at each decision.
  'queue.maxAge': 'live',
  'queue.retry': 'live',
  'queue.concurrency': 'live',
  'queue.deadLetterMaxAge': 'live',
  // The retention sweeper reads these at each sweep (hourly).
  retention: 'live',
  // The policy engine is rebuilt on reload (its counters carry over).
  'limits.maxMessageSize': 'live',
  'limits.maxRecipients': 'live',
  // smtp-server's own cap on clients is set when the listener starts.
  'limits.maxConnections': 'restart',
  'limits.maxConnectionsPerIp': 'live',
  'limits.maxAuthFailures': 'live',
  'limits.authFailureWindow': 'live',
  'limits.authLockout': 'live',
  'limits.maxUntrustedConnections': 'live',
  'limits.maxRefusedCommands': 'live',
  'limits.commandTimeout': 'live',
  'limits.untrustedCommandTimeout': 'live',
  'limits.dataTimeout': 'live',
  bounces: 'live',
  senders: 'live',
  defaults: 'live',
  allowlist: 'live',
  users: 'live',
  'log.level': 'live',
  'log.maskAddresses': 'live',
  // The logger's output format is chosen when it is made.
  'log.format': 'restart',
  metrics: 'restart',
  'control.socket': 'restart',
  // Read at each /readyz and each check.
  health: 'live',
  // smtp-server's close timeout is set when the listener starts.
  'shutdown.grace': 'restart',
  // The Redis client and its key prefix are set up at start (src/cluster/).
  cluster: 'restart',
};

/** Where the config came from, not what it says: never a change. */
const NOT_SETTINGS = new Set(['source', 'file']);

export interface ConfigChange {
  key: string;
  effect: ReloadEffect;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(comparable(a)) === JSON.stringify(comparable(b));
}

/**
 * The keys that differ between two configs, each with its effect from RELOAD_TABLE, in the
 * order they come in the config. Secrets count by value (a rotated password is a change)
 * without being printed.
 */
export function configChanges(before: Config, after: Config): ConfigChange[] {
  const changes: ConfigChange[] = [];
  const walk = (a: unknown, b: unknown, path: string): void => {
    const effect = RELOAD_TABLE[path];
    if (effect) {
      if (!same(a, b)) changes.push({ key: path, effect });
      return;
    }
    if (isPlainObject(a) && isPlainObject(b)) {
      for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
        if (!path && NOT_SETTINGS.has(key)) continue;
        walk(a[key], b[key], path ? `${path}.${key}` : key);
      }
      return;
    }
    // A key the table does not know: assume the worst.
    if (!same(a, b)) changes.push({ key: path, effect: 'restart' });
  };
  walk(before, after, '');
  return changes;
}

/** The changed keys of one effect, for a reply or a log line. */
export function keysWith(changes: ConfigChange[], effect: ReloadEffect): string[] {
  return changes.filter((c) => c.effect === effect).map((c) => c.key);
}

/**
 * What the courier is built from: the values of the `courier` keys. The relay builds a new
 * courier when this differs (compared with {@link comparable}, so a rotated secret counts).
 */
export function courierSettings(config: Config): string {
  const picked = Object.entries(RELOAD_TABLE)
    .filter(([, effect]) => effect === 'courier')
    .map(([key]) =>
      key.split('.').reduce<unknown>((node, k) => (node as Record<string, unknown>)?.[k], config),
    );
  return JSON.stringify(comparable(picked));
}
