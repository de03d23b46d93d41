// An upstream's `auth: { type: oauth2, ... }` once loaded: the *File secrets read, the Google
// service account key parsed. The schema (src/config/schema.ts) has already checked which keys
// each provider needs; this only turns files into values, reporting what cannot be read. Every
// secret is a Secret (src/config/secret.ts): it prints as ***, and only the token request
// (oauth.ts) reveals it.
import type { UpstreamConfig } from '../config/schema.js';
import { readOrReport } from '../config/files.js';
import { Secret } from '../config/secret.js';

type RawAuth = NonNullable<UpstreamConfig['auth']>;

export interface OAuth2Settings {
  type: 'oauth2';
  provider: 'microsoft' | 'google';
  /** The mailbox to log in as (XOAUTH2 user=, and the JWT subject for a Google service account). */
  user: string;
  tenant?: string;
  clientId?: string;
  clientSecret?: Secret;
  refreshToken?: Secret;
  serviceAccount?: { clientEmail: string; privateKey: Secret; tokenUri?: string };
  tokenUrl?: string;
  scope?: string;
}

/**
 * Reads the secret files of `auth` (paths relative to the config file's folder). Problems are
 * pushed as "key: what is wrong" lines; the result is undefined when there were any.
 */
export function resolveOAuth2(
  auth: RawAuth,
  fallbackUser: string | undefined,
  key: string,
  resolvePath: (p: string) => string,
  problems: string[],
): OAuth2Settings | undefined {
  const before = problems.length;
  const read = (file: string, field: string): string | undefined =>
    readOrReport(file, `${key}.${field}`, resolvePath, problems)?.trim();
  const readSecret = (file: string, field: string): Secret | undefined => {
    const text = read(file, field);
    return text === undefined ? undefined : new Secret(text);
  };
  const user = auth.user ?? fallbackUser;
  if (!user) problems.push(`${key}.user: the mailbox to send as is needed for OAuth2 (auth.user or user)`);
  const clientSecret =
    auth.clientSecret ??
    (auth.clientSecretFile ? readSecret(auth.clientSecretFile, 'clientSecretFile') : undefined);
  const refreshToken =
    auth.refreshToken ??
    (auth.refreshTokenFile ? readSecret(auth.refreshTokenFile, 'refreshTokenFile') : undefined);
  let serviceAccount: OAuth2Settings['serviceAccount'];
  if (auth.serviceAccountFile) {
    const text = read(auth.serviceAccountFile, 'serviceAccountFile');
    if (text !== undefined) {
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // reported below
      }
      if (typeof json.client_email === 'string' && typeof json.private_key === 'string') {
        serviceAccount = {
          clientEmail: json.client_email,
          privateKey: new Secret(json.private_key),
          tokenUri: typeof json.token_uri === 'string' ? json.token_uri : undefined,
        };
      } else {
        problems.push(
          `${key}.serviceAccountFile: ${JSON.stringify(auth.serviceAccountFile)} is not a Google service account key (JSON with client_email and private_key)`,
        );
      }
    }
  }
  if (problems.length > before) return undefined;
  const settings: OAuth2Settings = {
    type: 'oauth2',
    provider: auth.provider,
    user: user!,
    tenant: auth.tenant,
    clientId: auth.clientId,
    tokenUrl: auth.tokenUrl,
    scope: auth.scope,
  };
  if (clientSecret) settings.clientSecret = clientSecret;
  if (refreshToken) settings.refreshToken = refreshToken;
  if (serviceAccount) settings.serviceAccount = serviceAccount;
  return settings;
}
