// `smarthost queue list|show|retry|delete|hold|release|failed|requeue`. Talks to the running
// relay over its control socket; when the relay is not running, works on the spool directly.
import { readBody } from '../spool/one-file.js';
import { pipeline } from 'node:stream/promises';
import { Command } from 'commander';
import { findConfigFile } from '../config/load.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import { ControlRefusal } from '../control/protocol.js';
import {
  QueueAdmin,
  type Action,
  type IdsResult,
  type QueueSummary,
  type Selection,
  type ShownMessage,
} from '../control/queue-admin.js';
import type { DeadLetter } from '../spool/spool.js';
import { Spool } from '../spool/spool.js';
import { loadConfigOrExit } from './common.js';
import {
  age,
  CliError,
  EXIT_REFUSED,
  note,
  printJson,
  printTable,
  say,
  usage,
  withConfigOption,
} from './output.js';
import { filterFrom, isBulk, selectionFrom, withFilterOptions, type SelectOptions } from './queue-select.js';

type Offline = (admin: QueueAdmin) => Promise<unknown>;

/** Runs `command` on the running relay, or `offline` on the spool when none is running. */
async function run(
  configOption: string | undefined,
  command: string,
  args: Record<string, unknown>,
  offline: Offline,
) {
  const socket = controlSocketPath(findConfigFile(configOption));
  try {
    return await controlRequest(socket, command, args);
  } catch (err) {
    if (err instanceof ControlError) throw new CliError(err.message, EXIT_REFUSED);
    if (!(err instanceof RelayNotRunning)) throw err;
  }
  const config = loadConfigOrExit(configOption);
  note(`the relay is not running: working on the spool in ${config.spool.dir} directly`);
  try {
    return await offline(new QueueAdmin(new Spool(config.spool.dir)));
  } catch (err) {
    if (err instanceof ControlRefusal) throw new CliError(err.message, EXIT_REFUSED);
    throw err;
  }
}

function when(ms: number): string {
  const delta = ms - Date.now();
  if (delta <= 1000) return 'now';
  return `in ${age(Date.now() - delta)}`;
}

function clip(text: string | undefined, max: number): string | undefined {
  if (!text) return text;
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Prints what happened to each id; unknown ids make the exit code 1. */
function report(verb: string, result: IdsResult): void {
  if (result.done.length) say(`${verb} ${result.done.length}: ${result.done.join(' ')}`);
  else if (!result.missing.length) say('nothing to do: the queue is empty');
  if (result.missing.length) {
    process.stderr.write(`not found: ${result.missing.join(' ')}\n`);
    process.exitCode = EXIT_REFUSED;
  }
  for (const { id, reason } of result.skipped ?? []) {
    process.stderr.write(`not done: ${id}: ${reason}\n`);
    process.exitCode = EXIT_REFUSED;
  }
}

/**
 * A bulk change (--all or a filter, no ids) needs --yes; without it, says how many messages it
 * would change and stops (exit 1), changing nothing. `retry` only moves attempts forward and
 * is exempt (the documented step after an outage is a bare `queue retry --all`).
 */
async function confirmBulk(
  configOption: string | undefined,
  action: Action,
  selection: Selection,
  yes: boolean | undefined,
  verb: string,
): Promise<boolean> {
  if (yes || action === 'retry' || !isBulk(selection)) return true;
  const ids = (await run(configOption, 'queue.match', { action, ...selection }, (a) =>
    a.match(action, selection),
  )) as string[];
  if (!ids.length) {
    say('no message matches: nothing to do');
    return false;
  }
  const shown = ids.length > 10 ? `${ids.slice(0, 10).join(' ')} …` : ids.join(' ');
  say(`${ids.length} message${ids.length === 1 ? '' : 's'} would be ${verb}: ${shown}`);
  throw new CliError(
    `nothing changed: add --yes to ${action} ${ids.length === 1 ? 'it' : 'them'}`,
    EXIT_REFUSED,
  );
}

/** `queue retry|delete|hold|release`: ids, --all or filters; --yes for a bulk change. */
function selectCommand(
  cmd: Command,
  action: Exclude<Action, 'list'>,
  description: string,
  verbs: { done: (r: IdsResult) => string; would: string },
  example: string,
): void {
  const sub = withFilterOptions(
    cmd
      .command(action)
      .description(description)
      .argument('[ids...]', 'queue ids')
      .option('--all', 'every message it applies to')
      .option('-y, --yes', 'go ahead with a change by --all or a filter (without: only counts)'),
  );
  withConfigOption(sub, example).action(async (ids: string[], opts: SelectOptions & { config?: string }) => {
    const selection = selectionFrom(ids, opts, action);
    if (!(await confirmBulk(opts.config, action, selection, opts.yes, verbs.would))) return;
    const result = (await run(opts.config, `queue.${action}`, { ...selection }, (a) =>
      a[action](selection),
    )) as IdsResult;
    report(verbs.done(result), result);
  });
}

export function queueCommand(): Command {
  const cmd = new Command('queue')
    .description('the messages waiting for delivery, and the dead letters')
    .addHelpText(
      'after',
      '\nExamples:\n  smarthost queue list\n  smarthost queue retry --all\n  smarthost queue delete 0MI3B2X1A3F4E5D6C7B\n  smarthost queue failed',
    );

  withConfigOption(
    withFilterOptions(
      cmd
        .command('list')
        .description('id, age, sender, recipients, attempts, next attempt (or held), last error')
        .option('--json', 'print JSON'),
    ),
    "  smarthost queue list --json\n  smarthost queue list --to '*@example.com' --older-than 2h",
  ).action(async (opts: SelectOptions & { config?: string; json?: boolean }) => {
    const filter = filterFrom(opts);
    const rows = (await run(opts.config, 'queue.list', filter ? { filter } : {}, (a) =>
      a.list(filter),
    )) as QueueSummary[];
    if (opts.json) return printJson(rows);
    printTable(
      rows.map((r) => ({
        id: r.id,
        age: age(r.createdAt),
        from: r.from || '<>',
        to: clip(r.recipients.join(','), 40),
        attempts: r.attempts,
        next:
          r.state === 'held' || r.state === 'failed'
            ? r.state === 'held'
              ? 'held'
              : 'dead letter'
            : r.inFlight
              ? 'delivering'
              : when(r.nextAttemptAt),
        error: clip(r.lastError, 60),
      })),
      [
        { key: 'id', title: 'ID' },
        { key: 'age', title: 'AGE' },
        { key: 'from', title: 'FROM' },
        { key: 'to', title: 'RECIPIENTS' },
        { key: 'attempts', title: 'ATTEMPTS' },
        { key: 'next', title: 'NEXT' },
        { key: 'error', title: 'LAST ERROR' },
      ],
      filter ? 'no message matches' : 'the queue is empty',
    );
    const held = rows.filter((r) => r.state === 'held').length;
    if (rows.length)
      say(`${rows.length} message${rows.length === 1 ? '' : 's'}${held ? ` (${held} on hold)` : ''}`);
  });

  withConfigOption(
    cmd
      .command('show')
      .description("a message's envelope, delivery state and headers; or the stored message itself")
      .argument('<id>', 'the queue id')
      .option('--json', 'print JSON')
      .option('--body', 'print the stored message (headers and body, as it is sent)')
      .option('--headers', 'print only its header section'),
    '  smarthost queue show 0MI3B2X1A3F4E5D6C7B\n  smarthost queue show 0MI3B2X1A3F4E5D6C7B --body | less',
  ).action(
    async (id: string, opts: { config?: string; json?: boolean; body?: boolean; headers?: boolean }) => {
      if ([opts.json, opts.body, opts.headers].filter(Boolean).length > 1) {
        usage('give one of --json, --body and --headers');
      }
      const shown = (await run(opts.config, 'queue.show', { id }, (a) => a.show(id))) as ShownMessage;
      if (opts.json) return printJson(shown);
      if (opts.headers) return say(shown.headers);
      if (opts.body) return printBody(shown);
      const e = shown.entry;
      const where = { queue: '', held: '  (on hold)', failed: '  (dead letter)' }[shown.where];
      say(`id:          ${e.id}${where}${shown.inFlight ? '  (being delivered)' : ''}`);
      say(
        `received:    ${new Date(e.createdAt).toISOString()} (${age(e.createdAt)} ago) from ${e.client.address} as ${e.source}`,
      );
      say(
        `from:        ${e.from || '<>'}${e.originalFrom !== e.from ? `  (client said ${e.originalFrom || '<>'})` : ''}`,
      );
      say(`size:        ${e.size} bytes`);
      say(`attempts:    ${e.attempts}${shown.where === 'queue' ? `, next ${when(e.nextAttemptAt)}` : ''}`);
      if (e.lastError) say(`last error:  ${e.lastError}`);
      if ('reason' in e)
        say(
          `failed:      ${new Date((e as DeadLetter).failedAt).toISOString()}: ${(e as DeadLetter).reason}`,
        );
      say('recipients:');
      for (const r of e.recipients)
        say(
          `  ${r.status.padEnd(9)} ${r.address}${r.upstream ? ` via ${r.upstream}` : ''}${r.lastReply ? `  (${r.lastReply})` : ''}`,
        );
      say('headers:');
      say(shown.headers.replace(/^/gm, '  '));
    },
  );

  selectCommand(
    cmd,
    'retry',
    'try now, whatever the next-attempt time (not held messages: release them)',
    { done: (r) => (r.live ? 'retrying' : 'due now (when the relay starts)'), would: 'retried' },
    "  smarthost queue retry --all\n  smarthost queue retry 0MI3B2X1A3F4E5D6C7B\n  smarthost queue retry --to '*@example.com'",
  );
  selectCommand(
    cmd,
    'delete',
    'remove messages for good, queued, held or dead letters (no bounce is sent)',
    { done: () => 'deleted', would: 'deleted' },
    "  smarthost queue delete 0MI3B2X1A3F4E5D6C7B\n  smarthost queue delete --from 'spam*@corp.example' --yes",
  );
  selectCommand(
    cmd,
    'hold',
    'put messages on hold: not attempted, nor expired, until released (postsuper -h)',
    { done: () => 'held', would: 'put on hold' },
    '  smarthost queue hold 0MI3B2X1A3F4E5D6C7B\n  smarthost queue hold --source printers --yes',
  );
  selectCommand(
    cmd,
    'release',
    'release held messages: back in the queue, tried at once (postsuper -H)',
    { done: () => 'released', would: 'released' },
    '  smarthost queue release 0MI3B2X1A3F4E5D6C7B\n  smarthost queue release --all --yes',
  );

  withConfigOption(
    cmd
      .command('failed')
      .description('the dead letters: messages that could not be delivered')
      .option('--json', 'print JSON'),
    '  smarthost queue failed',
  ).action(async (opts: { config?: string; json?: boolean }) => {
    const rows = (await run(opts.config, 'queue.failed', {}, (a) => a.failed())) as DeadLetter[];
    if (opts.json) return printJson(rows);
    printTable(
      rows.map((d) => ({
        id: d.id,
        failed: `${age(d.failedAt)} ago`,
        from: d.from || '<>',
        to: clip(
          d.recipients
            .filter((r) => r.status === 'failed')
            .map((r) => r.address)
            .join(','),
          40,
        ),
        reason: clip(d.reason, 80),
      })),
      [
        { key: 'id', title: 'ID' },
        { key: 'failed', title: 'FAILED' },
        { key: 'from', title: 'FROM' },
        { key: 'to', title: 'RECIPIENTS' },
        { key: 'reason', title: 'REASON' },
      ],
      'no dead letters',
    );
  });

  selectCommand(
    cmd,
    'requeue',
    'put dead letters back in the queue, their failed recipients pending again',
    { done: () => 'requeued', would: 'requeued' },
    "  smarthost queue requeue 0MI3B2X1A3F4E5D6C7B\n  smarthost queue requeue --to '*@example.com' --older-than 1d --yes",
  );

  return cmd;
}

/** Streams the stored message to stdout: never read whole (a scan may be 30 MB). */
async function printBody(shown: ShownMessage): Promise<void> {
  try {
    await pipeline(readBody({ path: shown.bodyPath, length: shown.bodyLength }), process.stdout, {
      end: false,
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new CliError(`${shown.entry.id} is no longer there: delivered, moved or deleted meanwhile`);
    }
    // The reader went away (| head): pipes.ts stops the command quietly.
    if (code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE') return;
    throw err;
  }
}
