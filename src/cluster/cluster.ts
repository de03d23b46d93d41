// Cluster mode in one object for the composition root (src/relay.ts): the Redis client, the
// shared limits, paces and traffic counters, the heartbeat and the metric. Built without side
// effects; start() connects in the background (the relay never waits for Redis), stop() ends it.
import type { Registry } from 'prom-client';
import { Gauge } from 'prom-client';
import type { Logger } from '../log.js';
import { ClusterClient, type ClusterState } from './client.js';
import { RedisLimits, type SharedLimits } from './limits.js';
import { Heartbeat, listNodes, type NodeInfo } from './nodes.js';
import { redisPace, type SharedPace } from './pace.js';
import type { ClusterSettings } from './settings.js';
import { ClusterTraffic } from './traffic.js';

export interface ClusterStatus extends ClusterState {
  /** The live relays, this one included while Redis answers; undefined when it does not. */
  nodes?: NodeInfo[];
}

export class Cluster {
  readonly client: ClusterClient;
  readonly traffic: ClusterTraffic;
  readonly heartbeat: Heartbeat;
  private readonly paces = new Map<string, SharedPace>();

  constructor(settings: ClusterSettings, log: Logger, deps: { queued: () => number }) {
    this.client = new ClusterClient(settings, log);
    this.traffic = new ClusterTraffic(this.client);
    this.heartbeat = new Heartbeat(this.client, deps.queued);
    // Back from degraded (or connected): tell the others at once that this node is here.
    this.client.onReady = () => void this.heartbeat.beat();
  }

  /** The limits to use: shared, with `local` answering whenever Redis does not. */
  limits(local: SharedLimits): SharedLimits {
    return new RedisLimits(this.client, local);
  }

  /** An upstream's shared pace (by its name). */
  pace(upstream: string): SharedPace {
    let pace = this.paces.get(upstream);
    if (!pace) this.paces.set(upstream, (pace = redisPace(this.client, upstream)));
    return pace;
  }

  async start(): Promise<void> {
    await this.client.start();
    this.traffic.start();
    this.heartbeat.start();
  }

  async stop(): Promise<void> {
    await this.traffic.stop();
    await this.heartbeat.stop();
    await this.client.stop();
  }

  async status(): Promise<ClusterStatus> {
    const nodes = await listNodes(this.client);
    return { ...this.client.state(), nodes };
  }

  /** `smarthost_cluster_degraded`: 1 while this relay uses its own limits because Redis is away. */
  registerMetrics(registry: Registry): void {
    const client = this.client;
    new Gauge({
      name: 'smarthost_cluster_degraded',
      help: 'Cluster mode: 1 while Redis is unavailable and this relay uses its own limits, else 0',
      registers: [registry],
      collect() {
        this.set(client.degraded ? 1 : 0);
      },
    });
  }
}
