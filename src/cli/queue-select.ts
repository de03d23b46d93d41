// The selection options shared by `queue retry|delete|hold|release` (and the filters of `queue
// list`): queue ids, `--all`, the filters, and `--yes`, which a bulk change needs.
import type { Command } from 'commander';
import { parseDuration } from '../config/units.js';
import type { Selection } from '../control/queue-admin.js';
import { checkFilter, FilterError, MESSAGE_STATES, type QueueFilter } from '../control/queue-filter.js';
import { usage } from './output.js';

export interface FilterOptions {
  from?: string;
  to?: string;
  source?: string;
  olderThan?: string;
  state?: string;
}

export interface SelectOptions extends FilterOptions {
  all?: boolean;
  yes?: boolean;
}

/** Adds --from, --to, --source, --older-than and --state. */
export function withFilterOptions(command: Command): Command {
  return command
    .option('--from <pattern>', 'sender matches (wildcards * and ?, case-insensitive; <> is the null sender)')
    .option('--to <pattern>', 'a recipient matches (wildcards * and ?, case-insensitive)')
    .option('--source <pattern>', 'the allowlist entry or user that sent it (wildcards allowed)')
    .option('--older-than <duration>', 'arrived longer ago than this, e.g. 30m, 2h, 3d')
    .option('--state <states>', `one or more of ${MESSAGE_STATES.join(', ')} (comma-separated)`);
}

/** The filter the options give (undefined: none); a bad one is a usage error. */
export function filterFrom(opts: FilterOptions): QueueFilter | undefined {
  const raw: Record<string, unknown> = {};
  if (opts.from !== undefined) raw.from = opts.from;
  if (opts.to !== undefined) raw.to = opts.to;
  if (opts.source !== undefined) raw.source = opts.source;
  if (opts.olderThan !== undefined) {
    const ms = parseDuration(opts.olderThan);
    if (ms === undefined) usage(`--older-than: "${opts.olderThan}" is not a duration such as 30m, 2h or 3d`);
    raw.olderThan = ms;
  }
  if (opts.state !== undefined) raw.state = opts.state.split(',').map((s) => s.trim().toLowerCase());
  if (!Object.keys(raw).length) return undefined;
  try {
    return checkFilter(raw);
  } catch (err) {
    if (err instanceof FilterError) usage(err.message);
    throw err;
  }
}

/** ids, or --all, or a filter (ids and a filter together: those ids that match). */
export function selectionFrom(ids: string[], opts: SelectOptions, verb: string): Selection {
  const filter = filterFrom(opts);
  if (opts.all && ids.length) usage('give queue ids or --all, not both');
  if (!opts.all && !ids.length && !filter)
    usage(`give the queue ids to ${verb}, a filter (--from, --to, …) or --all`);
  const selection: Selection = {};
  if (ids.length) selection.ids = ids;
  if (opts.all) selection.all = true;
  if (filter) selection.filter = filter;
  return selection;
}

/** A change to every message that matches, rather than to ids named one by one. */
export function isBulk(selection: Selection): boolean {
  return !selection.ids?.length;
}
