// An upstream's `auth: { type: oauth2, ... }` once loaded: the *File secrets read, the Google
// service account key parsed. The schema (src/config/schema.ts) has already checked which keys
// each provider needs; this only turns files into values, reporting what cannot be read.
import type { UpstreamConfig } from '../config/schema.js';
import { readOrReport } from '../config/files.js';

type RawAuth = NonNullable<UpstreamConfig['auth']>;

export interface OAuth2Settings {
  type: 'oauth2';
  provider: 'microsoft' | 'google';
  /** The mailbox to log in as (XOAUTH2 user=, and the JWT subject for a Google service account). */
  user: string;
  tenant?: string;
  clientId?: string;
  clientSecret?: string;
  refreshToken?: string;
  serviceAccount?: { clientEmail: string; privateKey: string; tokenUri?: string };
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
  const user = auth.user ?? fallbackUser;
  if (!user) problems.push(`${key}.user: the mailbox to send as is needed for OAuth2 (auth.user or user)`);
  const clientSecret =
    auth.clientSecret ??
    (auth.clientSecretFile ? read(auth.clientSecretFile, 'clientSecretFile') : undefined);
  const refreshToken =
    auth.refreshToken ??
    (auth.refreshTokenFile ? read(auth.refreshTokenFile, 'refreshTokenFile') : undefined);
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
          privateKey: json.private_key,
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
  if (serviceAccount) settings.serviceAccount = serviceAccount;
  return hideSecrets(settings, { clientSecret, refreshToken, privateKey: serviceAccount?.privateKey });
}

/**
 * Puts the secrets on the settings as fields that are there to be read, not listed: whatever
 * prints or serialises the config (a config dump, a debug log of an object, a structured
 * clone) does not see them. A service account's private key goes on a copy of the account.
 */
function hideSecrets(settings: OAuth2Settings, secrets: OAuth2Secrets): OAuth2Settings {
  hidden(settings, 'clientSecret', secrets.clientSecret);
  hidden(settings, 'refreshToken', secrets.refreshToken);
  if (settings.serviceAccount) {
    const { privateKey: _visible, ...account } = settings.serviceAccount;
    hidden(account, 'privateKey', secrets.privateKey);
    settings.serviceAccount = account as NonNullable<OAuth2Settings['serviceAccount']>;
  }
  return settings;
}

function hidden(target: object, key: string, value: string | undefined): void {
  if (value === undefined) return;
  Object.defineProperty(target, key, { value, enumerable: false, writable: false, configurable: false });
}

/** The secrets `hidden` keeps out of serialisation, for the few places that must carry them. */
interface OAuth2Secrets {
  clientSecret?: string;
  refreshToken?: string;
  privateKey?: string;
}

/**
 * The settings with their secrets as plain, enumerable fields, for noticing a changed secret on
 * reload (the relay compares the upstreams as JSON, which skips hidden fields). Never log it.
 */
export function withOAuth2Secrets(settings: OAuth2Settings): OAuth2Settings & { secrets: OAuth2Secrets } {
  return {
    ...settings,
    secrets: {
      clientSecret: settings.clientSecret,
      refreshToken: settings.refreshToken,
      privateKey: settings.serviceAccount?.privateKey,
    },
  };
}

/**
 * The reverse of {@link withOAuth2Secrets}: the secrets hidden again. The delivery thread gets
 * its settings through a structured clone, which keeps only enumerable fields, so they travel
 * as withOAuth2Secrets made them and are put back this way on the other side.
 */
export function hideOAuth2Secrets(carried: OAuth2Settings & { secrets: OAuth2Secrets }): OAuth2Settings {
  const { secrets, ...settings } = carried;
  return hideSecrets(settings, secrets);
}
