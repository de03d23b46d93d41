// `smarthost stats [--since 1h] [--json]`: asks the running relay which sources sent the most,
// were refused the most and hit their rate limits the most, so an admin sees which device is
// flooding before the ESP complains. The counts live in the relay's memory (last 24 hours).
import { Command } from 'commander';
import { findConfigFile } from '../config/load.js';
import { parseDuration } from '../config/units.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import type { TrafficReport, TrafficRow } from '../stats/traffic.js';
import { CONFIG_OPTION_HELP, printJson, printTable, say } from './output.js';

interface StatsOptions {
  config?: string;
  since: string;
  json?: boolean;
  limit: string;
  cluster?: boolean;
}

/** 1536 → "1.5KB", as the config writes sizes. */
export function formatBytes(bytes: number): string {
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 'B';
  for (const next of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  return unit === 'B' ? `${bytes}B` : `${value.toFixed(value < 10 ? 1 : 0)}${unit}`;
}

function who(row: TrafficRow): string {
  return row.unknown ? `${row.source} (no source: not allowed)` : row.source;
}

function reasons(row: TrafficRow): string {
  return Object.entries(row.reasons)
    .sort((a, b) => b[1] - a[1])
    .map(([reason, n]) => `${reason} ${n}`)
    .join(', ');
}

function time(iso: string): string {
  return iso.slice(11, 16);
}

export function printReport(report: TrafficReport, since: string): void {
  const t = report.totals;
  say(
    `Traffic of the last ${since} (${time(report.since)}–${time(report.until)} UTC): ` +
      `${t.messages} message(s) accepted (${t.recipients} recipient(s), ${formatBytes(t.bytes)}), ` +
      `${t.refused} refused, ${t.rateLimited} rate-limited, from ${report.sources} source(s).`,
  );
  if (Date.parse(report.countingSince) > Date.parse(report.since)) {
    say(`(the relay started counting at ${report.countingSince.replace('T', ' ').slice(0, 16)} UTC)`);
  }
  say('');
  say('Top sources by messages accepted:');
  printTable(
    report.top.messages.map((r) => ({
      source: who(r),
      messages: r.messages,
      recipients: r.recipients,
      size: formatBytes(r.bytes),
      refused: r.refused,
    })),
    [
      { key: 'source', title: 'SOURCE' },
      { key: 'messages', title: 'MESSAGES' },
      { key: 'recipients', title: 'RECIPIENTS' },
      { key: 'size', title: 'SIZE' },
      { key: 'refused', title: 'REFUSED' },
    ],
  );
  say('');
  say('Top sources by refusals:');
  printTable(
    report.top.refusals.map((r) => ({ source: who(r), refused: r.refused, reasons: reasons(r) })),
    [
      { key: 'source', title: 'SOURCE' },
      { key: 'refused', title: 'REFUSED' },
      { key: 'reasons', title: 'REASONS' },
    ],
  );
  say('');
  say('Top sources by rate-limit hits:');
  printTable(
    report.top.rateLimited.map((r) => ({ source: who(r), hits: r.rateLimited, messages: r.messages })),
    [
      { key: 'source', title: 'SOURCE' },
      { key: 'hits', title: 'RATE-LIMIT HITS' },
      { key: 'messages', title: 'MESSAGES ACCEPTED' },
    ],
  );
}

async function run(opts: StatsOptions): Promise<void> {
  const since = parseDuration(opts.since);
  if (since === undefined || since <= 0) {
    process.stderr.write(
      `smarthost stats: --since: expected a duration such as 15m, 1h or 24h, got "${opts.since}"\n`,
    );
    process.exitCode = 2;
    return;
  }
  const limit = Number(opts.limit);
  if (!Number.isInteger(limit) || limit < 1) {
    process.stderr.write(
      `smarthost stats: --limit: expected a whole number of at least 1, got "${opts.limit}"\n`,
    );
    process.exitCode = 2;
    return;
  }
  const socket = controlSocketPath(findConfigFile(opts.config));
  let report: TrafficReport;
  try {
    const args = { since: opts.since, limit, ...(opts.cluster ? { cluster: true } : {}) };
    report = (await controlRequest(socket, 'stats', args, 15_000)) as TrafficReport;
  } catch (err) {
    if (err instanceof RelayNotRunning || err instanceof ControlError) {
      process.stderr.write(`smarthost stats: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
  if (opts.json) printJson(report);
  else {
    if (opts.cluster) say('All relays of the cluster (shared counts in Redis):');
    printReport(report, opts.since);
  }
}

export function statsCommand(): Command {
  return new Command('stats')
    .description('top sources by messages, refusals and rate-limit hits (asks the running relay)')
    .option('-c, --config <file>', CONFIG_OPTION_HELP)
    .option('--since <duration>', 'how far back: 15m, 1h, 24h (the relay keeps 24h)', '1h')
    .option('--limit <n>', 'rows per table', '10')
    .option('--json', 'print JSON instead of tables')
    .option('--cluster', "cluster mode: the counts of all relays sharing this one's Redis")
    .addHelpText(
      'after',
      '\nExamples:\n  smarthost stats\n  smarthost stats --since 24h --json\n  smarthost stats --cluster',
    )
    .action(run);
}
