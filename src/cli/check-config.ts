// `smarthost check-config`: validate the config as `start` would, and print the effective
// config (defaults filled in, environment applied) with every secret masked.
import { Command } from 'commander';
import YAML from 'yaml';
import type { Config } from '../config/load.js';
import { formatDuration } from '../config/units.js';
import { loadConfigOrExit } from './common.js';
import { printJson, say, sizeInUnits, withConfigOption } from './output.js';

const DURATION_KEYS = new Set(['maxAge', 'retry', 'authFailureWindow', 'authLockout', 'grace', 'timeout']);
const SIZE_KEYS = new Set(['maxMessageSize']);
const MASK = '********';
/** Values never printed: passwords, hashes, OAuth client secrets and tokens. */
const SECRET_KEYS = /^(pass|password|clientSecret|refreshToken|accessToken|token|secret|apiKey|privateKey)$/i;

function size(bytes: number): string {
  // A plain number otherwise: the printed config stays valid YAML for the schema.
  return sizeInUnits(bytes) ?? String(bytes);
}

/** The config as an admin reads it: units back in words, secrets masked. */
export function presentConfig(config: Config): Record<string, unknown> {
  const walk = (value: unknown, key: string, parent = ''): unknown => {
    if (value === undefined) return undefined;
    if (SECRET_KEYS.test(key)) return value ? MASK : value;
    if (DURATION_KEYS.has(key) || parent === 'backoff') {
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

export function checkConfigCommand(): Command {
  return withConfigOption(
    new Command('check-config')
      .description('validate the config; print the effective config with secrets masked')
      .option('--json', 'print JSON')
      .option('-q, --quiet', 'only validate (exit 0 when valid)'),
    '  smarthost check-config -c /etc/smarthost/smarthost.yml',
  ).action((opts: { config?: string; json?: boolean; quiet?: boolean }) => {
    const config = loadConfigOrExit(opts.config);
    if (opts.quiet) return;
    const shown = presentConfig(config);
    if (opts.json) return printJson({ valid: true, source: config.source, config: shown });
    process.stderr.write(`config OK: ${config.source}\n`);
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
