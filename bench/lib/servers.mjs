// The servers under test and the sink they relay to: smtp-sink, smarthost (this checkout or
// another one), and a second Postfix instance in its own directories.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import {
  childrenOf,
  cleanups,
  freePort,
  now,
  tempDir,
  track,
  waitGreeting,
  waitUntil,
  which,
} from './harness.mjs';
import { CpuMeter, reapedChildrenMicros, treeCpuMicros } from './cpu.mjs';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const IS_ROOT = process.getuid?.() === 0;
const envNodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

// --- the sink: smtp-sink, counting messages ---------------------------------------------------

/**
 * The load tools' CPU meter: smtp-sink and every smtp-source run. They are the same for both
 * sides, and counted so that the machine's time can be split into server, tools and other work.
 */
export const toolsMeter = new CpuMeter('tools');

export async function startSink() {
  const port = await freePort();
  const args = ['-c', ...(IS_ROOT ? ['-u', 'nobody'] : []), `127.0.0.1:${port}`, '1024'];
  const [cmd, argv] = toolsMeter.wrap(which('smtp-sink'), args);
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  // Without a cgroup: the sink's own time, and that of smtp-source runs this script has reaped.
  toolsMeter.fallback = () => treeCpuMicros([child.pid]) + reapedChildrenMicros();
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

// --- the two servers ---------------------------------------------------------------------------

/**
 * Starts smarthost from `repo` (default: this checkout; it must be built) with the bench's
 * config, relaying to the sink. `name` labels it in the output.
 */
export async function startSmarthost(
  sinkPort,
  { spoolDir, waitReady = true, repo = REPO, name = 'smarthost', nodeArgs = envNodeArgs } = {},
) {
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
  const cpu = new CpuMeter(name);
  // BENCH_NODE_ARGS: node options for the relay only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  // to see where its time goes under the benchmark's load.
  const [cmd, argv] = cpu.wrap(process.execPath, [
    ...nodeArgs,
    path.join(repo, 'bin', 'smarthost.js'),
    'start',
    '-c',
    configFile,
  ]);
  const child = track(
    spawn(cmd, argv, {
      cwd: dir,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, NODE_ENV: 'production' },
    }),
  );
  fs.closeSync(logFd);
  // The wrapper execs node, so the child's pid is the relay's.
  cpu.fallback = () => treeCpuMicros([child.pid]);
  const server = {
    name,
    port,
    started,
    child,
    cpu,
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

export function postfixCmd(configDir, args, meter) {
  // Postfix commands write their errors to syslog, or to stderr on a terminal; `script` gives
  // them one so a failure says why. With a meter, the command (and the master it starts, and
  // everything the master forks) runs in the meter's cgroup.
  const command = ['postfix', '-c', configDir, ...args].join(' ');
  const [cmd, argv] = meter ? meter.wrap('/bin/sh', ['-c', command]) : ['/bin/sh', ['-c', command]];
  const line = [cmd, ...argv].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(' ');
  const r = spawnSync('script', ['-qec', line, '/dev/null'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { ok: r.status === 0, output: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

export async function startPostfix(sinkPort) {
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
  const cpu = new CpuMeter('Postfix');
  const server = {
    name: 'Postfix',
    port,
    cpu,
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
  const start = postfixCmd(etc, ['start'], cpu);
  // Without a cgroup: the master and its live children; those it reaped are in its cutime.
  cpu.fallback = () => {
    const master = server.masterPid();
    return master ? treeCpuMicros([master]) : 0;
  };
  if (!start.ok) throw new Error(`postfix -c ${etc} start failed:\n${check.output}\n${start.output}`);
  await waitGreeting(port, 30_000);
  return server;
}
