// The relay's one Redis connection in cluster mode, built to fail fast and never to hold mail
// up: no offline queue (a command while disconnected fails at once), a short command timeout
// (`cluster.timeout`, 100 ms by default), no retry of a command, and reconnection with back-off
// in the background.
//
// The state that matters is `degraded`: any failed or timed-out command, or a lost connection,
// makes the relay fall back to its local limits at once (callers get undefined from run() and
// use the local counters); `cluster_degraded` is logged once, with the reason. While degraded no
// command is sent; a probe (PING) every second, once the connection is up again, ends it:
// `cluster_restored` is logged and shared limits resume.
import { createHash, randomBytes } from 'node:crypto';
import { hostname as osHostname } from 'node:os';
// Types only: ioredis itself is loaded by start(), so a relay without `cluster:` never loads it.
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from '../log.js';
import type { ClusterSettings } from './settings.js';
import { maskUrl } from './settings.js';
import { SCRIPTS, type ScriptCommands } from './scripts.js';

export type ClusterRedis = Redis & ScriptCommands;

/** How often a degraded relay checks whether Redis answers again. */
const PROBE_MS = 1_000;

/**
 * A key part from client input (a username, an address): kept readable when short and plain,
 * else a digest, so hostile input can neither make long keys nor reach into another key space.
 */
export function keyPart(text: string): string {
  if (/^[A-Za-z0-9._@+=-]{1,128}$/.test(text)) return text;
  return `#${createHash('sha256').update(text).digest('base64url')}`;
}

/** Every key of one cluster (`cluster.name`), in one place. */
export class ClusterKeys {
  constructor(readonly prefix: string) {}
  rate(bucket: string, source: string): string {
    return `${this.prefix}:rate:${bucket}:${keyPart(source)}`;
  }
  authFailures(kind: 'addr' | 'user', id: string): string {
    return `${this.prefix}:authfail:${kind}:${keyPart(id)}`;
  }
  lockout(kind: 'addr' | 'user', id: string): string {
    return `${this.prefix}:lockout:${kind}:${keyPart(id)}`;
  }
  paceTat(upstream: string): string {
    return `${this.prefix}:pace:${keyPart(upstream)}:tat`;
  }
  paceSlow(upstream: string): string {
    return `${this.prefix}:pace:${keyPart(upstream)}:slow`;
  }
  traffic(minute: number): string {
    return `${this.prefix}:traffic:${minute}`;
  }
  /** When the first relay started counting (Redis holds the counts of all). */
  get trafficSince(): string {
    return `${this.prefix}:traffic:since`;
  }
  node(id: string): string {
    return `${this.prefix}:node:${keyPart(id)}`;
  }
  /** The ids of the nodes that sent a heartbeat (each one's own key has the TTL). */
  get nodes(): string {
    return `${this.prefix}:nodes`;
  }
}

export function redisOptions(settings: ClusterSettings): RedisOptions {
  const options: RedisOptions = {
    host: settings.host,
    port: settings.port,
    db: settings.db,
    username: settings.username,
    password: settings.password?.reveal(),
    lazyConnect: true,
    // Fail fast: nothing waits for Redis (see the top of this file).
    enableOfflineQueue: false,
    commandTimeout: settings.timeout,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: Math.max(1_000, settings.timeout * 10),
    // Reconnect for ever, at most every 2 s.
    retryStrategy: (times: number) => Math.min(100 * times, 2_000),
    scripts: SCRIPTS,
  };
  if (settings.tls) options.tls = { ca: settings.caText, servername: settings.host };
  if (settings.sentinels?.length) {
    options.sentinels = settings.sentinels;
    options.name = settings.sentinelName;
    options.sentinelRetryStrategy = (times: number) => Math.min(100 * times, 2_000);
    options.enableTLSForSentinelMode = settings.tls;
  }
  return options;
}

export interface ClusterState {
  configured: true;
  redis: string;
  name: string;
  nodeId: string;
  degraded: boolean;
  /** Why, while degraded. */
  reason?: string;
  /** ISO time the current state began. */
  since: string;
}

export class ClusterClient {
  /** Made by start() (undefined before: every command answers "degraded"). */
  private client: ClusterRedis | undefined;
  readonly keys: ClusterKeys;
  /** This relay in the node list: host name, process id and a random part (a restart is a new node). */
  readonly nodeId = `${osHostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private degradedNow = true;
  /** Whether cluster_degraded was logged for the current episode (so it is logged once). */
  private reported = false;
  private connectedOnce = false;
  private reason = 'connecting to Redis';
  private since = Date.now();
  private probeTimer: NodeJS.Timeout | undefined;
  private probing = false;
  private stopped = false;
  /** Called each time Redis answers again (or for the first time). */
  onReady: (() => void) | undefined;

  constructor(
    readonly settings: ClusterSettings,
    private readonly log: Logger,
  ) {
    this.keys = new ClusterKeys(settings.name);
  }

  get degraded(): boolean {
    return this.degradedNow;
  }

  state(): ClusterState {
    return {
      configured: true,
      redis: this.settings.redis,
      name: this.settings.name,
      nodeId: this.nodeId,
      degraded: this.degradedNow,
      reason: this.degradedNow ? this.reason : undefined,
      since: new Date(this.since).toISOString(),
    };
  }

  /** Connects in the background: the relay starts at once, on local limits until Redis answers. */
  async start(): Promise<void> {
    this.stopped = false;
    if (!this.client) {
      const { Redis: RedisClient } = await import('ioredis');
      const redis = new RedisClient(redisOptions(this.settings)) as ClusterRedis;
      // ioredis reports connection errors as 'error' events; unheard, they would end the process.
      redis.on('error', (err: Error) => this.degrade(`Redis error: ${err.message}`));
      redis.on('close', () => this.degrade('the connection to Redis was lost'));
      redis.on('ready', () => void this.probe());
      this.client = redis;
    }
    this.client.connect().catch((err: Error) => this.degrade(`cannot reach Redis: ${err.message}`));
    this.armProbe();
  }

  /**
   * Runs `fn` against Redis, or returns undefined at once when degraded; a failure (an error,
   * the timeout) makes the relay degraded and returns undefined. Never throws: the caller's
   * answer to undefined is its local limit.
   */
  async run<T>(fn: (redis: ClusterRedis) => Promise<T>): Promise<T | undefined> {
    if (this.degradedNow || this.stopped || !this.client) return undefined;
    try {
      return await fn(this.client);
    } catch (err) {
      this.degrade(`a Redis command failed: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** Falls back to local limits (logged once per episode). */
  degrade(reason: string): void {
    if (this.stopped) return;
    const safe = maskUrl(reason);
    if (!this.degradedNow) {
      this.degradedNow = true;
      this.since = Date.now();
    }
    this.reason = safe;
    if (!this.reported) {
      this.reported = true;
      this.log.warn(`cluster: Redis unavailable, using this relay's own limits until it is back: ${safe}`, {
        event: 'cluster_degraded',
        redis: this.settings.redis,
        reason: safe,
      });
    }
    this.armProbe();
  }

  private armProbe(): void {
    if (this.probeTimer || this.stopped) return;
    this.probeTimer = setInterval(() => void this.probe(), PROBE_MS);
    this.probeTimer.unref();
  }

  /** While degraded: back to shared limits once Redis answers a PING in time. */
  private async probe(): Promise<void> {
    const redis = this.client;
    if (!this.degradedNow || this.probing || this.stopped || redis?.status !== 'ready') return;
    this.probing = true;
    try {
      await redis.ping();
    } catch {
      return;
    } finally {
      this.probing = false;
    }
    if (this.stopped) return;
    this.degradedNow = false;
    this.since = Date.now();
    clearInterval(this.probeTimer);
    this.probeTimer = undefined;
    if (this.reported) {
      this.log.info('cluster: Redis is back, limits are shared again', {
        event: 'cluster_restored',
        redis: this.settings.redis,
      });
    } else if (!this.connectedOnce) {
      this.log.info(`cluster: limits shared through ${this.settings.redis} (name ${this.settings.name})`, {
        event: 'cluster_connected',
        redis: this.settings.redis,
        name: this.settings.name,
        node: this.nodeId,
      });
    }
    this.connectedOnce = true;
    this.reported = false;
    this.onReady?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.probeTimer);
    this.probeTimer = undefined;
    this.client?.disconnect();
  }
}
