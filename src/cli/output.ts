// What every admin command shares: exit codes, refusals, notes and warnings on stderr, tables
// for people and JSON for scripts, and how a command finds its config file.
import path from 'node:path';
import type { Command } from 'commander';
import { findConfigFile, SYSTEM_CONFIG } from '../config/load.js';

/** 0: done; 1: the action was refused (or failed); 2: the command line itself was wrong. */
export const EXIT_OK = 0;
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;

/** Thrown by a command to stop with a message on stderr and an exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_REFUSED,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The action is refused: exit 1. */
export function refuse(message: string): never {
  throw new CliError(message, EXIT_REFUSED);
}

/** The command line is wrong: exit 2. */
export function usage(message: string): never {
  throw new CliError(message, EXIT_USAGE);
}

export function note(message: string): void {
  process.stderr.write(`note: ${message}\n`);
}

export function warn(message: string): void {
  process.stderr.write(`WARNING: ${message}\n`);
}

export function say(message: string): void {
  process.stdout.write(`${message}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export type Row = Record<string, string | number | undefined>;

/** A plain aligned table: a header line, then one line per row. Cells never wrap. */
export function printTable(rows: Row[], columns: { key: string; title: string }[], empty = '(none)'): void {
  if (rows.length === 0) {
    say(empty);
    return;
  }
  const cell = (row: Row, key: string) => String(row[key] ?? '-').replace(/\s+/g, ' ');
  const widths = columns.map((c) => Math.max(c.title.length, ...rows.map((r) => cell(r, c.key).length)));
  const line = (cells: string[]) =>
    cells
      .map((text, i) => (i === cells.length - 1 ? text : text.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  say(line(columns.map((c) => c.title)));
  for (const row of rows) say(line(columns.map((c) => cell(row, c.key))));
}

/** "3m", "2h5m", "1d4h": how long ago `ms` (a timestamp) was. */
export function age(ms: number, now = Date.now()): string {
  let s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s`;
  const d = Math.floor(s / 86_400);
  s -= d * 86_400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  if (d) return `${d}d${h}h`;
  if (h) return `${h}h${m}m`;
  return `${m}m`;
}

/** Where a command looks for its config without `-c` (findConfigFile's order). */
export const CONFIG_SEARCH = `$SMARTHOST_CONFIG, else ./smarthost.yml, else ${SYSTEM_CONFIG}`;

/** What `-c, --config <file>` says in every command's help. */
export const CONFIG_OPTION_HELP = `config file (default: ${CONFIG_SEARCH})`;

/** Adds `-c, --config <file>` and an example to a command. */
export function withConfigOption(command: Command, example: string): Command {
  return command
    .option('-c, --config <file>', CONFIG_OPTION_HELP)
    .addHelpText('after', `\nExample:\n${example}`);
}

/** The file an edit goes to: the one `start` would read, else ./smarthost.yml (created). */
export function configFileForEdit(explicit?: string): string {
  return findConfigFile(explicit) ?? path.resolve('smarthost.yml');
}

/** 25MB, 64KB: a whole number of MB or KB, as the config writes sizes; undefined otherwise. */
export function sizeInUnits(bytes: number): string | undefined {
  if (bytes >= 1024 ** 2 && bytes % 1024 ** 2 === 0) return `${bytes / 1024 ** 2}MB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024}KB`;
  return undefined;
}
