// Envelope address hygiene: the routing forms old mail systems understood (source routes,
// the % hack, bang paths, quoted local parts holding an @) let a relay be steered to other
// hosts; a smarthost accepts none of them. Also the glob patterns of `allowedSenders`.

/**
 * Why an envelope address (without its angle brackets) is in a routing form or otherwise not
 * a plain user@domain, in words for the reply; undefined when it is plain. The null sender
 * (empty) is plain.
 */
export function routingFormProblem(address: string): string | undefined {
  if (address === '') return undefined;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(address)) return 'it contains control characters';
  if (address.startsWith('@'))
    return 'source routes (@relay:user@domain) are not accepted, give the plain user@domain';
  let local: string;
  let domain: string;
  if (address.startsWith('"')) {
    const end = closingQuote(address);
    if (end === -1) return 'its quoted local part is not closed';
    local = address.slice(0, end + 1);
    const rest = address.slice(end + 1);
    if (/[@%!]/.test(local.slice(1, -1)))
      return 'quoted local parts holding @, % or ! (routing forms) are not accepted';
    if (!rest.startsWith('@')) return 'it has no domain (an address is user@domain)';
    domain = rest.slice(1);
  } else {
    const at = address.indexOf('@');
    if (at === -1) {
      if (address.includes('!')) return 'bang paths (host!user) are not accepted';
      return 'it has no domain (an address is user@domain)';
    }
    local = address.slice(0, at);
    domain = address.slice(at + 1);
    if (local.includes('!')) return 'bang paths (host!user@relay) are not accepted';
    if (local.includes('%')) return 'the % hack (user%host@relay) is not accepted';
  }
  if (domain.includes('@')) return 'it has more than one @ (a routing form)';
  if (local === '' || local === '""') return 'its local part is empty';
  if (domain === '') return 'it has no domain (an address is user@domain)';
  return undefined;
}

function closingQuote(address: string): number {
  for (let i = 1; i < address.length; i++) {
    if (address[i] === '\\') i++;
    else if (address[i] === '"') return i;
  }
  return -1;
}

/** The domain of user@domain, lower-cased ('' when there is none). */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at === -1 ? '' : address.slice(at + 1).toLowerCase();
}

/**
 * Whether `address` matches one of the glob patterns: `*` any run of characters, `?` one,
 * case-insensitive, whole address. The null sender matches only the pattern "<>".
 */
export function matchesAny(address: string, patterns: readonly string[]): boolean {
  if (address === '') return patterns.includes('<>');
  return patterns.some((pattern) => globToRegExp(pattern).test(address));
}

function globToRegExp(pattern: string): RegExp {
  const source = pattern
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`, 'is');
}
