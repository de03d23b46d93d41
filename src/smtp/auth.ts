// AUTH: the password check, the failed-login count and its lockout, and what is logged. The
// listener calls this from smtp-server's onAuth; a refusal comes back as a typed SmtpError.
import type { Logger } from '../log.js';
import type { PolicyEngine } from '../policy/engine.js';
import { verifyPassword } from '../policy/passwords.js';
import { smtpErrors, type SmtpError } from './errors.js';

/** A well-formed hash no password matches: unknown users are checked against it. */
const UNKNOWN_USER_HASH = `scrypt$16384$8$1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`;

export type AuthResult = { ok: true; user: string } | { ok: false; error: SmtpError };

export async function authenticate(
  policy: PolicyEngine,
  log: Logger,
  client: string,
  username: string,
  password: string,
): Promise<AuthResult> {
  try {
    // The lockouts by address and by username (cluster mode: shared by all relays).
    await policy.checkAuthLockout(client, username);
  } catch (err) {
    return { ok: false, error: err as SmtpError };
  }
  const user = policy.sources.user(username);
  // An unknown user costs the same scrypt as a known one, so timing does not tell them apart.
  const ok = await verifyPassword(password, user?.password ?? UNKNOWN_USER_HASH).then((v) => v && !!user);
  if (ok) {
    log.info('authenticated', { event: 'auth', client, user: username });
    return { ok: true, user: username };
  }
  log.warn('authentication failed', { event: 'auth_failed', client, user: loggableUsername(username) });
  const lockout = await policy.authFailed(client, username);
  if (lockout) {
    const { limits } = policy.config;
    log.warn('too many failed logins: locked out of AUTH', {
      event: 'auth_lockout',
      client,
      user: loggableUsername(username),
      failures: limits.maxAuthFailures,
      window: limits.authFailureWindow,
      lockout: limits.authLockout,
    });
    return { ok: false, error: lockout };
  }
  return { ok: false, error: smtpErrors.authFailed() };
}

/** The longest failed username written to the log as it was given. */
export const MAX_LOGGED_USERNAME = 64;

/**
 * A username a client tried, as the log shows it: cut to MAX_LOGGED_USERNAME characters (the
 * length said), control characters escaped, so a guess can neither flood nor forge log lines.
 */
export function loggableUsername(name: string): string {
  const cut = name.length > MAX_LOGGED_USERNAME ? name.slice(0, MAX_LOGGED_USERNAME) : name;
  const escaped = cut.replace(
    // eslint-disable-next-line no-control-regex
    /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g,
    (c) => {
      const code = c.charCodeAt(0);
      return code > 0xff
        ? `\\u${code.toString(16).padStart(4, '0')}`
        : `\\x${code.toString(16).padStart(2, '0')}`;
    },
  );
  return name.length > MAX_LOGGED_USERNAME ? `${escaped}... (${name.length} characters)` : escaped;
}
