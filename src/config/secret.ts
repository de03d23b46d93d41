// Secrets (upstream passwords, OAuth2 client secrets and refresh tokens, a service account's
// private key, users' password hashes) are a type, not a naming convention: a Secret prints as
// *** in every way a value can be printed (String(), template strings, JSON, util.inspect,
// console.log's %s %o %j, winston, YAML), so a config dump, an error message or a debug log of
// an object cannot leak one by accident. Only reveal() gives the value, and only the code that
// sends it to the ESP (or checks a login) calls it.
import { createHash } from 'node:crypto';

export const REDACTED = '***';

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

export class Secret {
  // A private field: not an own property, so no walk over the object (Object.keys, a spread,
  // structuredClone, util.inspect with showHidden) can reach it.
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
    Object.freeze(this);
  }

  /** The value itself: only for sending it where it belongs. Never log or print the result. */
  reveal(): string {
    return this.#value;
  }

  /** Whether two secrets hold the same value (for noticing a rotated secret on reload). */
  equals(other: Secret | undefined): boolean {
    return other !== undefined && other.#value === this.#value;
  }

  /** A digest that changes when the value does, for comparing configs without holding the value. */
  fingerprint(): string {
    return createHash('sha256').update('smarthost secret\0').update(this.#value).digest('base64url');
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [INSPECT](): string {
    return REDACTED;
  }
}

/**
 * Keys whose value is a secret, in the config (and so never shown in a validation error or a
 * config dump): passwords, tokens, client secrets, private keys. Not `tls.key` or the *File
 * keys: those hold paths, which an admin needs to see.
 */
const SECRET_NAME =
  /^(pass|passwd|password|secret|token|authorization)$|(password|secret|token|privatekey|apikey)$/;

/** Whether a config key (any spelling: clientSecret, client_secret, CLIENT-SECRET) names a secret. */
export function isSecretKey(key: PropertyKey): boolean {
  return typeof key === 'string' && SECRET_NAME.test(key.toLowerCase().replace(/[_-]/g, ''));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * `value` (anything parsed from YAML, or a Config) with every Secret and every value under a
 * secret-named key replaced by ***, for showing in an error message.
 */
export function redacted(value: unknown, depth = 0): unknown {
  if (value instanceof Secret) return REDACTED;
  if (depth > 20) return '…';
  if (Array.isArray(value)) return value.map((v) => redacted(v, depth + 1));
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    out[key] = isSecretKey(key) && v !== undefined && v !== null ? REDACTED : redacted(v, depth + 1);
  }
  return out;
}

/**
 * `value` with each Secret replaced by its fingerprint: a JSON of it differs exactly when a
 * setting or a secret changed, and holds no secret (reload compares configs this way).
 */
export function comparable(value: unknown): unknown {
  if (value instanceof Secret) return { secret: value.fingerprint() };
  if (Array.isArray(value)) return value.map(comparable);
  if (!isPlainObject(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, comparable(v)]));
}

/**
 * Secrets across a structured clone (the delivery thread's settings): a Secret keeps its value
 * in a private field, which a clone drops, so it crosses as a marked plain object and
 * {@link restoreSecrets} makes it a Secret again on the other side. Only for postMessage and
 * workerData: the carried form holds the value in the clear.
 */
const CARRIED = '__smarthostSecret';

export function carrySecrets<T>(value: T): T {
  const walk = (v: unknown): unknown => {
    if (v instanceof Secret) return { [CARRIED]: v.reveal() };
    if (Array.isArray(v)) return v.map(walk);
    if (!isPlainObject(v)) return v;
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
  };
  return walk(value) as T;
}

export function restoreSecrets<T>(value: T): T {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (!isPlainObject(v)) return v;
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === CARRIED && typeof v[CARRIED] === 'string')
      return new Secret(v[CARRIED]);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
  };
  return walk(value) as T;
}

/** Freezes a config value all the way down: a loaded config is never changed, only replaced. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
