// The config file's schema. Zod validates the YAML and turns the human-friendly units
// into numbers, so the rest of the program only ever sees a typed, complete Config.
// Objects are strict: a misspelt key is an error that names it, not a silent no-op.
import { z } from 'zod';
import { allowlistProblem } from '../policy/open-relay.js';
import { Secret } from './secret.js';
import {
  cidr,
  domain,
  duration,
  email,
  port,
  rate,
  retentionAge,
  secretText,
  size,
} from './schema-values.js';

const sendersPolicy = z.strictObject({
  /** Domains verified at the ESP: senders in them are left as they are. */
  domains: z.array(domain).default([]),
  /** The address used for senders outside `domains`. */
  default: email.optional(),
});

/** What a source (an allowlist entry or a user) may do; `defaults:` sets it for all. */
const policyFields = {
  sender: email.optional(),
  senders: sendersPolicy.optional(),
  rateLimit: rate.optional(),
  recipientRateLimit: rate.optional(),
  allowedRecipientDomains: z.array(domain).optional(),
  allowedSenders: z.array(z.string().min(1)).optional(),
  maxMessageSize: size.optional(),
  maxRecipients: z.number().int().min(1).optional(),
  allowInsecureAuth: z.boolean().optional(),
};

const policy = z.strictObject(policyFields);

/** What an allowlist entry's or a user's name may be. */
export const SOURCE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const sourceName = z.string().regex(SOURCE_NAME, 'expected a name of letters, digits, ".", "_" or "-"');

const allowlistEntry = z
  .strictObject({
    cidr,
    name: sourceName,
    /** The range has public addresses and that is intended (policy/open-relay.ts). */
    publicRange: z.boolean().optional(),
    ...policyFields,
  })
  .superRefine((entry, ctx) => {
    // Never an open relay: the same check as `allowlist add`, for entries written by hand.
    const problem = allowlistProblem(entry.cidr, entry.publicRange === true);
    if (problem) ctx.addIssue({ code: 'custom', path: ['cidr'], message: problem });
  });

const userEntry = z.strictObject({
  name: sourceName,
  password: z
    .string({ error: 'expected an scrypt hash made by `smarthost user add` (the value is not shown)' })
    .regex(
      /^scrypt\$/,
      'expected an scrypt hash made by `smarthost user add`, never a plain password (the value is not shown)',
    )
    .transform((value) => new Secret(value)),
  ...policyFields,
});

const listener = z.strictObject({
  host: z.string().default('127.0.0.1'),
  port,
  /** Port 587 style: nothing but EHLO/STARTTLS/QUIT before TLS. */
  requireTls: z.boolean().default(false),
  /** Port 465 style: TLS from the first byte. */
  implicitTls: z.boolean().default(false),
  /** Offer STARTTLS (some old devices break when they see it). */
  starttls: z.boolean().default(true),
  /** Read a PROXY protocol header (HAProxy, cloud load balancers) for the client's real address. */
  proxyProtocol: z.boolean().default(false),
  /** Refuse MAIL FROM:addr / RCPT TO:addr without angle brackets (501), as RFC 5321 has it. */
  strictEnvelopes: z.boolean().default(false),
  tls: z
    .strictObject({
      minVersion: z.enum(['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    })
    .prefault({}),
});

/** An https URL, or http on loopback only (a token endpoint standing in for tests). */
const tokenUrl = z.string().refine((value) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  if (url.protocol === 'https:') return true;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return url.protocol === 'http:' && (host === 'localhost' || host === '::1' || /^127\./.test(host));
}, 'expected an https:// URL (http:// only on loopback)');

/** XOAUTH2 to the upstream with tokens from Microsoft 365 or Google (see README, "Upstreams"). */
const upstreamAuth = z
  .strictObject({
    type: z.literal('oauth2'),
    provider: z.enum(['microsoft', 'google']),
    /** The mailbox to send as; default the upstream's `user`. */
    user: email.optional(),
    /** Microsoft 365: the directory (tenant) id or domain. */
    tenant: z.string().min(1).optional(),
    clientId: z.string().min(1).optional(),
    clientSecret: secretText(1).optional(),
    clientSecretFile: z.string().min(1).optional(),
    /** Google: an OAuth client's refresh token (with clientId and clientSecret). */
    refreshToken: secretText(1).optional(),
    refreshTokenFile: z.string().min(1).optional(),
    /** Google: a service account key (JSON) with domain-wide delegation. */
    serviceAccountFile: z.string().min(1).optional(),
    /** Overrides the provider's token endpoint. */
    tokenUrl: tokenUrl.optional(),
    /** Overrides the provider's scope. */
    scope: z.string().min(1).optional(),
  })
  .superRefine((auth, ctx) => {
    const need = (key: string, message: string) => ctx.addIssue({ code: 'custom', path: [key], message });
    if (auth.clientSecret && auth.clientSecretFile)
      need('clientSecretFile', 'use either clientSecret or clientSecretFile, not both');
    if (auth.refreshToken && auth.refreshTokenFile)
      need('refreshTokenFile', 'use either refreshToken or refreshTokenFile, not both');
    const secret = Boolean(auth.clientSecret || auth.clientSecretFile);
    const refresh = Boolean(auth.refreshToken || auth.refreshTokenFile);
    if (auth.provider === 'microsoft') {
      if (!auth.tenant && !auth.tokenUrl)
        need('tenant', 'Microsoft 365 needs the tenant (directory id or domain)');
      if (!auth.clientId) need('clientId', 'Microsoft 365 needs the application (client) id');
      if (!secret) need('clientSecret', 'Microsoft 365 needs clientSecret or clientSecretFile');
      if (refresh || auth.serviceAccountFile)
        need(
          'provider',
          'Microsoft 365 uses the client-credentials flow: refreshToken and serviceAccountFile are for Google',
        );
    } else if (auth.serviceAccountFile) {
      if (refresh) need('refreshToken', 'use either serviceAccountFile or refreshToken, not both');
    } else {
      if (!refresh)
        need(
          'serviceAccountFile',
          'Google needs serviceAccountFile, or clientId, clientSecret and refreshToken',
        );
      if (!auth.clientId) need('clientId', 'a Google refresh token needs the OAuth clientId');
      if (!secret) need('clientSecret', 'a Google refresh token needs clientSecret or clientSecretFile');
    }
  });

const upstream = z
  .strictObject({
    name: z.string().optional(),
    host: z.string().min(1),
    port: port.default(587),
    tls: z.enum(['starttls', 'implicit', 'none']).default('starttls'),
    user: z.string().optional(),
    pass: secretText().optional(),
    passFile: z.string().optional(),
    ca: z.string().optional(),
    /** The name the ESP's certificate must carry, when `host` is an address or another name. */
    servername: z.string().min(1).optional(),
    /** Connections kept open to this upstream. */
    maxConnections: z.number().int().min(1).max(100).default(5),
    /** Sender domains routed to this upstream (empty: any). */
    senderDomains: z.array(domain).default([]),
    /** Recipient domains routed to this upstream, and only these (empty: any recipient). */
    recipientDomains: z.array(domain).default([]),
    rateLimit: rate.optional(),
    /** Messages that may start together before rateLimit's even pace applies (default 1). */
    burst: z.number().int().min(1).max(1000).optional(),
    /** Connection and command timeouts. */
    timeout: duration.prefault('60s'),
    /** OAuth2 (XOAUTH2) instead of pass/passFile. */
    auth: upstreamAuth.optional(),
    /** How long a failing upstream is skipped: the first period, doubling up to max. */
    backoff: z.strictObject({ initial: duration.prefault('30s'), max: duration.prefault('5m') }).prefault({}),
  })
  .superRefine((up, ctx) => {
    if (up.auth && (up.pass !== undefined || up.passFile !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['auth'],
        message: 'use either pass/passFile or auth (OAuth2), not both',
      });
    }
    if (up.burst !== undefined && (!up.rateLimit || up.burst > up.rateLimit.count)) {
      ctx.addIssue({
        code: 'custom',
        path: ['burst'],
        message: up.rateLimit
          ? `must not be larger than rateLimit's count (${up.rateLimit.count})`
          : 'only applies with rateLimit: set rateLimit too, or remove burst',
      });
    }
    if (up.backoff.max < up.backoff.initial) {
      ctx.addIssue({
        code: 'custom',
        path: ['backoff', 'max'],
        message: 'must not be shorter than backoff.initial',
      });
    }
  });

/**
 * Cluster mode (src/cluster/): rate limits, login lockouts, upstream pace and traffic counters
 * shared in Redis by every relay with the same `redis` and `name`. Absent: all per node.
 */
const cluster = z
  .strictObject({
    /** redis://[user:pass@]host:6379/0 or rediss://… (TLS). */
    redis: z
      .string()
      .regex(/^rediss?:\/\/[^\s]+$/, 'expected a URL such as redis://redis.internal:6379/0 or rediss://…'),
    /** Key prefix: relays with the same Redis and name share their limits. */
    name: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a name of letters, digits, ".", "_" or "-"')
      .default('smarthost'),
    /** A file holding the Redis password (instead of one in the URL). */
    passwordFile: z.string().min(1).optional(),
    /** A PEM file of CA certificates to trust for rediss://. */
    ca: z.string().min(1).optional(),
    /** Sentinel addresses: `redis`'s host is then ignored and sentinelName is asked for the master. */
    sentinels: z.array(z.strictObject({ host: z.string().min(1), port: port.default(26379) })).optional(),
    sentinelName: z.string().min(1).default('mymaster'),
    /** How long one Redis command may take before this relay falls back to its local limits. */
    timeout: duration.prefault('100ms'),
  })
  .optional();

const levels = ['error', 'warn', 'info', 'debug'] as const;

export const configSchema = z
  .strictObject({
    hostname: z.string().min(1).optional(),
    listen: z
      .array(listener)
      .min(1)
      .prefault([{ port: 2525 }]),
    tls: z
      .strictObject({
        cert: z.string(),
        key: z.string(),
        /** Reload the pair when its files change (off where file events are unreliable, e.g. NFS). */
        watch: z.boolean().default(true),
      })
      .optional(),
    upstream: upstream.optional(),
    upstreams: z.array(upstream).optional(),
    spool: z.strictObject({ dir: z.string().default('./data') }).prefault({}),
    queue: z
      .strictObject({
        maxAge: duration.prefault('72h'),
        retry: z.array(duration).min(1).prefault(['1m', '5m', '15m', '30m', '1h', '2h', '4h']),
        /** Deliveries in flight at once, over all upstreams. */
        concurrency: z.number().int().min(1).max(1000).default(20),
        /**
         * During a burst (messages arriving fast, the relay busy), how long a new message's first
         * attempt may wait so that senders are answered first (queue/accept-first.ts). 0: never.
         */
        acceptFirst: duration.prefault('10s'),
        /** Another name for retention.failed (the one postqueue users look for here). */
        deadLetterMaxAge: retentionAge.optional(),
      })
      .prefault({}),
    /** Dead letters and captured messages are removed after this long (retention.ts). */
    retention: z
      .strictObject({ failed: retentionAge.prefault('30d'), outbox: retentionAge.prefault('7d') })
      .prefault({}),
    limits: z
      .strictObject({
        maxMessageSize: size.prefault('25MB'),
        maxRecipients: z.number().int().min(1).default(100),
        maxConnections: z.number().int().min(1).default(1000),
        maxConnectionsPerIp: z.number().int().min(1).default(50),
        /** Failed AUTH attempts from one address, within authFailureWindow, before a cool-down. */
        maxAuthFailures: z.number().int().min(1).default(5),
        authFailureWindow: duration.prefault('10m'),
        authLockout: duration.prefault('15m'),
        /**
         * Connections from clients neither allowlisted nor logged in, over all listeners; the
         * rest of maxConnections stays for devices. Default: a quarter of maxConnections.
         */
        maxUntrustedConnections: z.number().int().min(1).optional(),
        /** Refused commands in a session of an untrusted client before a 421 (devices are not cut off). */
        maxRefusedCommands: z.number().int().min(1).default(10),
        /** How long a trusted client has for each complete command line (RFC 5321: 5 min). */
        commandTimeout: duration.prefault('5m'),
        /** The same for a client neither allowlisted nor logged in. */
        untrustedCommandTimeout: duration.prefault('30s'),
        /** How long a client has to send a whole message after DATA's 354. */
        dataTimeout: duration.prefault('10m'),
      })
      .prefault({})
      .transform((limits) => ({
        ...limits,
        maxUntrustedConnections:
          limits.maxUntrustedConnections ?? Math.max(1, Math.floor(limits.maxConnections / 4)),
      })),
    bounces: z
      .strictObject({
        to: email.optional(),
        /** Envelope sender of bounces; empty (<>) as RFC 3464 says, unless the ESP insists. */
        from: z.union([email, z.literal('')]).default(''),
      })
      .prefault({}),
    senders: sendersPolicy.optional(),
    defaults: policy.prefault({}),
    allowlist: z.array(allowlistEntry).prefault([
      { cidr: '127.0.0.0/8', name: 'localhost' },
      { cidr: '::1/128', name: 'localhost6' },
    ]),
    users: z.array(userEntry).default([]),
    /**
     * The local source `sendmail`: mail from `smarthost sendmail` (scripts, cron) on this host.
     * Its policy keys over `defaults:`, as for any source; `enabled: false` refuses it.
     */
    sendmail: z.strictObject({ enabled: z.boolean().default(true), ...policyFields }).prefault({}),
    log: z
      .strictObject({
        level: z.enum(levels).default('info'),
        format: z.enum(['auto', 'json', 'text']).default('auto'),
        maskAddresses: z.boolean().default(false),
      })
      .prefault({}),
    metrics: z.strictObject({ host: z.string().default('127.0.0.1'), port: port.default(9325) }).optional(),
    control: z.strictObject({ socket: z.string().optional() }).prefault({}),
    /** What /readyz judges by (src/readiness.ts). */
    health: z
      .strictObject({
        /** Not ready once the oldest queued message is older than this (0: never). */
        maxQueueAge: duration.prefault('30m'),
        /** How often an idle relay checks its upstreams (and a down one, whether it is back). */
        checkInterval: duration.prefault('30s'),
      })
      .prefault({}),
    shutdown: z.strictObject({ grace: duration.prefault('30s') }).prefault({}),
    cluster,
  })
  .superRefine((config, ctx) => {
    if (config.upstream && config.upstreams) {
      ctx.addIssue({
        code: 'custom',
        path: ['upstreams'],
        message: 'use either upstream or upstreams, not both',
      });
    }
    if (config.limits.maxUntrustedConnections > config.limits.maxConnections) {
      ctx.addIssue({
        code: 'custom',
        path: ['limits', 'maxUntrustedConnections'],
        message: `must not be larger than limits.maxConnections (${config.limits.maxConnections})`,
      });
    }
    const seen = new Set<string>();
    for (const [index, entry] of [...config.allowlist, ...config.users].entries()) {
      if (seen.has(entry.name)) {
        const inUsers = index >= config.allowlist.length;
        ctx.addIssue({
          code: 'custom',
          path: inUsers ? ['users', index - config.allowlist.length, 'name'] : ['allowlist', index, 'name'],
          message: `the name "${entry.name}" is used twice; every source needs its own name`,
        });
      }
      seen.add(entry.name);
    }
  })
  // queue.deadLetterMaxAge, when given, is retention.failed.
  .transform((config) =>
    config.queue.deadLetterMaxAge === undefined
      ? config
      : { ...config, retention: { ...config.retention, failed: config.queue.deadLetterMaxAge } },
  );

export type RawConfig = z.output<typeof configSchema>;
export type { Rate } from './units.js';
export type Policy = z.output<typeof policy>;
export type SendersPolicy = z.output<typeof sendersPolicy>;
export type AllowlistEntry = z.output<typeof allowlistEntry>;
export type UserEntry = z.output<typeof userEntry>;
export type ListenerConfig = z.output<typeof listener>;
export type UpstreamConfig = z.output<typeof upstream>;
export type ClusterConfig = NonNullable<z.output<typeof cluster>>;
