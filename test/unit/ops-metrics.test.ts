// The Metrics object on its own: one registry per relay (two in one process do not mix), the
// queue's events counted by outcome and upstream, and /healthz failing when a listener is down.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { makeTempDirSync } from '../helpers/tmp.js';
import { silentLogger } from '../../src/log.js';
import { Metrics, type ListenerProbe } from '../../src/metrics.js';
import type { DeliveryQueue } from '../../src/queue/delivery-queue.js';
import type { QueueEntry } from '../../src/spool/entry.js';
import type { Spool } from '../../src/spool/spool.js';
import { metricValue } from '../e2e/ops-common.js';

const servers: net.Server[] = [];
const queueDir = makeTempDirSync('smarthost-metrics');
after(() => {
  for (const s of servers) s.close();
});

function fakeSpool(writable: () => boolean): Spool {
  return {
    dir: queueDir,
    queueDir,
    isWritable: async () => writable(),
    read: async () => undefined,
    oldestAgeMs: async () => 0,
  } as unknown as Spool;
}

function fakeQueue(): DeliveryQueue {
  return Object.assign(new EventEmitter(), { depth: 3, active: 1 }) as unknown as DeliveryQueue;
}

async function listeningServer(): Promise<net.Server> {
  const server = net.createServer();
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

function entry(source: string, size: number): QueueEntry {
  return {
    id: '0MX1AV0VVD391F9093E',
    from: 'a@corp.example',
    originalFrom: 'a@corp.example',
    recipients: [{ address: 'b@example.com', status: 'pending' }],
    source,
    client: { address: '10.0.0.1' },
    size,
    createdAt: Date.now(),
    attempts: 0,
    nextAttemptAt: Date.now(),
  };
}

test('two relays in one process keep their own counts', async () => {
  const probes: ListenerProbe[] = [];
  const deps = { log: silentLogger(), listeners: () => probes, isShuttingDown: () => false };
  const a = new Metrics({ ...deps, spool: fakeSpool(() => true), queue: fakeQueue() });
  const b = new Metrics({ ...deps, spool: fakeSpool(() => true), queue: fakeQueue() });
  a.messageAccepted(entry('printers', 100));
  a.refused('rate_limit', '10.0.0.1', 'printers');
  a.refused('max_connections_per_ip', '10.0.0.1');
  const textA = await a.registry.metrics();
  const textB = await b.registry.metrics();
  assert.equal(metricValue(textA, 'smarthost_messages_accepted_total', { source: 'printers' }), 1);
  assert.equal(metricValue(textB, 'smarthost_messages_accepted_total', { source: 'printers' }), undefined);
  assert.equal(metricValue(textA, 'smarthost_rate_limit_hits_total', { source: 'printers' }), 1);
  assert.equal(
    metricValue(textA, 'smarthost_connections_refused_total', { reason: 'max_connections_per_ip' }),
    1,
  );
  assert.equal(
    metricValue(textA, 'smarthost_messages_refused_total'),
    1,
    'a connection refusal is not a message refusal',
  );
  assert.equal(metricValue(textA, 'smarthost_queue_depth'), 3);
  assert.equal(metricValue(textA, 'smarthost_queue_in_flight'), 1);
});

test('delivery attempts by outcome and upstream, latency and bytes', async () => {
  const queue = fakeQueue();
  const m = new Metrics({
    log: silentLogger(),
    listeners: () => [],
    isShuttingDown: () => false,
    spool: fakeSpool(() => true),
    queue,
  });
  queue.emit('attempt', {
    entry: entry('printers', 2048),
    results: [
      { recipient: 'x@example.com', outcome: 'delivered', reply: '250 ok', upstream: 'sendgrid' },
      { recipient: 'y@example.com', outcome: 'delivered', reply: '250 ok', upstream: 'sendgrid' },
      { recipient: 'z@example.com', outcome: 'temporary', reply: '451 later', upstream: 'sendgrid' },
    ],
    durationMs: 300,
  });
  queue.emit('bounced');
  const text = await m.registry.metrics();
  const att = (outcome: string) =>
    metricValue(text, 'smarthost_delivery_attempts_total', { outcome, upstream: 'sendgrid' });
  assert.equal(att('delivered'), 1);
  assert.equal(att('temporary'), 1);
  assert.equal(
    metricValue(text, 'smarthost_delivery_recipients_total', { outcome: 'delivered', upstream: 'sendgrid' }),
    2,
  );
  assert.equal(metricValue(text, 'smarthost_relayed_bytes_total', { upstream: 'sendgrid' }), 2048);
  assert.equal(metricValue(text, 'smarthost_upstream_latency_seconds_count', { upstream: 'sendgrid' }), 1);
  assert.equal(metricValue(text, 'smarthost_upstream_latency_seconds_sum', { upstream: 'sendgrid' }), 0.3);
  assert.equal(metricValue(text, 'smarthost_bounces_total'), 1);
});

test('health: a listener that stopped listening, or a shutdown, is unhealthy', async () => {
  const up = await listeningServer();
  const down = await listeningServer();
  let stopping = false;
  const probes: ListenerProbe[] = [
    { name: '127.0.0.1:25', connections: new Set(), tcp: up },
    { name: '127.0.0.1:587', connections: new Set(), tcp: down },
  ];
  const m = new Metrics({
    log: silentLogger(),
    listeners: () => probes,
    isShuttingDown: () => stopping,
    spool: fakeSpool(() => true),
    queue: fakeQueue(),
  });
  assert.deepEqual(await m.health(), { ok: true, problems: [] });
  await new Promise<void>((resolve) => down.close(() => resolve()));
  assert.deepEqual(await m.health(), { ok: false, problems: ['listener 127.0.0.1:587 is not listening'] });
  stopping = true;
  assert.ok((await m.health()).problems.includes('shutting down'));
});
