// `smarthost cluster status [--json]`: the live relays sharing this one's Redis (from their
// heartbeats), with their queue sizes and versions, and whether this relay is degraded (on its
// own limits because Redis is away). Asks the running relay; when none runs here, reads the
// node list from Redis itself, with the config's `cluster:`.
import { Command } from 'commander';
import { findConfigFile, loadConfig } from '../config/load.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import { ClusterClient } from '../cluster/client.js';
import type { ClusterStatus } from '../cluster/cluster.js';
import { listNodes } from '../cluster/nodes.js';
import { silentLogger } from '../log.js';
import { CONFIG_OPTION_HELP, printJson, printTable, refuse, say } from './output.js';

interface StatusOptions {
  config?: string;
  json?: boolean;
}

type Reply = ClusterStatus | { configured: false };

function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

export function printStatus(status: ClusterStatus, relayRunning: boolean): void {
  say(`Cluster "${status.name}" on ${status.redis}`);
  if (relayRunning) {
    say(
      status.degraded
        ? `This relay (${status.nodeId}): DEGRADED since ${status.since.replace('T', ' ').slice(0, 19)} UTC, ` +
            `using its own limits: ${status.reason ?? 'Redis unavailable'}`
        : `This relay (${status.nodeId}): limits shared through Redis`,
    );
  } else {
    say('No relay is running here (read from Redis directly).');
  }
  say('');
  if (!status.nodes) {
    say('Live relays: unknown (Redis does not answer).');
    return;
  }
  say(`Live relays: ${status.nodes.length}`);
  printTable(
    status.nodes.map((n) => ({
      node: n.id === status.nodeId ? `${n.id} (this one)` : n.id,
      host: n.hostname,
      version: n.version,
      queued: n.queued,
      up: ago(n.started),
      degraded: n.degraded ? 'yes' : 'no',
    })),
    [
      { key: 'node', title: 'NODE' },
      { key: 'host', title: 'HOST' },
      { key: 'version', title: 'VERSION' },
      { key: 'queued', title: 'QUEUED' },
      { key: 'up', title: 'UP' },
      { key: 'degraded', title: 'DEGRADED' },
    ],
  );
}

/** Without a running relay: the node list straight from Redis. */
async function fromRedis(configFile: string | undefined): Promise<ClusterStatus> {
  const config = loadConfig(configFile);
  if (!config.cluster) refuse('this config has no cluster: section (cluster mode is off)');
  const client = new ClusterClient(config.cluster, silentLogger());
  await client.start();
  const deadline = Date.now() + Math.max(2_000, config.cluster.timeout * 20);
  while (client.degraded && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const nodes = await listNodes(client);
  const state = client.state();
  await client.stop();
  return { ...state, nodeId: '', nodes };
}

async function status(opts: StatusOptions): Promise<void> {
  const file = findConfigFile(opts.config);
  let reply: Reply;
  let running = true;
  try {
    reply = (await controlRequest(controlSocketPath(file), 'cluster.status', {}, 15_000)) as Reply;
  } catch (err) {
    if (err instanceof ControlError) refuse(`cluster status: ${err.message}`);
    if (!(err instanceof RelayNotRunning)) throw err;
    running = false;
    reply = await fromRedis(file);
  }
  if (!reply.configured) refuse('this relay is not in cluster mode (no cluster: in its config)');
  if (opts.json) printJson({ ...reply, relayRunning: running });
  else printStatus(reply, running);
  if (running && reply.degraded) process.exitCode = 1;
}

export function clusterCommand(): Command {
  const cluster = new Command('cluster').description(
    'cluster mode: relays sharing their limits through Redis',
  );
  cluster
    .command('status')
    .description('the live relays (queue sizes, versions) and whether this one is degraded')
    .option('-c, --config <file>', CONFIG_OPTION_HELP)
    .option('--json', 'print JSON instead of a table')
    .addHelpText(
      'after',
      '\nExit code 1 when this relay is degraded (on its own limits: Redis is unavailable).\n\nExamples:\n  smarthost cluster status\n  smarthost cluster status --json',
    )
    .action(status);
  return cluster;
}
