// Heartbeats: every relay in cluster mode writes `<name>:node:<id>` every 5 s with a 15 s TTL
// (its host name, version, queue size, start time and whether it is degraded), and adds its id
// to `<name>:nodes`; `smarthost cluster status` lists the ids whose key is still there (a relay
// gone for 15 s drops out by itself). The TTL is Redis's clock, so the relays' clocks do not matter.
import { hostname as osHostname } from 'node:os';
import { readFileSync } from 'node:fs';
import type { ClusterClient } from './client.js';

export interface NodeInfo {
  id: string;
  hostname: string;
  pid: number;
  version: string;
  /** Messages in this relay's queue (its spool: never shared). */
  queued: number;
  /** ISO times. */
  started: string;
  seen: string;
  degraded: boolean;
}

const BEAT_MS = 5_000;
const TTL_MS = 15_000;

// dist/src/cluster/nodes.js → the package's package.json.
export const VERSION = (() => {
  try {
    return (
      JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
        version: string;
      }
    ).version;
  } catch {
    return 'unknown';
  }
})();

export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private readonly started = new Date().toISOString();

  constructor(
    private readonly client: ClusterClient,
    private readonly queued: () => number,
  ) {}

  start(): void {
    void this.beat();
    this.timer ??= setInterval(() => void this.beat(), BEAT_MS);
    this.timer.unref();
  }

  info(): NodeInfo {
    return {
      id: this.client.nodeId,
      hostname: osHostname(),
      pid: process.pid,
      version: VERSION,
      queued: this.queued(),
      started: this.started,
      seen: new Date().toISOString(),
      degraded: this.client.degraded,
    };
  }

  /** One heartbeat (also sent at once when Redis comes back: see ClusterClient's probe). */
  async beat(): Promise<void> {
    const keys = this.client.keys;
    const info = this.info();
    await this.client.run((r) =>
      r.multi().set(keys.node(info.id), JSON.stringify(info), 'PX', TTL_MS).sadd(keys.nodes, info.id).exec(),
    );
  }

  /** Stops beating and takes this node out of the list at once. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    const keys = this.client.keys;
    await this.client.run((r) =>
      r.multi().del(keys.node(this.client.nodeId)).srem(keys.nodes, this.client.nodeId).exec(),
    );
  }
}

/** The live nodes (their heartbeat key is there), oldest first; undefined when Redis cannot answer. */
export async function listNodes(client: ClusterClient): Promise<NodeInfo[] | undefined> {
  const keys = client.keys;
  return client.run(async (r) => {
    const ids = await r.smembers(keys.nodes);
    if (ids.length === 0) return [];
    const values = await r.mget(...ids.map((id) => keys.node(id)));
    const gone = ids.filter((_, i) => values[i] === null);
    if (gone.length) await r.srem(keys.nodes, ...gone);
    const nodes: NodeInfo[] = [];
    for (const value of values) {
      if (value === null) continue;
      try {
        nodes.push(JSON.parse(value) as NodeInfo);
      } catch {
        // Not one of ours: skipped.
      }
    }
    return nodes.sort((a, b) => a.started.localeCompare(b.started) || a.id.localeCompare(b.id));
  });
}
