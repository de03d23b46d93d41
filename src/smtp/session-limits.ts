// What the listener applies to a session besides the policy's transaction: how long a client
// may take (RFC 5321 4.5.3.2: 5 minutes for a command from a device; a stranger gets a short
// one; a whole message has its own deadline), and which server errors are failed TLS handshakes.
import { formatDuration } from '../config/units.js';
import type { PolicyEngine } from '../policy/engine.js';
import { normaliseIp } from '../policy/sources.js';
import { smtpErrors, type SmtpError } from './errors.js';

/** How long the client has for its next command line, or for the whole message after 354. */
export function deadlineFor(policy: PolicyEngine, phase: 'command' | 'data', trusted: boolean): number {
  const { limits } = policy.config;
  if (phase === 'data') return limits.dataTimeout;
  return trusted ? limits.commandTimeout : limits.untrustedCommandTimeout;
}

/** The 421 for a deadline passed, naming the key that sets it. */
export function deadlineError(policy: PolicyEngine, phase: 'command' | 'data', trusted: boolean): SmtpError {
  const after = formatDuration(deadlineFor(policy, phase, trusted));
  return smtpErrors.timedOut(
    phase === 'data'
      ? `the message did not arrive in full within ${after} (limits.dataTimeout)`
      : `no complete command within ${after} (limits.${trusted ? 'commandTimeout' : 'untrustedCommandTimeout'})`,
  );
}

/** smtp-server's idle timeout: just past the longest time a client may be idle by the policy. */
export function idleBackstop(policy: PolicyEngine): number {
  const { limits } = policy.config;
  return Math.max(limits.commandTimeout, limits.untrustedCommandTimeout) + 1000;
}

/** An error smtp-server reports on the server: for a failed TLS handshake, with `meta`. */
export type ServerError = Error & {
  code?: string;
  remoteAddress?: string;
  meta?: { remoteAddress?: string; stage?: string; message?: string; tlsProtocol?: string | null };
};

/** The log fields of a failed TLS handshake, or undefined when `err` is something else. */
export function tlsFailure(err: ServerError): { client?: string; error: string } | undefined {
  const tls =
    err.meta?.stage === 'connect' ||
    /^ERR_(SSL|TLS)_/.test(err.code ?? '') ||
    err.code === 'TLSError' ||
    /\b(TLS|SSL)\b/i.test(err.message);
  if (!tls) return undefined;
  const client = err.remoteAddress ?? err.meta?.remoteAddress;
  return { client: client ? normaliseIp(client) : undefined, error: err.meta?.message ?? err.message };
}
