#!/usr/bin/env node
// `npm run bench`: smarthost and Postfix side by side, on this machine, relaying to the same
// sink (Postfix's smtp-sink) and driven by the same load generator (smtp-source), plus a small
// client of our own for accept latency and idle connections. Loopback only; every loop is
// bounded and everything started here is stopped at the end (also on Ctrl-C).
//
//   npm run bench                      full run (a few minutes)
//   npm run bench -- --quick           smaller counts, for a quick look
//   npm run bench -- --only=small20,seq smarthost and Postfix, chosen scenarios only
//   npm run bench -- --no-postfix      smarthost alone
//
// Needs: a build (npm run build), and Debian's postfix package (smtp-sink, smtp-source, postfix).
// Postfix runs as a second instance in its own config and queue directories (postfix -c DIR);
// the system's own Postfix configuration is never read or touched. Run as root (Postfix's
// master needs it), e.g. in the CI container.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

const REPO = path.resolve(import.meta.dirname, '..');
const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
const RESULTS = path.join(REPO, 'bench', 'results');
const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const NO_POSTFIX = argv.includes('--no-postfix');
const ONLY = (argv.find((a) => a.startsWith('--only=')) ?? '').slice(7).split(',').filter(Boolean);
const want = (name) => ONLY.length === 0 || ONLY.includes(name);
const IS_ROOT = process.getuid?.() === 0;

const N = {
  warmup: QUICK ? 100 : 300,
  small: QUICK ? 1000 : 5000,
  seq: QUICK ? 200 : 500,
  largeCount: QUICK ? 6 : 20,
  largeSize: 10 * 1024 * 1024,
  latencyRate: 50, // messages per second, over latencyConns connections
  latencyConns: 5,
  latencySeconds: QUICK ? 5 : 15,
  idle: QUICK ? 300 : 1000,
  spool: QUICK ? 20_000 : 100_000,
};

// --- clean-up: whatever happens, stop what we started ------------------------------------------

const cleanups = [];
let cleaned = false;
function cleanupAll() {
  if (cleaned) return;
  cleaned = true;
  for (const fn of cleanups.reverse()) {
    try {
      fn();
    } catch {
      // keep going
    }
  }
}
process.on('exit', cleanupAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`\nbench: ${signal}, stopping everything`);
    cleanupAll();
    process.exit(130);
  });
}

function track(child) {
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `smarthost-bench-${prefix}-`));
  fs.chmodSync(dir, 0o755); // Postfix's unprivileged processes must traverse it
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// --- small helpers -----------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function which(cmd) {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const file = path.join(dir, cmd);
    if (fs.existsSync(file)) return file;
  }
  return undefined;
}

async function waitUntil(predicate, timeoutMs, what) {
  const deadline = now() + timeoutMs;
  while (now() < deadline) {
    if (await predicate()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Resolves the first reply line of an SMTP greeting, or rejects. */
function greeting(port, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('no greeting'));
    }, timeoutMs);
    s.once('data', (d) => {
      clearTimeout(timer);
      s.end('QUIT\r\n');
      resolve(d.toString());
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function waitGreeting(port, timeoutMs) {
  await waitUntil(
    () =>
      greeting(port).then(
        () => true,
        () => false,
      ),
    timeoutMs,
    `an SMTP greeting on port ${port}`,
  );
}

/** Proportional set size (kB) of a process: shared pages split between their users. */
function pssKb(pid) {
  try {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return Number(/^Pss:\s+(\d+)/m.exec(text)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function childrenOf(pid) {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** Samples the memory of a server (its processes' PSS, summed) and keeps the peak. */
class MemorySampler {
  constructor(pids) {
    this.pids = pids;
    this.peak = 0;
    this.timer = undefined;
  }
  current() {
    return this.pids().reduce((sum, pid) => sum + pssKb(pid), 0);
  }
  start() {
    this.peak = this.current();
    this.timer = setInterval(() => {
      this.peak = Math.max(this.peak, this.current());
    }, 100);
    return this;
  }
  stop() {
    clearInterval(this.timer);
    this.peak = Math.max(this.peak, this.current());
    return this.peak;
  }
}

// --- the sink: smtp-sink, counting messages ---------------------------------------------------

async function startSink() {
  const port = await freePort();
  const args = ['-c', ...(IS_ROOT ? ['-u', 'nobody'] : []), `127.0.0.1:${port}`, '1024'];
  const child = track(spawn(which('smtp-sink'), args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let count = 0;
  let tail = '';
  let errors = '';
  child.stdout.on('data', (chunk) => {
    tail = (tail + chunk.toString()).slice(-200);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    if (all.length) count = Number(all[all.length - 1][1]);
  });
  child.stderr.on('data', (chunk) => (errors += chunk.toString()));
  await waitGreeting(port, 5000).catch((err) => {
    throw new Error(`smtp-sink did not start: ${err.message} ${errors}`);
  });
  return {
    port,
    get count() {
      return count;
    },
    async waitFor(target, timeoutMs) {
      await waitUntil(() => count >= target, timeoutMs, `${target} messages at the sink (have ${count})`);
    },
    stop() {
      child.kill('SIGTERM');
    },
  };
}

// --- smtp-source -------------------------------------------------------------------------------

/** Runs smtp-source; resolves the wall time in ms. `reuse`: several messages per connection. */
async function smtpSource(port, { sessions, messages, size, reuse = false, timeoutMs = 600_000 }) {
  const args = [
    ...(reuse ? ['-d'] : []),
    '-s',
    String(sessions),
    '-m',
    String(messages),
    '-l',
    String(size),
    '-f',
    'device@corp.test',
    '-t',
    'someone@example.com',
    '-M',
    'client.bench.test',
    `127.0.0.1:${port}`,
  ];
  const started = now();
  const child = track(spawn(which('smtp-source'), args, { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = await once(child, 'exit');
  clearTimeout(timer);
  if (code !== 0) throw new Error(`smtp-source exited ${code}: ${stderr.slice(0, 500)}`);
  if (stderr.trim()) console.error(`  smtp-source: ${stderr.trim().slice(0, 300)}`);
  return now() - started;
}

// --- our own small client: accept latency and idle connections --------------------------------

class SmtpLine {
  constructor(socket) {
    this.socket = socket;
    this.buffer = '';
    this.waiters = [];
    this.lines = [];
    socket.on('data', (d) => {
      this.buffer += d.toString('latin1');
      let i;
      while ((i = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, i).replace(/\r$/, '');
        this.buffer = this.buffer.slice(i + 1);
        if (/^\d{3}-/.test(line)) continue;
        const w = this.waiters.shift();
        if (w) w.resolve(line);
        else this.lines.push(line);
      }
    });
    const fail = () => {
      for (const w of this.waiters.splice(0)) w.reject(new Error('connection closed'));
    };
    socket.on('close', fail);
    socket.on('error', fail);
  }
  reply() {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
  async command(text, expect) {
    this.socket.write(text);
    const line = await this.reply();
    if (!line.startsWith(expect)) throw new Error(`${text.trim().slice(0, 30)} → ${line}`);
    return line;
  }
}

function connect(port, localAddress) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** `conns` persistent sessions, paced to `rate` messages/s in total; times end-of-DATA → 250. */
async function latencyRun(port, { rate, conns, seconds }) {
  const body =
    'From: device@corp.test\r\nTo: someone@example.com\r\nSubject: latency\r\n\r\n' +
    `${'x'.repeat(76)}\r\n`.repeat(25) +
    '.\r\n';
  const samples = [];
  const interval = (1000 * conns) / rate;
  const end = now() + seconds * 1000;
  let sent = 0;
  await Promise.all(
    Array.from({ length: conns }, async (_, i) => {
      const socket = await connect(port);
      socket.setNoDelay(true);
      const smtp = new SmtpLine(socket);
      await smtp.reply(); // greeting
      await smtp.command('EHLO client.bench.test\r\n', '250');
      await sleep((interval * i) / conns);
      let next = now();
      while (next < end) {
        await smtp.command('MAIL FROM:<device@corp.test>\r\n', '250');
        await smtp.command('RCPT TO:<someone@example.com>\r\n', '250');
        await smtp.command('DATA\r\n', '354');
        // The whole message and its final dot in one write (no Nagle delay between the two):
        // the time measured is the server's, from the end of DATA to its 250.
        const t0 = now();
        await smtp.command(body, '250');
        samples.push(now() - t0);
        sent++;
        next += interval;
        const wait = next - now();
        if (wait > 0) await sleep(wait);
      }
      await smtp.command('QUIT\r\n', '221').catch(() => undefined);
      socket.destroy();
    }),
  );
  samples.sort((a, b) => a - b);
  return { sent, p50: percentile(samples, 50), p99: percentile(samples, 99), max: samples.at(-1) };
}

/** Opens `count` connections (spread over 127.0.1.x source addresses), each waiting for its greeting. */
async function openIdle(port, count, timeoutMs = 120_000) {
  const sockets = [];
  const deadline = now() + timeoutMs;
  let greeted = 0;
  const batch = 50;
  for (let i = 0; i < count; i += batch) {
    const group = await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, async (_, j) => {
        const localAddress = `127.0.1.${1 + ((i + j) % 100)}`;
        const socket = await connect(port, localAddress);
        socket.on('error', () => undefined);
        const first = await new Promise((resolve) => {
          const timer = setTimeout(() => resolve(''), Math.max(1000, deadline - now()));
          socket.once('data', (d) => {
            clearTimeout(timer);
            resolve(d.toString());
          });
        });
        if (first.startsWith('220')) greeted++;
        return socket;
      }),
    );
    sockets.push(...group);
  }
  return { sockets, greeted };
}

// --- the two servers ---------------------------------------------------------------------------

async function startSmarthost(sinkPort, { spoolDir, waitReady = true } = {}) {
  const dir = tempDir('smarthost');
  const port = await freePort();
  const config = {
    hostname: 'smarthost.bench.test',
    listen: [{ host: '127.0.0.1', port, starttls: false }],
    upstream: { name: 'sink', host: '127.0.0.1', port: sinkPort, tls: 'none', maxConnections: 20 },
    spool: { dir: spoolDir ?? path.join(dir, 'data') },
    queue: { concurrency: 50 },
    limits: { maxConnections: 2000, maxMessageSize: '50MB' },
    allowlist: [{ cidr: '127.0.0.0/8', name: 'lan' }],
    log: { level: 'info', format: 'json' },
    shutdown: { grace: '2s' },
  };
  const configFile = path.join(dir, 'smarthost.yml');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  const logFd = fs.openSync(path.join(dir, 'smarthost.log'), 'a');
  const started = now();
  const child = track(
    // BENCH_NODE_ARGS: node options for the relay only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
    // to see where its time goes under the benchmark's load.
    spawn(process.execPath, [...nodeArgs, path.join(REPO, 'bin', 'smarthost.js'), 'start', '-c', configFile], {
      cwd: dir,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, NODE_ENV: 'production' },
    }),
  );
  fs.closeSync(logFd);
  const server = {
    name: 'smarthost',
    port,
    started,
    child,
    pids: () => [child.pid],
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
  };
  if (waitReady) await waitGreeting(port, 30_000);
  return server;
}

function postfixCmd(configDir, args) {
  // Postfix commands write their errors to syslog, or to stderr on a terminal; `script` gives
  // them one so a failure says why.
  const r = spawnSync('script', ['-qec', ['postfix', '-c', configDir, ...args].join(' '), '/dev/null'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { ok: r.status === 0, output: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

async function startPostfix(sinkPort) {
  const dir = tempDir('postfix');
  const etc = path.join(dir, 'etc');
  const queue = path.join(dir, 'queue');
  const data = path.join(dir, 'data');
  for (const d of [etc, queue, data]) fs.mkdirSync(d, { mode: 0o755 });
  execFileSync('chown', ['postfix', data]);
  const port = await freePort();
  // Debian's master.cf as shipped, with: the smtpd service on our loopback port, no chroot
  // (a chroot would need a copy of /etc in the private queue directory), and the pipe
  // services for software that is not installed dropped.
  const shipped = fs.readFileSync('/usr/share/postfix/master.cf.dist', 'utf8').split('\n');
  const master = [];
  let skipping = false;
  for (const line of shipped) {
    if (/^\s/.test(line) && skipping) continue;
    skipping = /^(maildrop|uucp|ifmail|bsmtp|scalemail-backend|mailman)\s/.test(line);
    if (skipping) continue;
    const fields = line.split(/\s+/);
    if (/^[a-z0-9]/i.test(line) && fields.length >= 8) {
      if (fields[0] === 'smtp' && fields[1] === 'inet') fields[0] = `127.0.0.1:${port}`;
      fields[4] = 'n';
      master.push(fields.join('\t'));
    } else {
      master.push(line);
    }
  }
  fs.writeFileSync(path.join(etc, 'master.cf'), master.join('\n'));
  fs.writeFileSync(
    path.join(etc, 'main.cf'),
    [
      '# A relay for the LAN, as in smarthost, in its own directories. fsync as shipped.',
      'compatibility_level = 3.6',
      `queue_directory = ${queue}`,
      `data_directory = ${data}`,
      'mail_owner = postfix',
      'setgid_group = postdrop',
      'inet_interfaces = 127.0.0.1',
      'inet_protocols = ipv4',
      'myhostname = postfix.bench.test',
      'mydestination =',
      'mynetworks = 127.0.0.0/8',
      `relayhost = [127.0.0.1]:${sinkPort}`,
      'smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination',
      'local_transport = error:local delivery is disabled',
      'alias_maps =',
      'alias_database =',
      'smtp_tls_security_level = none',
      'smtpd_tls_security_level = none',
      'biff = no',
      'message_size_limit = 52428800',
      '# 1,000 idle clients need 1,000 smtpd processes (shipped: 100)',
      'default_process_limit = 1200',
      `maillog_file_prefixes = ${dir}`,
      `maillog_file = ${path.join(dir, 'maillog')}`,
      '',
    ].join('\n'),
  );
  const server = {
    name: 'Postfix',
    port,
    masterPid() {
      try {
        return Number(fs.readFileSync(path.join(queue, 'pid', 'master.pid'), 'utf8').trim());
      } catch {
        return 0;
      }
    },
    pids() {
      const master = this.masterPid();
      return master ? [master, ...childrenOf(master)] : [];
    },
    stopped: false,
    async stop() {
      if (this.stopped) return;
      this.stopped = true;
      postfixCmd(etc, ['stop']);
      const master = this.masterPid();
      await waitUntil(() => !master || !fs.existsSync(`/proc/${master}`), 20_000, 'Postfix to stop').catch(
        () => postfixCmd(etc, ['abort']),
      );
    },
  };
  cleanups.push(() => {
    if (!server.stopped) postfixCmd(etc, ['abort']);
  });
  const check = postfixCmd(etc, ['check']);
  const start = postfixCmd(etc, ['start']);
  if (!start.ok) throw new Error(`postfix -c ${etc} start failed:\n${check.output}\n${start.output}`);
  await waitGreeting(port, 30_000);
  return server;
}

// --- scenarios ---------------------------------------------------------------------------------

const rows = [];
/**
 * Records one measurement. A scenario measured more than once keeps every value (in the JSON)
 * and shows the best: other work on a shared machine only ever makes a figure worse.
 */
function record(key, scenario, unit, better, values) {
  let row = rows.find((r) => r.key === key);
  if (!row) rows.push((row = { key, scenario, unit, better, values: {}, runs: {} }));
  for (const [name, value] of Object.entries(values)) {
    if (typeof value !== 'number') {
      row.values[name] = value;
      continue;
    }
    (row.runs[name] ??= []).push(value);
    const runs = row.runs[name];
    row.values[name] = better === 'lower' ? Math.min(...runs) : Math.max(...runs);
  }
}

async function drained(sink, target, timeoutMs = 300_000) {
  await sink.waitFor(target, timeoutMs);
}

/** Warm-up (JIT, process pools, connection caches). */
async function warmUp(server, sink) {
  const base = sink.count;
  await smtpSource(server.port, { sessions: 10, messages: N.warmup, size: 2048 });
  await drained(sink, base + N.warmup);
}

const logFor = (server) => (text) => console.log(`  [${server.name}] ${text}`);

/** The scenarios, each run against one server; `repeat`: how often each server runs it. */
const SCENARIOS = [
  {
    key: 'small20',
    repeat: 2,
    async run(server, sink) {
      const name = server.name;
      for (const reuse of [false, true]) {
        const base = sink.count;
        const start = now();
        const ms = await smtpSource(server.port, { sessions: 20, messages: N.small, size: 2048, reuse });
        await drained(sink, base + N.small);
        const e2e = now() - start;
        const label = reuse ? 'connections reused (-d)' : 'a new connection per message';
        logFor(server)(
          `small x${N.small}, 20 sessions, ${label}: accepted in ${ms.toFixed(0)} ms, delivered in ${e2e.toFixed(0)} ms`,
        );
        const suffix = reuse ? '_reuse' : '';
        record(`small20_acc${suffix}`, `2 KB, 20 sessions, ${label}: accepted`, 'msg/s', 'higher', {
          [name]: (N.small * 1000) / ms,
        });
        record(
          `small20_e2e${suffix}`,
          `2 KB, 20 sessions, ${label}: delivered (end to end)`,
          'msg/s',
          'higher',
          {
            [name]: (N.small * 1000) / e2e,
          },
        );
      }
    },
  },
  {
    key: 'seq',
    repeat: 2,
    async run(server, sink) {
      const base = sink.count;
      const ms = await smtpSource(server.port, { sessions: 1, messages: N.seq, size: 2048 });
      await drained(sink, base + N.seq);
      logFor(server)(`sequential x${N.seq}, a new connection per message: ${ms.toFixed(0)} ms`);
      record('seq', '2 KB, 1 client, a new connection per message', 'msg/s', 'higher', {
        [server.name]: (N.seq * 1000) / ms,
      });
    },
  },
  {
    key: 'large',
    repeat: 2,
    async run(server, sink) {
      const sampler = new MemorySampler(() => server.pids()).start();
      const base = sink.count;
      const start = now();
      await smtpSource(server.port, { sessions: 2, messages: N.largeCount, size: N.largeSize });
      await drained(sink, base + N.largeCount);
      const ms = now() - start;
      const peakKb = sampler.stop();
      const mb = (N.largeCount * N.largeSize) / 1024 / 1024;
      logFor(server)(
        `10 MB x${N.largeCount}: delivered in ${ms.toFixed(0)} ms, peak ${(peakKb / 1024).toFixed(0)} MB`,
      );
      record('large_mbs', '10 MB messages, 2 sessions: end to end', 'MB/s', 'higher', {
        [server.name]: (mb * 1000) / ms,
      });
      record('large_rss', '10 MB messages: peak memory (PSS, all processes)', 'MB', 'lower', {
        [server.name]: peakKb / 1024,
      });
    },
  },
  {
    key: 'latency',
    repeat: 2,
    async run(server, sink) {
      const base = sink.count;
      const r = await latencyRun(server.port, {
        rate: N.latencyRate,
        conns: N.latencyConns,
        seconds: N.latencySeconds,
      });
      await drained(sink, base + r.sent);
      logFor(server)(
        `latency at ${N.latencyRate}/s over ${N.latencyConns} sessions: ${r.sent} messages, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(2)} ms`,
      );
      const label = `accept latency (end of DATA → 250) at ${N.latencyRate} msg/s`;
      record('lat_p50', `${label}: p50`, 'ms', 'lower', { [server.name]: r.p50 });
      record('lat_p99', `${label}: p99`, 'ms', 'lower', { [server.name]: r.p99 });
    },
  },
  {
    key: 'idle',
    repeat: 1,
    async run(server) {
      const sampler = new MemorySampler(() => server.pids());
      const before = sampler.current();
      const { sockets, greeted } = await openIdle(server.port, N.idle);
      await sleep(2000);
      const during = sampler.current();
      for (const s of sockets) s.destroy();
      logFor(server)(
        `${N.idle} idle connections (${greeted} greeted): ${(before / 1024).toFixed(0)} MB before, ${(during / 1024).toFixed(0)} MB with them`,
      );
      record('idle', `${N.idle} idle connections: memory (PSS, all processes)`, 'MB', 'lower', {
        [server.name]: during / 1024,
        ...(greeted < N.idle ? { [`${server.name}_note`]: `${greeted} greeted` } : {}),
      });
      await sleep(1000);
    },
  },
];

/**
 * Runs every scenario on both servers, interleaved (smarthost then Postfix, then the other
 * way round), so that a burst of other work on the machine does not land on one side only.
 */
async function runScenarios(servers, sink) {
  for (const server of servers) await warmUp(server, sink);
  for (const scenario of SCENARIOS) {
    if (!want(scenario.key)) continue;
    const repeat = QUICK ? 1 : scenario.repeat;
    for (let round = 0; round < repeat; round++) {
      const order = round % 2 === 0 ? servers : [...servers].reverse();
      for (const server of order) await scenario.run(server, sink);
    }
  }
}

/** Writes `count` queued messages straight into a smarthost spool, in its own format (src/spool). */
async function writeSpool(spoolDir, count) {
  // The spool's own id format (the bench runs after a build).
  const { newQueueId } = await import('../dist/src/spool/entry.js');
  const queue = path.join(spoolDir, 'queue');
  for (const d of ['queue', 'tmp', 'failed']) fs.mkdirSync(path.join(spoolDir, d), { recursive: true });
  const body = Buffer.from(
    'From: device@corp.test\r\nTo: someone@example.com\r\nSubject: waiting\r\n\r\n' +
      'x'.repeat(1900) +
      '\r\n',
  );
  const t = Date.now() - count;
  for (let i = 0; i < count; i++) {
    const created = t + i;
    const id = newQueueId(created);
    fs.writeFileSync(path.join(queue, `${id}.eml`), body);
    const entry = {
      id,
      from: 'device@corp.test',
      originalFrom: 'device@corp.test',
      recipients: [{ address: 'someone@example.com', status: 'pending' }],
      source: 'lan',
      client: { address: '127.0.0.1' },
      size: body.length,
      createdAt: created,
      attempts: 0,
      nextAttemptAt: created,
    };
    fs.writeFileSync(path.join(queue, `${id}.json`), JSON.stringify(entry));
  }
}

async function startupScenario(sink) {
  const dir = tempDir('spool');
  const spoolDir = path.join(dir, 'data');
  const t0 = now();
  await writeSpool(spoolDir, N.spool);
  console.log(
    `  [smarthost] wrote ${N.spool} messages into the spool in ${((now() - t0) / 1000).toFixed(1)} s`,
  );
  spawnSync('sync');
  const base = sink.count;
  const server = await startSmarthost(sink.port, { spoolDir, waitReady: false });
  let listening;
  const waitListen = waitGreeting(server.port, 120_000).then(() => (listening = now() - server.started));
  await sink.waitFor(base + 1, 120_000);
  const first = now() - server.started;
  await waitListen;
  console.log(
    `  [smarthost] ${N.spool} waiting: answering SMTP after ${listening.toFixed(0)} ms, first delivery after ${first.toFixed(0)} ms`,
  );
  record(
    'startup',
    `start-up with ${N.spool.toLocaleString('en')} messages waiting: first delivery`,
    'ms',
    'lower',
    {
      smarthost: first,
      Postfix_note: 'n/a',
    },
  );
  record(
    'startup_listen',
    `start-up with ${N.spool.toLocaleString('en')} messages waiting: answering SMTP`,
    'ms',
    'lower',
    {
      smarthost: listening,
      Postfix_note: 'n/a',
    },
  );
  server.child.kill('SIGKILL');
  await once(server.child, 'exit').catch(() => undefined);
}

// --- output ------------------------------------------------------------------------------------

function fmt(value, unit) {
  if (value === undefined || Number.isNaN(value)) return 'n/a';
  if (unit === 'ms' && value < 10) return value.toFixed(2);
  if (value >= 100) return Math.round(value).toLocaleString('en');
  return value.toFixed(1);
}

function table() {
  const header = ['scenario', 'unit', 'smarthost', 'Postfix', 'ratio (smarthost ÷ Postfix)', 'better'];
  const lines = rows
    .filter((r) => r.scenario)
    .map((r) => {
      const a = r.values.smarthost;
      const b = r.values.Postfix;
      const ratio = a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a';
      const note = (n) => (r.values[`${n}_note`] ? ` (${r.values[`${n}_note`]})` : '');
      return [
        r.scenario,
        r.unit,
        a === undefined ? (r.values.smarthost_note ?? 'n/a') : `${fmt(a, r.unit)}${note('smarthost')}`,
        b === undefined ? (r.values.Postfix_note ?? 'n/a') : `${fmt(b, r.unit)}${note('Postfix')}`,
        ratio,
        r.better,
      ];
    });
  const md = [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i >= 2 && i <= 4 ? '---:' : '---')).join('|')}|`,
    ...lines.map((l) => `| ${l.join(' | ')} |`),
  ].join('\n');
  return md;
}

function machine() {
  const cpu = os.cpus();
  const version = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
    } catch {
      return 'unknown';
    }
  };
  let fsType = 'unknown';
  try {
    fsType = execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '-T', os.tmpdir()], { encoding: 'utf8' }).trim();
  } catch {
    // leave unknown
  }
  return {
    cpu: `${cpu.length} × ${cpu[0]?.model ?? 'unknown'}`,
    memory: `${Math.round(os.totalmem() / 1024 / 1024 / 1024)} GB`,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    postfix: version('dpkg-query', ['-W', '-f=${Version}', 'postfix']),
    smarthost: JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).version,
    spoolFs: `${os.tmpdir()} (${fsType})`,
    loadAtStart: os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' '),
  };
}

// --- main --------------------------------------------------------------------------------------

async function main() {
  for (const tool of ['smtp-sink', 'smtp-source', ...(NO_POSTFIX ? [] : ['postfix'])]) {
    if (!which(tool)) {
      console.error(`bench: ${tool} not found. Install Debian's postfix package (apt-get install postfix).`);
      process.exit(2);
    }
  }
  if (!fs.existsSync(path.join(REPO, 'dist', 'src', 'cli', 'index.js'))) {
    console.error('bench: no build; run `npm run build` first');
    process.exit(2);
  }
  if (!NO_POSTFIX && !IS_ROOT) {
    console.error('bench: Postfix needs root to start (or use --no-postfix)');
    process.exit(2);
  }
  const started = new Date();
  const info = machine();
  console.log(
    `bench: ${info.cpu}, ${info.memory}, node ${info.node}, postfix ${info.postfix}${QUICK ? ' (quick)' : ''}`,
  );
  const sink = await startSink();
  console.log(`bench: smtp-sink on 127.0.0.1:${sink.port}`);

  const servers = [];
  try {
    console.log('bench: starting smarthost');
    servers.push(await startSmarthost(sink.port));
    if (!NO_POSTFIX) {
      console.log('bench: starting Postfix');
      servers.push(await startPostfix(sink.port));
    }
    await runScenarios(servers, sink);
  } finally {
    for (const server of servers) await server.stop();
  }

  if (want('startup')) {
    console.log('bench: start-up with a full spool');
    await startupScenario(sink);
  }
  sink.stop();

  const md = table();
  const endLoad = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  console.log(`\n${md}\n`);
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  fs.mkdirSync(RESULTS, { recursive: true });
  const result = { date: started.toISOString(), quick: QUICK, machine: info, counts: N, rows };
  // rows[].runs: every measurement; rows[].values: the best of them (shown in the table).
  fs.writeFileSync(path.join(RESULTS, `${stamp}.json`), JSON.stringify(result, null, 2));
  const report = [
    `# Benchmark run ${started.toISOString()}${QUICK ? ' (quick)' : ''}`,
    '',
    md,
    '',
    `Machine: ${info.cpu}, ${info.memory}, ${info.os}; Node ${info.node}; Postfix ${info.postfix}; ` +
      `spool and queue on ${info.spoolFs}; load average at start ${info.loadAtStart}, at the end ${endLoad}.`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(RESULTS, `${stamp}.md`), report);
  // A full run also refreshes latest.md and the table in BENCHMARKS.md (between its markers).
  const full = !QUICK && !NO_POSTFIX && ONLY.length === 0;
  if (full) fs.writeFileSync(path.join(RESULTS, 'latest.md'), report);
  const doc = path.join(REPO, 'BENCHMARKS.md');
  if (full && fs.existsSync(doc)) {
    const text = fs.readFileSync(doc, 'utf8');
    const updated = text.replace(
      /<!-- bench:table -->[\s\S]*<!-- \/bench:table -->/,
      `<!-- bench:table -->\n${report.split('\n').slice(2).join('\n').trim()}\n<!-- /bench:table -->`,
    );
    if (updated !== text) fs.writeFileSync(doc, updated);
  }
  console.log(
    `bench: results in bench/results/${stamp}.{json,md}${full ? ' and bench/results/latest.md' : ''}`,
  );
}

main()
  .catch((err) => {
    console.error(`bench: ${err.stack ?? err}`);
    process.exitCode = 1;
  })
  .finally(() => {
    cleanupAll();
    setTimeout(() => process.exit(), 100).unref();
  });
