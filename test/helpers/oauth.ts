// A stand-in for an OAuth2 token endpoint (Microsoft identity platform, Google) on loopback,
// and the options that turn the ESP stand-in (esp.ts) into an XOAUTH2-only server checking
// the tokens this endpoint issued.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EspOptions } from './esp.js';

export interface TokenRequest {
  /** The form fields posted (grant_type, client_id, client_secret, scope, assertion, ...). */
  form: Record<string, string>;
  at: number;
}

export interface TokenEndpointOptions {
  /** Lifetime of the tokens issued, in seconds (expires_in). Default 3600. */
  expiresIn?: number;
  /** When set, a request must carry this client_id and client_secret (401 invalid_client otherwise). */
  clientId?: string;
  clientSecret?: string;
}

export interface TokenEndpoint {
  /** http://127.0.0.1:<port>/token */
  readonly url: string;
  /** Every request, in order. */
  readonly requests: TokenRequest[];
  /** Tokens handed out, in order. */
  readonly issued: string[];
  /** Lifetime of the next tokens, in seconds. */
  expiresIn: number;
  /** While set, every request is refused with this status and OAuth error (e.g. 401 invalid_client). */
  failWith: { status: number; error: string } | undefined;
  /** Whether `token` was issued here, is not revoked, and has not expired. */
  isValid(token: string | undefined): boolean;
  /** Makes every token issued so far invalid (as if the ESP had revoked them). */
  revokeAll(): void;
  close(): Promise<void>;
}

export async function startTokenEndpoint(opts: TokenEndpointOptions = {}): Promise<TokenEndpoint> {
  const requests: TokenRequest[] = [];
  const issued: string[] = [];
  const valid = new Map<string, number>();
  let counter = 0;
  const state: { expiresIn: number; failWith: TokenEndpoint['failWith'] } = {
    expiresIn: opts.expiresIn ?? 3600,
    failWith: undefined,
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
      requests.push({ form, at: Date.now() });
      const reply = (status: number, body: Record<string, unknown>) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method !== 'POST' || req.url !== '/token') return reply(404, { error: 'not_found' });
      if (state.failWith) return reply(state.failWith.status, { error: state.failWith.error });
      if (
        (opts.clientId !== undefined && form.client_id !== opts.clientId) ||
        (opts.clientSecret !== undefined && form.client_secret !== opts.clientSecret)
      ) {
        return reply(401, { error: 'invalid_client', error_description: 'Invalid client secret provided.' });
      }
      const token = `test-token-${++counter}`;
      issued.push(token);
      valid.set(token, Date.now() + state.expiresIn * 1000);
      reply(200, { token_type: 'Bearer', access_token: token, expires_in: state.expiresIn });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/token`,
    requests,
    issued,
    get expiresIn() {
      return state.expiresIn;
    },
    set expiresIn(value: number) {
      state.expiresIn = value;
    },
    get failWith() {
      return state.failWith;
    },
    set failWith(value) {
      state.failWith = value;
    },
    isValid: (token) => {
      const expiresAt = token === undefined ? undefined : valid.get(token);
      return expiresAt !== undefined && Date.now() < expiresAt;
    },
    revokeAll: () => valid.clear(),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * ESP options for an XOAUTH2-only server (no PLAIN/LOGIN) accepting `user` with a valid token
 * from `endpoint`, and refusing anything else the way Gmail does (334 challenge, then 535).
 */
export function xoauth2EspOptions(endpoint: TokenEndpoint, user: string): EspOptions {
  return {
    authMethods: ['XOAUTH2'],
    onAuth: (auth) =>
      auth.method === 'XOAUTH2' && auth.username === user && endpoint.isValid(auth.accessToken),
  };
}
