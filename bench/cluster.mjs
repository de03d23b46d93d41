#!/usr/bin/env node
// `npm run bench:cluster`: the cost of cluster mode (issue 15: "accept throughput with Redis on
// loopback within 10% of without"). The same smarthost config, with and without `cluster:`,
// takes the same load from smtp-source and relays it to smtp-sink; a source rate limit and a
// recipient rate limit (both far above the load, so nothing is refused) make every MAIL and
// RCPT a check: in-memory without cluster, one Lua round trip to a redis-server on loopback
// with it. Rounds alternate between the two, and the best of each is shown (other work on a
// shared machine only ever makes a figure worse). Figures from a busy machine are not results.
//
//   npm run bench:cluster                 3 rounds of 5000 messages each way
//   npm run bench:cluster -- --quick      1 round of 1000
//
// Needs: a build, redis-server (Debian's redis-server package) and Postfix's smtp-sink and
// smtp-source (postfix package). Loopback only; everything started here is stopped at the end.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { cleanupAll, freePort, sleep, tempDir, track, waitGreeting, which } from './lib/harness.mjs';
import { smtpSource } from './lib/clients.mjs';
import { startSink } from './lib/servers.mjs';

const REPO = path.resolve(import.meta.dirname, '..');
const QUICK = process.argv.includes('--quick');
const ROUNDS = QUICK ? 1 : 3;
const MESSAGES = QUICK ? 1000 : 5000;
const SESSIONS = 20;

for (const tool of ['redis-server', 'smtp-sink', 'smtp-source']) {
  if (!which(tool)) {
    console.error(`bench:cluster needs ${tool} (apt-get install redis-server postfix)`);
    process.exit(2);
  }
}

async function startRedis() {
  const dir = tempDir('redis');
  const port = await freePort();
  track(
    spawn(
      which('redis-server'),
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    ),
  );
  for (let i = 0; !(await ping(port)); i++) {
    if (i > 400) throw new Error('redis-server did not start');
    await sleep(25);
  }
  return { url: `redis://127.0.0.1:${port}/0` };
}

/** Whether a redis-server answers PING on `port`. */
function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(500, () => socket.destroy());
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (d) => {
      socket.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    socket.once('error', () => resolve(false));
    socket.once('close', () => resolve(false));
  });
}

async function startRelay(sinkPort, cluster) {
  const dir = tempDir('smarthost');
  const port = await freePort();
  const config = {
    hostname: 'smarthost.bench.test',
    listen: [{ host: '127.0.0.1', port, starttls: false }],
    upstream: { name: 'sink', host: '127.0.0.1', port: sinkPort, tls: 'none', maxConnections: 20 },
    spool: { dir: path.join(dir, 'data') },
    queue: { concurrency: 50 },
    limits: { maxConnections: 2000 },
    allowlist: [
      { cidr: '127.0.0.0/8', name: 'lan', rateLimit: '10000000/min', recipientRateLimit: '10000000/min' },
    ],
    log: { level: 'warn', format: 'json' },
    shutdown: { grace: '2s' },
    ...(cluster ? { cluster: { redis: cluster, name: `bench-${port}` } } : {}),
  };
  const configFile = path.join(dir, 'smarthost.yml');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  const logFd = fs.openSync(path.join(dir, 'smarthost.log'), 'a');
  const child = track(
    spawn(process.execPath, [path.join(REPO, 'bin', 'smarthost.js'), 'start', '-c', configFile], {
      cwd: dir,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, NODE_ENV: 'production' },
    }),
  );
  fs.closeSync(logFd);
  await waitGreeting(port, 30_000);
  // Cluster mode connects in the background: measure once it shares its limits.
  if (cluster) await sleep(500);
  return {
    port,
    log: () => fs.readFileSync(path.join(dir, 'smarthost.log'), 'utf8'),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

async function round(sink, cluster) {
  const relay = await startRelay(sink.port, cluster);
  try {
    await smtpSource(relay.port, { sessions: 10, messages: 200, size: 2048 });
    const ms = await smtpSource(relay.port, { sessions: SESSIONS, messages: MESSAGES, size: 2048 });
    if (cluster && /cluster_degraded/.test(relay.log())) {
      throw new Error('the relay fell back to local limits during the run: not a measurement of cluster mode');
    }
    return (MESSAGES / ms) * 1000;
  } finally {
    await relay.stop();
  }
}

try {
  const redis = await startRedis();
  const sink = await startSink();
  const best = { local: 0, cluster: 0 };
  for (let r = 1; r <= ROUNDS; r++) {
    for (const mode of r % 2 ? ['local', 'cluster'] : ['cluster', 'local']) {
      const rate = await round(sink, mode === 'cluster' ? redis.url : undefined);
      best[mode] = Math.max(best[mode], rate);
      console.log(`round ${r} ${mode.padEnd(7)} ${rate.toFixed(0)} msg/s accepted`);
    }
  }
  const ratio = best.cluster / best.local;
  console.log('');
  console.log(`accept throughput, ${MESSAGES} messages of 2 KB over ${SESSIONS} sessions, best of ${ROUNDS}:`);
  console.log(`  without cluster: ${best.local.toFixed(0)} msg/s`);
  console.log(`  with cluster:    ${best.cluster.toFixed(0)} msg/s (Redis on loopback)`);
  console.log(`  cluster / local: ${(ratio * 100).toFixed(1)}% (target: at least 90%)`);
  sink.stop();
} finally {
  cleanupAll();
}
