// SASL XOAUTH2 for nodemailer, as a custom authentication handler, so that every connection of
// the pool logs in with the upstream's shared token cache, and a refused token is handled the
// same way whether the ESP answers "334 <error>" first (Google) or "535" at once (Microsoft):
// the token is replaced once and the login tried again; a second refusal fails the login
// (EAUTH, a temporary failure: the mail waits, it never bounces for it).
//
// nodemailer's own OAuth2 support only retries after a 334 and keeps one token per connection,
// hence this handler. It is registered under a name of our own (nodemailer reroutes a method
// called "XOAUTH2" to its built-in code); the command on the wire is AUTH XOAUTH2.
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { TokenCache } from './oauth.js';

export const XOAUTH2_METHOD = 'SMARTHOST-XOAUTH2';

type Context = SMTPConnection.CustomAuthenticationContext;
type Reply = SMTPConnection.CustomAuthenticationResponse;

/** The initial client response of RFC 7628-style XOAUTH2: user=…^Aauth=Bearer …^A^A. */
export function xoauth2Response(user: string, token: string): string {
  return Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`, 'utf8').toString('base64');
}

async function tryLogin(
  ctx: Context,
  user: string,
  token: string,
): Promise<{ reply: Reply; refused: boolean }> {
  let reply = await ctx.sendCommand(`AUTH XOAUTH2 ${xoauth2Response(user, token)}`);
  // A refusal may come as a 334 challenge carrying a JSON error; the client answers with an
  // empty line and gets the final 5xx.
  let challenged = false;
  if (reply.status === 334) {
    challenged = true;
    reply = await ctx.sendCommand('');
  }
  return { reply, refused: challenged || reply.status === 535 };
}

function ok(reply: Reply): boolean {
  return reply.status >= 200 && reply.status < 300;
}

export function xoauth2Handler(tokens: TokenCache, user: string): (ctx: Context) => Promise<void> {
  return async (ctx) => {
    if (!ctx.authMethods.includes('XOAUTH2')) {
      const offered = ctx.authMethods.length ? ctx.authMethods.join(', ') : 'none';
      throw new Error(`the upstream does not offer AUTH XOAUTH2 (offers: ${offered})`);
    }
    let token = await tokens.get();
    let login = await tryLogin(ctx, user, token);
    if (ok(login.reply)) return;
    if (!login.refused) throw new Error('XOAUTH2 login failed');
    token = await tokens.get(token);
    login = await tryLogin(ctx, user, token);
    if (ok(login.reply)) return;
    throw new Error('XOAUTH2 token refused by the upstream, also after fetching a fresh one');
  };
}
