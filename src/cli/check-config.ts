// `smarthost check-config`: validate the config as `start` would, and print the effective
// config (defaults filled in, environment applied) with every secret masked. When a relay runs
// on this file, also say what a reload would apply now and what would wait for a restart.
import { Command } from 'commander';
import YAML from 'yaml';
import type { Config } from '../config/load.js';
import { keysWith } from '../config/reload-table.js';
import type { ReloadPreview } from '../config/watch.js';
import { controlRequest } from '../control/client.js';
import { isSecretKey, REDACTED, Secret } from '../config/secret.js';
import { formatDuration } from '../config/units.js';
import { checkCertificateFiles } from '../smtp/cert-check.js';
import { loadConfigOrExit } from './common.js';
import {
  CliError,
  EXIT_REFUSED,
  note,
  printJson,
  say,
  sizeInUnits,
  warn,
  withConfigOption,
} from './output.js';

const DURATION_KEYS = new Set([
  'maxAge',
  'retry',
  'authFailureWindow',
  'authLockout',
  'grace',
  'timeout',
  'maxQueueAge',
  'checkInterval',
]);
const SIZE_KEYS = new Set(['maxMessageSize']);
/** Not worth printing: the text of a `ca` file (its path is shown). */
const LEFT_OUT = new Set(['caText']);

function size(bytes: number): string {
  // A plain number otherwise: the printed config stays valid YAML for the schema.
  return sizeInUnits(bytes) ?? String(bytes);
}

/** The config as an admin reads it: units back in words, secrets masked. */
export function presentConfig(config: Config): Record<string, unknown> {
  const walk = (value: unknown, key: string, parent = ''): unknown => {
    if (value === undefined || LEFT_OUT.has(key)) return undefined;
    // Secrets print as *** anyway; a secret-named key holding something else is masked too.
    if (value instanceof Secret || (isSecretKey(key) && value)) return REDACTED;
    if (parent === 'retention' && value === 0) return 'off';
    if (DURATION_KEYS.has(key) || parent === 'backoff' || parent === 'retention') {
      if (typeof value === 'number') return formatDuration(value);
      if (Array.isArray(value)) return value.map((v) => (typeof v === 'number' ? formatDuration(v) : v));
    }
    if (SIZE_KEYS.has(key) && typeof value === 'number') return size(value);
    if (Array.isArray(value)) return value.map((v) => walk(v, ''));
    if (value && typeof value === 'object') {
      const rate = value as { text?: unknown; perMs?: unknown };
      if (typeof rate.text === 'string' && typeof rate.perMs === 'number') return rate.text;
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) {
        const shown = walk(v, k, key);
        if (shown !== undefined) out[k] = shown;
      }
      return out;
    }
    return value;
  };
  const { source: _s, file: _f, ...rest } = config;
  return walk(rest, '') as Record<string, unknown>;
}

/**
 * What the relay running on this config file would do with it now (undefined: no relay runs
 * on it, or it is one that cannot say).
 */
async function previewOnRunningRelay(config: Config): Promise<ReloadPreview | undefined> {
  if (!config.file) return undefined;
  try {
    const preview = (await controlRequest(
      config.control.socket,
      'reload.preview',
      {},
      5_000,
    )) as ReloadPreview;
    return preview.file === config.file ? preview : undefined;
  } catch {
    return undefined;
  }
}

function describePreview(preview: ReloadPreview): string[] {
  if (!preview.ok) return [`the running relay would refuse this file: ${preview.error ?? 'unknown error'}`];
  if (!preview.changes.length) return ['the running relay already uses this config'];
  const lines: string[] = [];
  const now = preview.changes.filter((c) => c.effect !== 'restart').map((c) => c.key);
  const restart = keysWith(preview.changes, 'restart');
  if (now.length) lines.push(`a reload of the running relay would apply now: ${now.join(', ')}`);
  if (restart.length) lines.push(`the running relay would need a restart for: ${restart.join(', ')}`);
  return lines;
}

export function checkConfigCommand(): Command {
  return withConfigOption(
    new Command('check-config')
      .description('validate the config; print the effective config with secrets masked')
      .option('--json', 'print JSON')
      .option('-q, --quiet', 'only validate (exit 0 when valid)'),
    '  smarthost check-config -c /etc/smarthost/smarthost.yml',
  ).action(async (opts: { config?: string; json?: boolean; quiet?: boolean }) => {
    const config = loadConfigOrExit(opts.config);
    // What start would fail on, or serve to every client: the certificate and its key.
    const findings = checkCertificateFiles(config.tls);
    const errors = findings.filter((f) => f.level === 'error').map((f) => f.message);
    if (errors.length) throw new CliError(`${config.source}: ${errors.join('\n')}`, EXIT_REFUSED);
    for (const finding of findings) warn(finding.message);
    if (opts.quiet) return;
    const shown = presentConfig(config);
    const running = await previewOnRunningRelay(config);
    if (opts.json)
      return printJson({
        valid: true,
        source: config.source,
        config: shown,
        running,
        warnings: findings.map((f) => f.message),
      });
    process.stderr.write(`config OK: ${config.source}\n`);
    for (const line of running ? describePreview(running) : []) note(line);
    if (!config.upstreams.length) {
      process.stderr.write(
        'note: no upstream configured: the relay runs in capture mode (writes mail to files)\n',
      );
    }
    say(
      `# effective config (defaults filled in, secrets masked)\n${YAML.stringify(shown, { lineWidth: 0 }).trimEnd()}`,
    );
  });
}
