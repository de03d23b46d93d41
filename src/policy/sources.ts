// Who is sending: a client resolves to exactly one source, the user it logged in as, else
// the most specific allowlist entry that contains its address. Unknown clients resolve to
// nothing, and nothing is what may not send.
import { isIPv4 } from 'node:net';
import IPCIDR from 'ip-cidr';
import { LRUCache } from 'lru-cache';
import { effectivePolicy, type Config, type Policy } from '../config/load.js';
import type { Secret } from '../config/secret.js';

export interface Source {
  name: string;
  /** 'local': mail submitted on this host with `smarthost sendmail` (the source `sendmail`). */
  kind: 'allowlist' | 'user' | 'local';
  /** The allowlist range, for allowlist sources. */
  cidr?: string;
  /** Own keys over `defaults:` over top-level `senders:`. */
  policy: Policy;
}

interface RangeSource extends Source {
  range: IPCIDR;
  family: 4 | 6;
  prefix: number;
}

/** The name of the local source: mail from `smarthost sendmail` on this host. */
export const LOCAL_SOURCE = 'sendmail';

/** What the cache of `byAddress` holds for an address in no allowlist entry. */
const NO_MATCH = Symbol('no allowlist entry');

/** "::ffff:10.1.2.3" → "10.1.2.3": IPv4 clients on a dual-stack socket match IPv4 entries. */
export function normaliseIp(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return mapped?.[1] ?? ip;
}

export class SourceResolver {
  private readonly ranges: RangeSource[];
  private readonly users = new Map<string, Source & { password: Secret }>();
  /** The source `sendmail`, or undefined when `sendmail.enabled` is false. */
  readonly local: Source | undefined;
  /**
   * The allowlist entry each recent address matched (NO_MATCH: none). Parsing an address and
   * testing it against the ranges took ~2% of the relay's thread under a new-connection load,
   * and the same few devices connect over and over. A reload builds a new resolver, so a
   * changed allowlist is never answered from here.
   */
  private readonly matched = new LRUCache<string, RangeSource | typeof NO_MATCH>({ max: 10_000 });

  constructor(config: Config) {
    this.ranges = config.allowlist
      .map((entry) => {
        const [address = '', bits] = entry.cidr.split('/');
        const family: 4 | 6 = isIPv4(address) ? 4 : 6;
        const prefix = bits === undefined ? (family === 4 ? 32 : 128) : Number(bits);
        const { cidr: _c, name: _n, publicRange: _p, ...own } = entry;
        return {
          name: entry.name,
          kind: 'allowlist' as const,
          cidr: entry.cidr,
          policy: effectivePolicy(config, own),
          range: new IPCIDR(`${address}/${prefix}`),
          family,
          prefix,
        };
      })
      // Most specific first, so the first match is the one that counts.
      .sort((a, b) => b.prefix - a.prefix);
    const { enabled, ...localOwn } = config.sendmail;
    this.local = enabled
      ? { name: LOCAL_SOURCE, kind: 'local', policy: effectivePolicy(config, localOwn) }
      : undefined;
    for (const user of config.users) {
      const { name, password, ...own } = user;
      this.users.set(name, { name, kind: 'user', password, policy: effectivePolicy(config, own) });
    }
  }

  byAddress(ip: string): Source | undefined {
    let entry = this.matched.get(ip);
    if (entry === undefined) {
      entry = this.match(ip) ?? NO_MATCH;
      this.matched.set(ip, entry);
    }
    return entry === NO_MATCH ? undefined : strip(entry);
  }

  private match(ip: string): RangeSource | undefined {
    const normalised = normaliseIp(ip);
    const family = isIPv4(normalised) ? 4 : 6;
    // Parsed once, not once per range (contains() would parse a string each time).
    let address: IPCIDR.Address;
    try {
      address = IPCIDR.createAddress(normalised);
    } catch {
      return undefined; // not an address ip-cidr can parse: it matches nothing
    }
    return this.ranges.find((entry) => entry.family === family && entry.range.contains(address));
  }

  /** The user and its stored hash, for AUTH. */
  user(name: string): (Source & { password: Secret }) | undefined {
    return this.users.get(name);
  }

  /** The source a session sends as: its user when logged in, else its address's entry. */
  resolve(ip: string, user?: string): Source | undefined {
    if (user) {
      const found = this.users.get(user);
      if (found) {
        const { password: _p, ...source } = found;
        return source;
      }
    }
    return this.byAddress(ip);
  }
}

function strip(entry: RangeSource): Source {
  return { name: entry.name, kind: entry.kind, cidr: entry.cidr, policy: entry.policy };
}
