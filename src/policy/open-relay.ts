// The one rule that matters most: never an open relay. An allowlist entry lets its clients send
// without a login, so an entry that reaches into the public internet lets strangers send mail
// through the company's ESP account. The same check runs wherever an entry can come from: the
// config's validation (start, reload, check-config: config/schema.ts) and `allowlist add`.
//
// - A range so wide that no company network is that size (IPv4 /0–/7, IPv6 /0–/15, and the
//   IPv4-mapped IPv6 form of such an IPv4 range) is refused, whatever the entry says: it can
//   only be a mistake or an open relay. There is no opt-in for it.
// - A narrower range with public addresses in it (a company's own public block, behind a
//   firewall) needs `publicRange: true` on its entry: a written, reviewable acknowledgement.
// Private, loopback, link-local, CGNAT and ULA ranges (cidr.ts) pass as they are.
import { includesPublic, overlaps, parseRange, sizeOf, type Range } from './cidr.js';

/** The shortest prefix an entry with public addresses may have, per family. */
export const WIDEST_PREFIX = { 4: 8, 6: 16 } as const;

/** The IPv4-mapped IPv6 block (::ffff:0:0/96): one of its ranges is that IPv4 range. */
const MAPPED_V4 = parseRange('::ffff:0:0/96')!;

export interface RelayRisk {
  /** 'open': refused whatever the entry says; 'public': needs `publicRange: true`. */
  level: 'open' | 'public';
  /** What is wrong, as a sentence: "0.0.0.0/0 is every IPv4 address there is". */
  what: string;
}

/** Whether the range reaches so far that it is an open relay (see the top of this file). */
function tooWide(range: Range): boolean {
  if (range.prefix < WIDEST_PREFIX[range.family]) return true;
  // ::ffff:0.0.0.0/97 is 0.0.0.0/1 in disguise; ::/80 holds all of ::ffff:0:0/96.
  if (range.family === 6 && overlaps(range, MAPPED_V4)) {
    return Math.max(range.prefix, 96) - 96 < WIDEST_PREFIX[4];
  }
  return false;
}

/** What an allowlist range risks; undefined when it holds no public address. */
export function relayRisk(range: Range): RelayRisk | undefined {
  if (!includesPublic(range)) return undefined;
  const family = range.family === 4 ? 'IPv4' : 'IPv6';
  if (tooWide(range)) {
    const what =
      range.prefix === 0
        ? `${range.text} is every ${family} address there is`
        : `${range.text} is ${sizeOf(range)} addresses, most of them on the public internet`;
    return { level: 'open', what };
  }
  return {
    level: 'public',
    what: `${range.text} includes public internet addresses (${sizeOf(range)} addresses, not all private, loopback, link-local, CGNAT or ULA)`,
  };
}

/** The validation message for an entry, or undefined when it may stand as written. */
export function allowlistProblem(cidr: string, acknowledged: boolean): string | undefined {
  const range = parseRange(cidr);
  if (!range) return undefined; // the cidr's own check says what is wrong
  const risk = relayRisk(range);
  if (!risk || (risk.level === 'public' && acknowledged)) return undefined;
  if (risk.level === 'open') {
    return (
      `5.7.1 open relay risk: ${risk.what}. An allowlist entry lets its clients send without a login: ` +
      'this one would make the relay an OPEN RELAY for the internet, and no setting allows that. ' +
      'List only your own networks (e.g. 10.20.30.0/24).'
    );
  }
  return (
    `5.7.1 open relay risk: ${risk.what}. Its clients could send without a login. If this range really ` +
    'is yours and the relay cannot be reached from the internet, add "publicRange: true" to this entry ' +
    'to say so (README, "The allowlist guard").'
  );
}
