// Loading the config: find the file, parse the YAML, apply environment overrides, validate,
// and normalise into the Config the program uses: a value, read once and fully resolved (the
// files it points at are read here: passFile, the OAuth2 *File keys, the upstream's `ca`) and
// frozen, its secrets held in Secret (prints as ***). Errors are ConfigError with one line per
// problem naming the key, the value found (never a secret's) and what is allowed.
import { existsSync, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { configSchema, type RawConfig, type UpstreamConfig, type Policy } from './schema.js';
import { resolveCluster, type ClusterSettings } from '../cluster/settings.js';
import { resolveOAuth2, type OAuth2Settings } from '../upstream/oauth-config.js';
import { readOrReport } from './files.js';
import { deepFreeze, isSecretKey, redacted, Secret } from './secret.js';

export type { Policy, ListenerConfig, AllowlistEntry, UserEntry, Rate, SendersPolicy } from './schema.js';

export interface Upstream extends Omit<UpstreamConfig, 'passFile' | 'name' | 'auth'> {
  /** A name for logs and metrics: the configured name, else host:port. */
  name: string;
  /** OAuth2 (XOAUTH2) with its secrets read from their files. */
  auth?: OAuth2Settings;
  /** The text of the `ca` file (`ca` is its path), read when the config loads. */
  caText?: string;
}

export type { OAuth2Settings };
export { Secret };

export type { ClusterSettings };

export interface Config extends Omit<
  RawConfig,
  'upstream' | 'upstreams' | 'hostname' | 'control' | 'cluster'
> {
  /** Cluster mode (src/cluster/): the Redis URL with its password taken out into a Secret. */
  cluster?: ClusterSettings;
  hostname: string;
  /** Empty in capture mode. */
  upstreams: Upstream[];
  control: { socket: string };
  /** Where the config came from: a file path, or "built-in defaults". */
  source: string;
  /** The file, when there is one (edits and reloads use it). */
  file?: string;
}

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`invalid config (${source}):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Where an installed relay keeps its config (deploy/systemd): looked for last. */
export const SYSTEM_CONFIG = '/etc/smarthost/smarthost.yml';

/**
 * `--config FILE`, else $SMARTHOST_CONFIG, else ./smarthost.yml, else SYSTEM_CONFIG, the last
 * two when they exist; else none. SYSTEM_CONFIG is for the admin of an installed relay: a
 * command run from a home folder must edit and ask the relay the service runs, not create a
 * config of its own there (as `allowlist add` does when it finds none).
 */
export function findConfigFile(
  explicit?: string,
  env = process.env,
  systemConfig = SYSTEM_CONFIG,
): string | undefined {
  if (explicit) return path.resolve(explicit);
  if (env.SMARTHOST_CONFIG) return path.resolve(env.SMARTHOST_CONFIG);
  const local = path.resolve('smarthost.yml');
  if (existsSync(local)) return local;
  return existsSync(systemConfig) ? systemConfig : undefined;
}

export function loadConfig(explicit?: string, env = process.env): Config {
  const file = findConfigFile(explicit, env);
  if (!file) return parseConfig({}, { env, baseDir: process.cwd(), source: 'built-in defaults' });
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the file: ${(err as Error).message}`]);
  }
  return parseConfigText(text, file, env);
}

export function parseConfigText(text: string, file: string, env = process.env): Config {
  let raw: unknown;
  try {
    // logLevel error: yaml's own warnings (an unknown !tag) would print the line, secret and all.
    raw = parseYaml(text, { prettyErrors: true, logLevel: 'error' }) ?? {};
  } catch (err) {
    throw new ConfigError(file, [`not valid YAML: ${yamlProblem(err as Error)}`]);
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(file, ['the file must hold a YAML mapping of keys (hostname:, listen:, …)']);
  }
  return parseConfig(raw as Record<string, unknown>, {
    env,
    baseDir: path.dirname(file),
    source: file,
    file,
  });
}

/**
 * What is wrong with the YAML and where, without any of the file's text: yaml's messages can
 * quote it (an unresolved alias names what followed the *, which may be a password), and its
 * pretty form shows the whole line. "Unresolved alias (…): hunter2 at line 3, column 9:" →
 * "Unresolved alias (…) at line 3, column 9".
 */
export function yamlProblem(err: Error): string {
  const first = err.message.split('\n')[0] ?? '';
  const where = / at line \d+, column \d+/.exec(first)?.[0] ?? '';
  const what = first.replace(/ at line \d+, column \d+:?$/, '').split(/:\s/)[0];
  return `${what}${where}`;
}

interface ParseOptions {
  env: NodeJS.ProcessEnv;
  /** Relative paths in the file are taken relative to this folder. */
  baseDir: string;
  source: string;
  file?: string;
}

export function parseConfig(input: Record<string, unknown>, options: ParseOptions): Config {
  const raw = applyEnvOverrides(structuredClone(input), options.env);
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(options.source, describeIssues(result.error.issues, raw));
  return normalise(result.data, options);
}

/** Environment variables win over the file, so containers can inject secrets. */
function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const up: Record<string, unknown> = { ...((raw.upstream as Record<string, unknown> | undefined) ?? {}) };
  const overrides: [string, string, (v: string) => unknown][] = [
    ['SMARTHOST_UPSTREAM_HOST', 'host', String],
    ['SMARTHOST_UPSTREAM_PORT', 'port', (v) => (/^\d+$/.test(v) ? Number(v) : v)],
    ['SMARTHOST_UPSTREAM_USER', 'user', String],
    ['SMARTHOST_UPSTREAM_PASS', 'pass', String],
    ['SMARTHOST_UPSTREAM_PASS_FILE', 'passFile', String],
    ['SMARTHOST_UPSTREAM_TLS', 'tls', String],
  ];
  let touched = false;
  for (const [name, key, convert] of overrides) {
    const value = env[name];
    if (value !== undefined && value !== '') {
      up[key] = convert(value);
      touched = true;
    }
  }
  if (touched) raw.upstream = up;
  if (env.SMARTHOST_SPOOL_DIR) raw.spool = { ...((raw.spool as object) ?? {}), dir: env.SMARTHOST_SPOOL_DIR };
  if (env.SMARTHOST_LOG_LEVEL) raw.log = { ...((raw.log as object) ?? {}), level: env.SMARTHOST_LOG_LEVEL };
  return raw;
}

function describeIssues(issues: z.core.$ZodIssue[], raw: unknown): string[] {
  return issues.map((issue) => {
    const key = issue.path.length ? issue.path.join('.') : '(top level)';
    if (issue.code === 'unrecognized_keys') {
      const where = issue.path.length ? `${key}: ` : '';
      return `${where}unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')} (check the spelling; see deploy/smarthost.example.yml)`;
    }
    // A secret's value is never shown, whatever is wrong with it (a number, a plain password).
    if (issue.path.some(isSecretKey)) return `${key}: ${issue.message}`;
    return `${key}: got ${shownValue(valueAt(raw, issue.path))}: ${issue.message}`;
  });
}

/** The value found, for an error line: secrets inside it masked, a long one cut short. */
function shownValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  // A URL's password (redis://user:pass@host) is masked too.
  const text = (JSON.stringify(redacted(value)) ?? String(value)).replace(
    /(:\/\/[^:@/\s"]*:)[^@/\s"]*@/g,
    '$1***@',
  );
  return text.length > SHOWN_MAX ? `${text.slice(0, SHOWN_MAX)}…` : text;
}

const SHOWN_MAX = 200;

function valueAt(raw: unknown, keys: PropertyKey[]): unknown {
  let node = raw;
  for (const key of keys) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

function normalise(data: RawConfig, options: ParseOptions): Config {
  const resolvePath = (p: string) => path.resolve(options.baseDir, p);
  const problems: string[] = [];
  const upstreamList = data.upstreams ?? (data.upstream ? [data.upstream] : []);
  const upstreams: Upstream[] = upstreamList.map((u, index) => {
    const { passFile, name, auth: rawAuth, ...rest } = u;
    const key = data.upstreams ? `upstreams.${index}` : 'upstream';
    let pass = rest.pass;
    if (passFile) {
      const text = readOrReport(passFile, `${key}.passFile`, resolvePath, problems);
      if (text !== undefined) pass = new Secret(text.trim());
    }
    const auth = rawAuth
      ? resolveOAuth2(rawAuth, rest.user, `${key}.auth`, resolvePath, problems)
      : undefined;
    const caText = rest.ca
      ? readOrReport(rest.ca, `${key}.ca`, resolvePath, problems, ' (a PEM file of CA certificates to trust)')
      : undefined;
    if (rest.user && pass === undefined && !rawAuth) {
      problems.push(`${key}: user is set but neither pass nor passFile (or SMARTHOST_UPSTREAM_PASS[_FILE])`);
    }
    return {
      ...rest,
      pass,
      auth,
      ca: rest.ca ? resolvePath(rest.ca) : undefined,
      caText,
      name: name ?? `${rest.host}:${rest.port}`,
    };
  });
  const cluster = data.cluster ? resolveCluster(data.cluster, resolvePath, problems) : undefined;
  if (problems.length) throw new ConfigError(options.source, problems);
  const spoolDir = resolvePath(data.spool.dir);
  const { upstream: _u, upstreams: _us, ...rest } = data;
  return deepFreeze({
    ...rest,
    hostname: data.hostname ?? osHostname(),
    upstreams,
    cluster,
    spool: { dir: spoolDir },
    tls: data.tls
      ? { cert: resolvePath(data.tls.cert), key: resolvePath(data.tls.key), watch: data.tls.watch }
      : undefined,
    control: {
      socket: data.control.socket ? resolvePath(data.control.socket) : path.join(spoolDir, 'control.sock'),
    },
    source: options.source,
    file: options.file,
  });
}

/** The effective policy for a source: its own keys over `defaults:` over the top-level `senders:`. */
export function effectivePolicy(config: Config, entry: Policy): Policy {
  const merged: Policy = { ...config.defaults };
  for (const [key, value] of Object.entries(entry)) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  merged.senders ??= config.senders;
  return merged;
}
