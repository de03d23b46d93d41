// A source's policy in words, for `allowlist list|test` and `user list`.
import type { Policy } from '../config/load.js';
import { sizeInUnits } from './output.js';

function size(bytes: number): string {
  return sizeInUnits(bytes) ?? `${bytes} bytes`;
}

/** "key: value" pairs, one per line (multiline) or joined with "; ". Unset keys are left out. */
export function describePolicy(policy: Policy, opts: { skip?: string[]; multiline?: boolean } = {}): string {
  const parts: [string, string][] = [];
  const add = (key: keyof Policy, text: string | undefined) => {
    if (text !== undefined && !opts.skip?.includes(key)) parts.push([key, text]);
  };
  add('sender', policy.sender ? `every message is sent as ${policy.sender}` : undefined);
  if (policy.senders) {
    const domains = policy.senders.domains.length ? policy.senders.domains.join(', ') : '(none)';
    add(
      'senders',
      `senders in ${domains} kept${policy.senders.default ? `, others sent as ${policy.senders.default}` : ''}`,
    );
  }
  add('rateLimit', policy.rateLimit?.text);
  add('recipientRateLimit', policy.recipientRateLimit?.text);
  add('allowedRecipientDomains', policy.allowedRecipientDomains?.join(', '));
  add('allowedSenders', policy.allowedSenders?.join(', '));
  add('maxMessageSize', policy.maxMessageSize === undefined ? undefined : size(policy.maxMessageSize));
  add('maxRecipients', policy.maxRecipients === undefined ? undefined : String(policy.maxRecipients));
  add('allowInsecureAuth', policy.allowInsecureAuth ? 'yes (AUTH without TLS)' : undefined);
  return opts.multiline
    ? parts.map(([k, v]) => `  ${k}: ${v}`).join('\n')
    : parts.map(([k, v]) => `${k}: ${v}`).join('; ');
}
