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
//
// A run rewrites BENCHMARKS.md's table only when the machine was quiet: a 1-minute load below
// BENCH_MAX_LOAD at the start, other work under 5 % of the machine during each run (the
// kernel's own threads are counted apart: they mostly do the servers' disk work), and a fixed
// CPU task (lib/speed.mjs) no faster around smarthost's runs than around Postfix's.
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cleanupAll, MemorySampler, now, sleep, tempDir, waitGreeting, which } from './lib/harness.mjs';
import { latencyRun, openIdle, smtpSource } from './lib/clients.mjs';
import { startPostfix, startSink, startSmarthost, toolsMeter } from './lib/servers.mjs';
import { speedSample, speedSkew } from './lib/speed.mjs';
import { since, snapshot } from './lib/cpu.mjs';

const REPO = path.resolve(import.meta.dirname, '..');
const RESULTS = path.join(REPO, 'bench', 'results');
const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const NO_POSTFIX = argv.includes('--no-postfix');
const ONLY = (argv.find((a) => a.startsWith('--only=')) ?? '').slice(7).split(',').filter(Boolean);
// BENCH_WARMUP=N: a different warm-up, to see what it changes; such a run does not make the table.
const CUSTOM_WARMUP = process.env.BENCH_WARMUP !== undefined;
const want = (name) => ONLY.length === 0 || ONLY.includes(name);
const IS_ROOT = process.getuid?.() === 0;
const CORES = os.cpus().length;
// A machine is quiet enough to publish from when its 1-minute load average is below this
// (BENCH_MAX_LOAD), and other work took less than OTHER_WORK_LIMIT of its CPU during the runs.
const MAX_LOAD = Number(process.env.BENCH_MAX_LOAD ?? 0.5);
const OTHER_WORK_LIMIT = 0.05;
// ...and a fixed task took no less time around smarthost's runs than around Postfix's
// (lib/speed.mjs), within this fraction.
const SPEED_SKEW_LIMIT = 0.15;

const N = {
  // Messages each server takes before anything is measured. 5,000 was tried (BENCHMARKS.md,
  // item 32): it did not speed smarthost up in the bench, and Postfix ran slower after it.
  warmup: Number(process.env.BENCH_WARMUP ?? (QUICK ? 100 : 300)),
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

/** What other work took of the machine during the measured runs, as a fraction, worst run. */
const quiet = { worstOther: 0, where: '' };

/** The fixed task's time (ms) before and after each measured run, by server (lib/speed.mjs). */
const speeds = {};

/**
 * Runs `measure` and records the CPU time per message of the server's own processes and of the
 * whole machine (load tools included: the same for both sides), beside the scenario's rates.
 * `messages`: how many the run sent, or a function that says so once it has run.
 */
async function withCpu(server, messages, measure) {
  (speeds[server.name] ??= []).push(await speedSample());
  const before = snapshot([server.cpu, toolsMeter]);
  await measure();
  const d = since(before, snapshot([server.cpu, toolsMeter]));
  speeds[server.name].push(await speedSample());
  const share = d.other / (d.wallMicros * CORES);
  const count = typeof messages === 'function' ? messages() : messages;
  const perMsg = (us) => us / count;
  logFor(server)(
    `  CPU per message: own ${perMsg(d.parties[server.name]).toFixed(0)} µs, load tools ${perMsg(d.parties.tools).toFixed(0)} µs, ` +
      `kernel threads ${perMsg(d.kernel).toFixed(0)} µs, whole machine ${perMsg(d.machine).toFixed(0)} µs; ` +
      `other work ${(share * 100).toFixed(1)} % of the machine`,
  );
  return { share, own: perMsg(d.parties[server.name]), machine: perMsg(d.machine) };
}

/** Records the CPU rows of one measurement (after its rates, so the table reads rate first). */
function recordCpu(server, key, label, cpu) {
  if (cpu.share > quiet.worstOther)
    Object.assign(quiet, { worstOther: cpu.share, where: `${server.name}, ${label}` });
  record(`${key}_cpu_own`, `${label}: CPU per message, the server's own processes`, 'µs', 'lower', {
    [server.name]: cpu.own,
  });
  record(`${key}_cpu_machine`, `${label}: CPU per message, whole machine`, 'µs', 'lower', {
    [server.name]: cpu.machine,
  });
}

async function drained(sink, target, timeoutMs = 300_000) {
  await sink.waitFor(target, timeoutMs);
}

/** Warm-up (JIT, heaps, process pools, connection caches): not measured, the same for both. */
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
        const label = reuse ? 'connections reused (-d)' : 'a new connection per message';
        const base = sink.count;
        let ms = 0;
        let e2e = 0;
        const cpu = await withCpu(server, N.small, async () => {
          const start = now();
          ms = await smtpSource(server.port, { sessions: 20, messages: N.small, size: 2048, reuse });
          await drained(sink, base + N.small);
          e2e = now() - start;
        });
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
        recordCpu(server, `small20${suffix}`, `2 KB, 20 sessions, ${label}`, cpu);
      }
    },
  },
  {
    key: 'seq',
    repeat: 2,
    async run(server, sink) {
      const base = sink.count;
      let ms = 0;
      const cpu = await withCpu(server, N.seq, async () => {
        ms = await smtpSource(server.port, { sessions: 1, messages: N.seq, size: 2048 });
        await drained(sink, base + N.seq);
      });
      logFor(server)(`sequential x${N.seq}, a new connection per message: ${ms.toFixed(0)} ms`);
      record('seq', '2 KB, 1 client, a new connection per message', 'msg/s', 'higher', {
        [server.name]: (N.seq * 1000) / ms,
      });
      recordCpu(server, 'seq', '2 KB, 1 client, a new connection per message', cpu);
    },
  },
  {
    key: 'large',
    repeat: 2,
    async run(server, sink) {
      const sampler = new MemorySampler(() => server.pids()).start();
      const base = sink.count;
      let ms = 0;
      const cpu = await withCpu(server, N.largeCount, async () => {
        const start = now();
        await smtpSource(server.port, { sessions: 2, messages: N.largeCount, size: N.largeSize });
        await drained(sink, base + N.largeCount);
        ms = now() - start;
      });
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
      recordCpu(server, 'large', '10 MB messages, 2 sessions', cpu);
    },
  },
  {
    key: 'latency',
    repeat: 2,
    async run(server, sink) {
      const base = sink.count;
      let r;
      const cpu = await withCpu(
        server,
        () => r.sent,
        async () => {
          r = await latencyRun(server.port, {
            rate: N.latencyRate,
            conns: N.latencyConns,
            seconds: N.latencySeconds,
          });
          await drained(sink, base + r.sent);
        },
      );
      logFor(server)(
        `latency at ${N.latencyRate}/s over ${N.latencyConns} sessions: ${r.sent} messages, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(2)} ms`,
      );
      const label = `accept latency (end of DATA → 250) at ${N.latencyRate} msg/s`;
      record('lat_p50', `${label}: p50`, 'ms', 'lower', { [server.name]: r.p50 });
      record('lat_p99', `${label}: p99`, 'ms', 'lower', { [server.name]: r.p99 });
      recordCpu(server, 'lat', `2 KB at ${N.latencyRate} msg/s over ${N.latencyConns} sessions`, cpu);
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
    cpuAccounting: `${toolsMeter.method}`,
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
  const loadAtStart = os.loadavg()[0];
  const busyAtStart = loadAtStart > MAX_LOAD;
  if (busyAtStart) {
    console.warn(
      `bench: WARNING: the machine is busy (1-minute load average ${loadAtStart.toFixed(2)} > ${MAX_LOAD}). ` +
        "Other work slows Postfix's many processes more than one Node process and flatters smarthost; " +
        'this run will not update BENCHMARKS.md. Stop other work and wait for the load to fall.',
    );
  }
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
  const speed = speedSkew(speeds);
  const busyDuring = quiet.worstOther > OTHER_WORK_LIMIT;
  const speedFavoured = speed.skew > 1 + SPEED_SKEW_LIMIT;
  const verdict = busyAtStart
    ? `busy at the start (load ${loadAtStart.toFixed(2)})`
    : busyDuring
      ? `busy during a run (other work took ${(quiet.worstOther * 100).toFixed(1)} % of the machine: ${quiet.where})`
      : speedFavoured
        ? `faster around smarthost's runs than around Postfix's (${speed.text})`
        : 'quiet';
  const result = {
    date: started.toISOString(),
    quick: QUICK,
    machine: info,
    quietness: { verdict, ...quiet, speeds, speedSkew: speed.skew },
    counts: N,
    rows,
  };
  // rows[].runs: every measurement; rows[].values: the best of them (shown in the table).
  fs.writeFileSync(path.join(RESULTS, `${stamp}.json`), JSON.stringify(result, null, 2));
  const report = [
    `# Benchmark run ${started.toISOString()}${QUICK ? ' (quick)' : ''}`,
    '',
    md,
    '',
    `Machine: ${info.cpu}, ${info.memory}, ${info.os}; Node ${info.node}; Postfix ${info.postfix}; ` +
      `spool and queue on ${info.spoolFs}; a warm-up of ${N.warmup} messages each; load average at start ${info.loadAtStart}, at the end ${endLoad}; ` +
      `CPU counted by ${info.cpuAccounting}; the machine was ${verdict}` +
      `${speed.text && !speedFavoured ? `; ${speed.text}` : ''}.`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(RESULTS, `${stamp}.md`), report);
  // A full run also refreshes latest.md and the table in BENCHMARKS.md (between its markers).
  // Never from a busy machine: such figures flatter smarthost (see BENCHMARKS.md).
  const partial = QUICK || NO_POSTFIX || ONLY.length > 0 || CUSTOM_WARMUP;
  const full = !partial && !busyAtStart && !busyDuring && !speedFavoured;
  if (!partial && !full) {
    console.warn(`bench: not updating BENCHMARKS.md or latest.md: the machine was ${verdict}`);
  }
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
