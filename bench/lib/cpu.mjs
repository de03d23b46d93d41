// CPU time, counted so that it cannot flatter one side: every process a server runs, the
// short-lived ones included (Postfix forks smtpd, cleanup, qmgr, smtp... and reaps them), and
// the whole machine beside it, so that other work during a run shows up instead of hiding.
//
// Two ways to count a server's own processes, best first:
// - a cgroup (v1 cpuacct, or v2 cpu.stat): the server is started inside it, every process it
//   forks stays in it, and the kernel's counter keeps the time of those that exited;
// - the process tree in /proc: utime+stime+cutime+cstime of every live process under the
//   server's root. A child that exited and was reaped has its time in its parent's cutime, so
//   the sum only ever grows; a process that exits unreaped (a zombie's parent gone) is lost,
//   which the cgroup does not miss. Resolution: one clock tick (10 ms).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { cleanups, childrenOf, statFields } from './harness.mjs';

let clockTicks;
function ticksPerSecond() {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime+stime+cutime+cstime of one process, in clock ticks (0 when it is gone). */
function processTicks(pid) {
  // fields[0] is field 3 (state); utime..cstime are fields 14..17.
  return (statFields(pid) ?? []).slice(11, 15).reduce((sum, v) => sum + Number(v), 0);
}

/** Every live process under (and including) the given roots. */
function tree(roots) {
  const seen = new Set();
  const stack = [...roots];
  while (stack.length) {
    const pid = stack.pop();
    if (!pid || seen.has(pid)) continue;
    seen.add(pid);
    stack.push(...childrenOf(pid));
  }
  return [...seen];
}

/** CPU time (µs) of a process tree, from /proc. */
export function treeCpuMicros(roots) {
  const ticks = tree(roots).reduce((sum, pid) => sum + processTicks(pid), 0);
  return (ticks * 1e6) / ticksPerSecond();
}

/** µs used by this script's children that have exited and been reaped (smtp-source runs). */
export function reapedChildrenMicros() {
  const fields = statFields('self'); // cutime and cstime are fields 16 and 17
  return ((Number(fields[13]) + Number(fields[14])) * 1e6) / ticksPerSecond();
}

/** The machine's busy time (µs, all cores summed) and idle time, from /proc/stat. */
export function machineCpuMicros() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const perTick = 1e6 / ticksPerSecond();
  return {
    busy: (user + nice + system + irq + softirq + (steal ?? 0)) * perTick,
    idle: (idle + (iowait ?? 0)) * perTick,
  };
}

/**
 * CPU time (µs) of each of the kernel's own threads (kthreadd, pid 2, and its children), by pid:
 * the journal's commits, block I/O completions, writeback. During a run they mostly work for the
 * servers' fsyncs, outside either server's cgroup, so they are counted apart rather than as
 * other work. By pid, because kernel workers come and go: a sum over the threads of the moment
 * loses an exited one's whole time, and once made a run's kernel time negative.
 */
export function kernelThreadsMicros() {
  const byPid = new Map();
  for (const pid of [2, ...childrenOf(2)]) {
    const fields = statFields(pid);
    // utime and stime are fields 14 and 15.
    if (fields) byPid.set(pid, ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticksPerSecond());
  }
  return byPid;
}

/**
 * The kernel threads' time between two readings: each thread's growth, a new one's whole time
 * (it started meanwhile). A thread that exited in between is lost (its last part falls to
 * "other work", which only makes a run less likely to count as quiet).
 */
function kernelThreadsSince(earlier, later) {
  let micros = 0;
  for (const [pid, now] of later) {
    const before = earlier.get(pid) ?? 0;
    micros += now >= before ? now - before : now; // less than before: the pid went to a new thread
  }
  return micros;
}

function tryCgroup(name) {
  const candidates = [
    // v1: a cpuacct hierarchy of its own
    {
      root: '/sys/fs/cgroup/cpuacct',
      read: (dir) => Number(fs.readFileSync(path.join(dir, 'cpuacct.usage'), 'utf8')) / 1000,
    },
    // v2: the unified hierarchy (at /sys/fs/cgroup itself, or beside v1 at .../unified)
    ...['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].map((root) => ({
      root,
      read: (dir) =>
        Number(/^usage_usec (\d+)/m.exec(fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8'))?.[1]),
    })),
  ];
  for (const { root, read } of candidates) {
    const dir = path.join(root, `smarthost-bench-${process.pid}-${name}`);
    try {
      fs.mkdirSync(dir);
    } catch {
      continue;
    }
    try {
      if (!Number.isFinite(read(dir))) throw new Error('no counter');
      fs.accessSync(path.join(dir, 'cgroup.procs'), fs.constants.W_OK);
    } catch {
      fs.rmSync(dir, { recursive: true, force: true });
      continue;
    }
    cleanups.push(() => removeCgroup(dir));
    return { dir, read: () => read(dir) };
  }
  return undefined;
}

/** A cgroup can only be removed once empty: its processes go back to the root group first. */
function removeCgroup(dir) {
  try {
    const root = path.dirname(dir);
    for (const pid of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        fs.writeFileSync(path.join(root, 'cgroup.procs'), pid);
      } catch {
        // it exited meanwhile
      }
    }
    fs.rmdirSync(dir);
  } catch {
    // best effort: a leftover empty group costs nothing
  }
}

/**
 * The CPU meter of one party (a server, or the load tools): `wrap(cmd, args)` gives the command
 * line that starts a process inside its cgroup; `read()` the µs used so far by everything
 * started that way (cgroup), or what `fallback()` counts from /proc.
 */
export class CpuMeter {
  constructor(name) {
    this.name = name;
    this.group = tryCgroup(name);
    /** Without a cgroup: the µs to report, set by whoever starts the party's processes. */
    this.fallback = () => 0;
  }

  get method() {
    return this.group ? 'cgroup' : 'process tree';
  }

  /** [cmd, args] that start `cmd args` inside this meter's cgroup (unchanged without one). */
  wrap(cmd, args) {
    if (!this.group) return [cmd, args];
    const procs = path.join(this.group.dir, 'cgroup.procs');
    return ['/bin/sh', ['-c', `echo $$ > '${procs}' && exec "$0" "$@"`, cmd, ...args]];
  }

  read() {
    return this.group ? this.group.read() : this.fallback();
  }
}

/**
 * A snapshot of every meter and the machine; `since(earlier)` gives the deltas in µs, and what
 * the machine spent beyond the counted parties, the kernel's threads and this script: other
 * work, which makes a run unfair to the side with more processes.
 */
export function snapshot(meters) {
  const cpu = process.cpuUsage();
  return {
    meters: Object.fromEntries(meters.map((m) => [m.name, m.read()])),
    machine: machineCpuMicros(),
    kernel: kernelThreadsMicros(),
    self: cpu.user + cpu.system,
    at: performance.now(),
  };
}

export function since(earlier, later) {
  const parties = Object.fromEntries(
    Object.keys(later.meters).map((name) => [name, later.meters[name] - earlier.meters[name]]),
  );
  const machine = later.machine.busy - earlier.machine.busy;
  const self = later.self - earlier.self;
  const kernel = kernelThreadsSince(earlier.kernel, later.kernel);
  const counted = Object.values(parties).reduce((a, b) => a + b, 0) + self + kernel;
  const wallMicros = (later.at - earlier.at) * 1000;
  return { parties, machine, self, kernel, other: Math.max(0, machine - counted), wallMicros };
}
