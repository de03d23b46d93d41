// The allowlist guard (src/policy/open-relay.ts) in the config's validation: an entry written by
// hand that would make the relay an open relay fails the load (so start, reload and
// check-config), with the same rule as `allowlist add`.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { parseRange } from '../../src/policy/cidr.js';
import { relayRisk } from '../../src/policy/open-relay.js';

function problems(allowlist: unknown[]): string {
  try {
    parseConfig({ allowlist }, { env: {}, baseDir: '/tmp', source: 'test' });
    return '';
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.join('\n');
    throw err;
  }
}

describe('open relay guard', () => {
  test('levels: private passes, public needs an acknowledgement, too wide is refused', () => {
    const level = (cidr: string) => relayRisk(parseRange(cidr)!)?.level;
    for (const cidr of [
      '10.0.0.0/8',
      '127.0.0.0/8',
      '192.168.1.0/24',
      'fd00::/8',
      'fc00::/7',
      '::1/128',
      '::ffff:10.1.0.0/112',
    ])
      assert.equal(level(cidr), undefined, cidr);
    for (const cidr of ['198.51.100.0/24', '8.0.0.0/8', '2001:db8::/32', '2000::/16', '::ffff:8.8.8.0/120'])
      assert.equal(level(cidr), 'public', cidr);
    for (const cidr of [
      '0.0.0.0/0',
      '0.0.0.0/1',
      '192.0.0.0/7',
      '::/0',
      '2000::/3',
      '2000::/15',
      // IPv4-mapped IPv6 forms of a too-wide IPv4 range, and ranges holding all of them.
      '::ffff:0.0.0.0/96',
      '::ffff:0.0.0.0/100',
      '::/80',
    ])
      assert.equal(level(cidr), 'open', cidr);
  });

  test('0.0.0.0/0 and ::/0 by hand fail validation, whatever the entry says', () => {
    for (const cidr of ['0.0.0.0/0', '::/0', '64.0.0.0/2']) {
      const text = problems([{ cidr, name: 'everyone', publicRange: true }]);
      assert.match(
        text,
        /allowlist\.0\.cidr: got ".*": 5\.7\.1 open relay risk: .*OPEN RELAY.*no setting allows that/,
      );
    }
  });

  test('a public range fails unless its entry says publicRange: true', () => {
    assert.match(
      problems([{ cidr: '198.51.100.0/24', name: 'dmz' }]),
      /allowlist\.0\.cidr: .*5\.7\.1 open relay risk: .*public internet addresses.*publicRange: true/,
    );
    assert.equal(problems([{ cidr: '198.51.100.0/24', name: 'dmz', publicRange: true }]), '');
    assert.equal(problems([{ cidr: '10.20.30.0/24', name: 'printers' }]), '');
  });
});
