// `smarthost queue list|show|retry|delete|failed|requeue`. Talks to the running relay over its
// control socket; when the relay is not running, works on the spool directly.
import { Command } from 'commander';
import { findConfigFile } from '../config/load.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import { ControlRefusal } from '../control/protocol.js';
import { QueueAdmin, type IdsResult, type QueueSummary, type ShownMessage } from '../control/queue-admin.js';
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
}

export function queueCommand(): Command {
  const cmd = new Command('queue')
    .description('the messages waiting for delivery, and the dead letters')
    .addHelpText(
      'after',
      '\nExamples:\n  smarthost queue list\n  smarthost queue retry --all\n  smarthost queue delete 0MI3B2X1A3F4E5D6C7B\n  smarthost queue failed',
    );

  withConfigOption(
    cmd
      .command('list')
      .description('id, age, sender, recipients, attempts, last error')
      .option('--json', 'print JSON'),
    '  smarthost queue list --json',
  ).action(async (opts: { config?: string; json?: boolean }) => {
    const rows = (await run(opts.config, 'queue.list', {}, (a) => a.list())) as QueueSummary[];
    if (opts.json) return printJson(rows);
    printTable(
      rows.map((r) => ({
        id: r.id,
        age: age(r.createdAt),
        from: r.from || '<>',
        to: clip(r.recipients.join(','), 40),
        attempts: r.attempts,
        next: r.inFlight ? 'delivering' : when(r.nextAttemptAt),
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
      'the queue is empty',
    );
    if (rows.length) say(`${rows.length} message${rows.length === 1 ? '' : 's'} waiting`);
  });

  withConfigOption(
    cmd
      .command('show')
      .description("a message's envelope, delivery state and headers")
      .argument('<id>', 'the queue id')
      .option('--json', 'print JSON'),
    '  smarthost queue show 0MI3B2X1A3F4E5D6C7B',
  ).action(async (id: string, opts: { config?: string; json?: boolean }) => {
    const shown = (await run(opts.config, 'queue.show', { id }, (a) => a.show(id))) as ShownMessage;
    if (opts.json) return printJson(shown);
    const e = shown.entry;
    say(
      `id:          ${e.id}${shown.where === 'failed' ? '  (dead letter)' : ''}${shown.inFlight ? '  (being delivered)' : ''}`,
    );
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
      say(`failed:      ${new Date((e as DeadLetter).failedAt).toISOString()}: ${(e as DeadLetter).reason}`);
    say('recipients:');
    for (const r of e.recipients)
      say(
        `  ${r.status.padEnd(9)} ${r.address}${r.upstream ? ` via ${r.upstream}` : ''}${r.lastReply ? `  (${r.lastReply})` : ''}`,
      );
    say('headers:');
    say(shown.headers.replace(/^/gm, '  '));
  });

  withConfigOption(
    cmd
      .command('retry')
      .description('try now, whatever the next-attempt time')
      .argument('[ids...]', 'queue ids')
      .option('--all', 'every message in the queue'),
    '  smarthost queue retry --all\n  smarthost queue retry 0MI3B2X1A3F4E5D6C7B',
  ).action(async (ids: string[], opts: { config?: string; all?: boolean }) => {
    if (opts.all && ids.length) usage('give queue ids or --all, not both');
    if (!opts.all && !ids.length) usage('give the queue ids to retry, or --all');
    const result = (await run(opts.config, 'queue.retry', opts.all ? { all: true } : { ids }, (a) =>
      a.retry(opts.all ? 'all' : ids),
    )) as IdsResult;
    report(result.live ? 'retrying' : 'due now (when the relay starts)', result);
  });

  withConfigOption(
    cmd
      .command('delete')
      .description('remove messages for good (no bounce is sent)')
      .argument('<ids...>', 'queue ids (or dead letter ids)'),
    '  smarthost queue delete 0MI3B2X1A3F4E5D6C7B',
  ).action(async (ids: string[], opts: { config?: string }) => {
    const result = (await run(opts.config, 'queue.delete', { ids }, (a) => a.delete(ids))) as IdsResult;
    report('deleted', result);
  });

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

  withConfigOption(
    cmd
      .command('requeue')
      .description('put dead letters back in the queue, their failed recipients pending again')
      .argument('<ids...>', 'dead letter ids (see queue failed)'),
    '  smarthost queue requeue 0MI3B2X1A3F4E5D6C7B',
  ).action(async (ids: string[], opts: { config?: string }) => {
    const result = (await run(opts.config, 'queue.requeue', { ids }, (a) => a.requeue(ids))) as IdsResult;
    report('requeued', result);
  });

  return cmd;
}
