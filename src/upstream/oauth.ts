// OAuth2 access tokens for XOAUTH2: a small token client (global fetch) for the three grants an
// ESP needs, and one cache per upstream shared by all its connections.
//
// - Microsoft 365: client credentials (tenant, clientId, clientSecret), scope
//   https://outlook.office365.com/.default, at login.microsoftonline.com/<tenant>.
// - Google: a service account key (a signed JWT, RFC 7523, with `sub` = the mailbox user), or
//   an OAuth client's refresh token; scope https://mail.google.com/.
//
// Tokens are fetched when first needed, reused until shortly before they expire, then fetched
// again; a token the ESP refused is replaced once (`get(refused)`). Secrets never appear in an
// error message or a log line: only the endpoint, the HTTP status and the OAuth error code.
import { createSign } from 'node:crypto';
import type { OAuth2Settings } from './oauth-config.js';
import type { Secret } from '../config/secret.js';

export interface AccessToken {
  accessToken: string;
  /** Lifetime from the moment it was issued. */
  expiresInMs: number;
}

export type TokenFetcher = () => Promise<AccessToken>;

export interface TokenCacheOptions {
  now?: () => number;
  /** Refresh this long before expiry, at most; never more than a fifth of the lifetime. */
  refreshMarginMs?: number;
}

export class TokenCache {
  private current: { token: string; refreshAt: number; expiresAt: number } | undefined;
  private pending: Promise<string> | undefined;
  private readonly now: () => number;
  private readonly margin: number;

  constructor(
    private readonly fetchToken: TokenFetcher,
    options: TokenCacheOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.margin = options.refreshMarginMs ?? 5 * 60_000;
  }

  /**
   * A token to log in with. `refused`: the token the ESP just refused; a new one is fetched
   * unless another connection already replaced it.
   */
  get(refused?: string): Promise<string> {
    const now = this.now();
    const current = this.current;
    if (current && refused !== undefined && current.token === refused) this.current = undefined;
    else if (current && now < current.refreshAt) return Promise.resolve(current.token);
    if (!this.pending) {
      const stale = this.current && now < this.current.expiresAt ? this.current.token : undefined;
      this.pending = this.refresh(stale).finally(() => {
        this.pending = undefined;
      });
    }
    return this.pending;
  }

  private async refresh(stillValid: string | undefined): Promise<string> {
    const issuedAt = this.now();
    let fetched: AccessToken;
    try {
      fetched = await this.fetchToken();
    } catch (err) {
      // The endpoint is down but the old token has not expired yet: keep using it.
      if (stillValid !== undefined) return stillValid;
      throw err;
    }
    const lifetime = Math.max(fetched.expiresInMs, 0);
    const margin = Math.min(this.margin, lifetime / 5);
    this.current = {
      token: fetched.accessToken,
      refreshAt: issuedAt + lifetime - margin,
      expiresAt: issuedAt + lifetime,
    };
    return fetched.accessToken;
  }
}

export const MICROSOFT_SCOPE = 'https://outlook.office365.com/.default';
export const GOOGLE_SCOPE = 'https://mail.google.com/';
export const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';

export function microsoftTokenUrl(tenant: string): string {
  return `https://login.microsoftonline.com/${encodeURIComponent(tenant)}/oauth2/v2.0/token`;
}

/** The endpoint the settings use, for logs. */
export function tokenUrlOf(settings: OAuth2Settings): string {
  if (settings.tokenUrl) return settings.tokenUrl;
  if (settings.provider === 'microsoft') return microsoftTokenUrl(settings.tenant ?? 'common');
  return settings.serviceAccount?.tokenUri ?? GOOGLE_TOKEN_URL;
}

export interface FetcherOptions {
  timeoutMs?: number;
  now?: () => number;
  fetch?: typeof fetch;
}

/** The token fetcher for an upstream's `auth:` settings. */
export function tokenFetcher(settings: OAuth2Settings, options: FetcherOptions = {}): TokenFetcher {
  const url = tokenUrlOf(settings);
  const scope = settings.scope ?? (settings.provider === 'microsoft' ? MICROSOFT_SCOPE : GOOGLE_SCOPE);
  const now = options.now ?? Date.now;
  const form = (): Record<string, string> => {
    if (settings.provider === 'microsoft') {
      return {
        grant_type: 'client_credentials',
        client_id: settings.clientId ?? '',
        client_secret: settings.clientSecret?.reveal() ?? '',
        scope,
      };
    }
    if (settings.serviceAccount) {
      return {
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        assertion: serviceAccountAssertion(settings.serviceAccount, settings.user, scope, url, now()),
      };
    }
    return {
      grant_type: 'refresh_token',
      client_id: settings.clientId ?? '',
      client_secret: settings.clientSecret?.reveal() ?? '',
      refresh_token: settings.refreshToken?.reveal() ?? '',
    };
  };
  return () => requestToken(url, form(), options);
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/** A JWT signed with the service account's key (RS256), asking for `scope` on behalf of `user`. */
export function serviceAccountAssertion(
  account: { clientEmail: string; privateKey: Secret },
  user: string,
  scope: string,
  audience: string,
  nowMs: number,
): string {
  const iat = Math.floor(nowMs / 1000);
  const header = base64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
  const claims = base64url(
    JSON.stringify({ iss: account.clientEmail, sub: user, scope, aud: audience, iat, exp: iat + 3600 }),
  );
  const signature = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(account.privateKey.reveal());
  return `${header}.${claims}.${base64url(signature)}`;
}

async function requestToken(
  url: string,
  form: Record<string, string>,
  options: FetcherOptions,
): Promise<AccessToken> {
  const doFetch = options.fetch ?? fetch;
  let response: Response;
  try {
    response = await doFetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams(form).toString(),
      signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new Error(`OAuth2 token endpoint ${url} unreachable: ${why}`);
  }
  const text = await response.text().catch(() => '');
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // not JSON: reported below by status
  }
  if (!response.ok || typeof body.access_token !== 'string' || !body.access_token) {
    // Only the OAuth error code and description: they never echo the credentials.
    const code = typeof body.error === 'string' ? body.error : 'no access_token in the reply';
    const description =
      typeof body.error_description === 'string'
        ? `: ${body.error_description.split(/\r?\n/)[0]!.slice(0, 200)}`
        : '';
    throw new Error(`OAuth2 token endpoint ${url} answered HTTP ${response.status} ${code}${description}`);
  }
  const expiresIn = Number(body.expires_in);
  return {
    accessToken: body.access_token,
    expiresInMs: Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn * 1000 : 3_600_000,
  };
}
