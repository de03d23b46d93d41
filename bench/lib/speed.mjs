// The machine's own speed, measured around every run. On a virtual machine the same fixed
// amount of work can take 40 % longer from one minute to the next with nothing else running
// (a neighbour on the host, the host's own scheduling). Neither the load average nor "other
// work" sees that; a run of one side in a slow spell and of the other in a fast one would
// flatter one of them. So the bench times a fixed task before and after each measured run, and
// compares the two sides' timings at the end (bench.mjs): smarthost's runs must not have seen a
// faster machine than Postfix's. It first waits for the machine to settle (a server's files
// still being written back to disk, its processes winding down), so that what it times is the
// machine, not what the run left behind.
import os from 'node:os';
import { machineCpuMicros } from './cpu.mjs';
import { median, sleep } from './harness.mjs';

/** CPU milliseconds of one fixed task: string, object and Map work, like a server's. */
function fixedTask() {
  const started = process.cpuUsage();
  const map = new Map();
  let sum = 0;
  for (let i = 0; i < 1_000_000; i++) {
    map.set(i & 4095, { n: i, text: String(i) });
    sum += map.get(i & 4095).text.length;
  }
  const used = process.cpuUsage(started);
  if (sum === 0) throw new Error('unreachable: keeps the loop from being optimised away');
  return (used.user + used.system) / 1000;
}

// Once at load, so that the first timing is not the JIT's.
fixedTask();

/** Waits (at most `limitMs`) until the machine is nearly idle over a quarter of a second. */
async function settle(limitMs = 15_000) {
  const cores = os.cpus().length;
  for (const started = Date.now(); Date.now() - started < limitMs; ) {
    const before = machineCpuMicros().busy;
    await sleep(250);
    if (machineCpuMicros().busy - before < 0.05 * 250_000 * cores) return;
  }
}

/** The task's time once the machine has settled (the best of three: one interruption is not the machine). */
export async function speedSample() {
  await settle();
  return Math.min(fixedTask(), fixedTask(), fixedTask());
}

/**
 * The samples taken around each side's runs → how much faster the machine was around
 * smarthost's runs than around the others' (median against median: 1 when no faster), and a
 * line for the report. Only that way round can flatter smarthost: a machine slower around its
 * runs understates it, and does not stop a run from counting.
 */
export function speedSkew(samples, favoured = 'smarthost') {
  const sides = Object.entries(samples).filter(([, values]) => values.length > 0);
  if (sides.length < 2 || !samples[favoured]?.length) return { skew: 1, text: '' };
  const medians = sides.map(([name, values]) => [name, median(values), values]);
  const own = median(samples[favoured]);
  const others = Math.min(...medians.filter(([name]) => name !== favoured).map(([, m]) => m));
  const text = medians
    .map(
      ([name, m, values]) =>
        `${m.toFixed(0)} ms around ${name}'s runs (${Math.min(...values).toFixed(0)}–${Math.max(...values).toFixed(0)})`,
    )
    .join(', ');
  return { skew: Math.max(1, others / own), text: `a fixed CPU task took ${text}` };
}
