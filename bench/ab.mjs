#!/usr/bin/env node
// `npm run bench:ab -- <other checkout>`: this build against another build of smarthost, paired.
// On a shared machine the same build moves by up to 30 % between runs minutes apart, more than
// most changes are worth; measured side by side and at the same time, that noise lands on both.
//
//   npm run bench:ab -- ../smarthost-before                 accept latency, 6 rounds
//   npm run bench:ab -- ../smarthost-before --scenario=new  2 KB, 20 sessions, a new connection each
//   npm run bench:ab -- ../smarthost-before --scenario=reuse --rounds=4   (an even number)
//
// The other checkout must be built (npm ci && npm run build there; `git worktree add` makes
// one quickly). Both relays run at once, each with the bench's config, relaying to one sink.
// - latency: both are loaded at once (5 sessions at 50 msg/s each) for 10 s a round;
// - new, reuse: smtp-source runs against one, then the other, the order swapped every round.
// The result is the median over the rounds, and how many rounds this build won; new and reuse
// also give the rate end to end (until the sink has every message) and each relay's CPU time
// per message (bench/lib/cpu.mjs).
// Needs smtp-sink and smtp-source (Debian's postfix package); no root.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { cleanupAll, median, which } from './lib/harness.mjs';
import { latencyRun, smtpSource } from './lib/clients.mjs';
import { startSink, startSmarthost } from './lib/servers.mjs';

const REPO = path.resolve(import.meta.dirname, '..');
const argv = process.argv.slice(2);
const option = (name, fallback) => argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
const positional = argv.filter((a) => !a.startsWith('--'));
const other = positional[0];
const scenario = option('scenario', 'latency');
const rounds = Number(option('rounds', '6'));
// --this-node-args="--flag ..." / --other-node-args=...: node options for one side only (a V8
// flag measured against the same build without it: give the same checkout twice).
const argsFor = (side) => {
  const value = argv.find((a) => a.startsWith(`--${side}-node-args=`))?.slice(`--${side}-node-args=`.length);
  return value === undefined ? {} : { nodeArgs: value.split(' ').filter(Boolean) };
};
const MESSAGES = 3000;
const WARM_UP = 3000;

function usage(problem) {
  console.error(
    `bench:ab: ${problem}\nusage: npm run bench:ab -- <other checkout> [--scenario=latency|new|reuse] [--rounds=N, even] [--this-node-args="..."] [--other-node-args="..."]`,
  );
  process.exit(2);
}

/** One round on both relays; returns { [name]: { figure: value } } (p50 and p99, or rate). */
async function round(relays, sink) {
  if (scenario === 'latency') {
    const runs = await Promise.all(
      relays.map((r) => latencyRun(r.port, { rate: 50, conns: 5, seconds: 10 })),
    );
    return Object.fromEntries(relays.map((r, i) => [r.name, { p50: runs[i].p50, p99: runs[i].p99 }]));
  }
  const out = {};
  for (const r of relays) {
    const base = sink.count;
    const before = r.cpu.read();
    const start = performance.now();
    const ms = await smtpSource(r.port, {
      sessions: 20,
      messages: MESSAGES,
      size: 2048,
      reuse: scenario === 'reuse',
    });
    // The next relay starts only when this one has delivered everything, not beside its backlog.
    await sink.waitFor(base + MESSAGES, 300_000);
    const e2e = (MESSAGES * 1000) / (performance.now() - start);
    // CPU per message of the relay's own process (its delivery included): the figure a busy
    // machine moves least, since it counts work rather than time.
    out[r.name] = { rate: (MESSAGES * 1000) / ms, e2e, cpu: (r.cpu.read() - before) / MESSAGES };
  }
  return out;
}

async function main() {
  if (!other) usage('which checkout to compare with?');
  if (positional.length > 1) usage(`one checkout only, not ${positional.join(' and ')}`);
  const unknown = argv.filter(
    (a) => a.startsWith('--') && !/^--(scenario|rounds|this-node-args|other-node-args)=/.test(a),
  );
  if (unknown.length) usage(`unknown option ${unknown.join(' ')}`);
  if (!['latency', 'new', 'reuse'].includes(scenario)) usage(`no scenario ${scenario}`);
  // An even number, so that each build goes first as often as the other.
  if (!Number.isInteger(rounds) || rounds < 2 || rounds % 2) usage(`--rounds must be an even number ≥ 2`);
  for (const tool of ['smtp-sink', 'smtp-source'])
    if (!which(tool)) usage(`${tool} not found (apt-get install postfix)`);
  // npm runs scripts from the package root: a relative path is the user's, from where they typed it.
  const otherRepo = path.resolve(process.env.INIT_CWD ?? process.cwd(), other);
  for (const repo of [REPO, otherRepo]) {
    if (!fs.existsSync(path.join(repo, 'dist', 'src', 'cli', 'index.js')))
      usage(`${repo} has no build (npm run build)`);
  }
  const sink = await startSink();
  const relays = [
    await startSmarthost(sink.port, { name: 'this', repo: REPO, ...argsFor('this') }),
    await startSmarthost(sink.port, { name: 'other', repo: otherRepo, ...argsFor('other') }),
  ];
  try {
    console.log(`bench:ab: this (${REPO}) against other (${otherRepo}), ${scenario}, ${rounds} rounds`);
    // Warm both up (V8 compiling their hot paths, their heaps growing): a build's first
    // thousands of messages cost it more CPU than later ones.
    const warmUp = sink.count + 2 * WARM_UP;
    for (const r of relays) await smtpSource(r.port, { sessions: 20, messages: WARM_UP, size: 2048 });
    await sink.waitFor(warmUp, 120_000);
    const results = [];
    for (let i = 0; i < rounds; i++) {
      const order = i % 2 === 0 ? relays : [...relays].reverse();
      const result = await round(order, sink);
      results.push(result);
      const show = (name) =>
        Object.entries(result[name])
          .map(([k, v]) => `${k} ${v.toFixed(['rate', 'e2e', 'cpu'].includes(k) ? 0 : 2)}`)
          .join(', ');
      console.log(`  round ${i + 1}: this ${show('this')} | other ${show('other')}`);
    }
    const keys = Object.keys(results[0].this);
    console.log('');
    for (const key of keys) {
      const higherWins = key === 'rate' || key === 'e2e';
      const unit = { rate: 'msg/s', e2e: 'msg/s', cpu: 'µs/msg' }[key] ?? 'ms';
      const digits = ['rate', 'e2e', 'cpu'].includes(key) ? 0 : 2;
      const mine = median(results.map((r) => r.this[key]));
      const theirs = median(results.map((r) => r.other[key]));
      const won = results.filter((r) =>
        higherWins ? r.this[key] > r.other[key] : r.this[key] < r.other[key],
      ).length;
      console.log(
        `${key.padEnd(5)} median: this ${mine.toFixed(digits)} ${unit}, other ${theirs.toFixed(digits)} ${unit} ` +
          `(this ÷ other ${(mine / theirs).toFixed(2)}, ${higherWins ? 'higher' : 'lower'} is better); this won ${won} of ${rounds} rounds`,
      );
    }
  } finally {
    for (const r of relays) await r.stop();
    sink.stop();
  }
}

main()
  .catch((err) => {
    console.error(`bench:ab: ${err.stack ?? err}`);
    process.exitCode = 1;
  })
  .finally(() => {
    cleanupAll();
    setTimeout(() => process.exit(), 100).unref();
  });
