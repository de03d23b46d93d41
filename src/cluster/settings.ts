// The `cluster:` config as the program uses it: the Redis URL is split into its parts and its
// password moved into a Secret (from the URL or `passwordFile`), so the URL kept in the config
// (and shown in every log line and error) never holds one.
import type { ClusterConfig } from '../config/schema.js';
import { readOrReport } from '../config/files.js';
import { Secret } from '../config/secret.js';

export interface ClusterSettings {
  /** The URL with any password replaced by ***: safe to log. */
  redis: string;
  name: string;
  host: string;
  port: number;
  db: number;
  tls: boolean;
  username?: string;
  password?: Secret;
  /** The text of the `ca` file (`ca` is its path). */
  ca?: string;
  caText?: string;
  sentinels?: { host: string; port: number }[];
  sentinelName: string;
  /** Command timeout, ms. */
  timeout: number;
}

/** `redis://user:secret@host` → `redis://user:***@host`, for anything shown to a person. */
export function maskUrl(url: string): string {
  return url.replace(/(:\/\/[^:@/\s]*:)[^@/\s]*@/g, '$1***@');
}

export function resolveCluster(
  raw: ClusterConfig,
  resolvePath: (p: string) => string,
  problems: string[],
): ClusterSettings | undefined {
  let url: URL;
  try {
    url = new URL(raw.redis);
  } catch {
    problems.push(`cluster.redis: got ${JSON.stringify(maskUrl(raw.redis))}: not a valid URL`);
    return undefined;
  }
  const dbText = url.pathname.replace(/^\//, '') || '0';
  if (!/^\d{1,2}$/.test(dbText)) {
    problems.push(`cluster.redis: the path must be a database number such as /0, got /${dbText}`);
    return undefined;
  }
  let password = url.password ? new Secret(decodeURIComponent(url.password)) : undefined;
  if (raw.passwordFile) {
    if (password)
      problems.push('cluster.passwordFile: the URL holds a password already: use one or the other');
    const text = readOrReport(raw.passwordFile, 'cluster.passwordFile', resolvePath, problems);
    if (text !== undefined) password = new Secret(text.trim());
  }
  const tls = url.protocol === 'rediss:';
  if (raw.ca && !tls) problems.push('cluster.ca: only applies to a rediss:// (TLS) URL');
  const caText = raw.ca
    ? readOrReport(raw.ca, 'cluster.ca', resolvePath, problems, ' (a PEM file of CA certificates to trust)')
    : undefined;
  return {
    redis: maskUrl(raw.redis),
    name: raw.name,
    host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: url.port ? Number(url.port) : 6379,
    db: Number(dbText),
    tls,
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password,
    ca: raw.ca ? resolvePath(raw.ca) : undefined,
    caText,
    sentinels: raw.sentinels,
    sentinelName: raw.sentinelName,
    timeout: raw.timeout,
  };
}
