// The queue commands' filters (src/control/queue-filter.ts): wildcards, not regular
// expressions; checked where they arrive; hostile patterns cost little and mean nothing special.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  checkFilter,
  FilterError,
  matches,
  MAX_PATTERN_LENGTH,
  wildcardMatch,
  type Matchable,
} from '../../src/control/queue-filter.js';

const message = (overrides: Partial<Matchable> = {}): Matchable => ({
  from: 'scanner@corp.example',
  recipients: ['alice@example.com', 'bob@other.example'],
  source: 'printers',
  createdAt: Date.now() - 3 * 3_600_000,
  state: 'deferred',
  ...overrides,
});

describe('wildcard match', () => {
  for (const [pattern, text, expected] of [
    ['*@example.com', 'alice@example.com', true],
    ['*@EXAMPLE.com', 'Alice@Example.COM', true],
    ['*@example.com', 'alice@example.com.evil', false],
    ['alice@example.com', 'alice@example.com', true],
    ['alice', 'alice@example.com', false], // the whole address, not a part of it
    ['scanner?@corp.example', 'scanner7@corp.example', true],
    ['scanner?@corp.example', 'scanner@corp.example', false],
    ['*', '', true],
    ['?', '', false],
    ['a*b*c', 'aXbYc', true],
    ['a*b*c', 'aXbYcZ', false],
    ['***a***', 'bab', true],
    // Regex syntax is literal text.
    ['.*', 'anything', false],
    ['.*', '.xyz', true],
    ['(a+)+$', '(a+)+$', true],
    ['[abc]', 'a', false],
    ['a\\*', 'a\\xyz', true],
  ] as const) {
    test(`${JSON.stringify(pattern)} ~ ${JSON.stringify(text)}: ${expected}`, () => {
      assert.equal(wildcardMatch(pattern, text), expected);
    });
  }

  test('hostile patterns finish: many stars, long input, no match at the very end', () => {
    const text = `${'a'.repeat(5000)}@example.com`;
    assert.equal(wildcardMatch(`${'a*'.repeat(120)}b`, text), false);
    assert.equal(wildcardMatch(`${'*a'.repeat(120)}*`, text), true);
    assert.equal(wildcardMatch(`${'?*'.repeat(128)}`, text), true);
    assert.equal(wildcardMatch('*'.repeat(MAX_PATTERN_LENGTH), text), true);
  });
});

describe('filter check', () => {
  test('refuses what is not a filter, with the option in the message', () => {
    for (const [raw, message] of [
      [{ from: 'x'.repeat(MAX_PATTERN_LENGTH + 1) }, /--from: a pattern of at most/],
      [{ to: '' }, /--to needs a pattern/],
      [{ source: 'a\u0000b' }, /control characters/],
      [{ olderThan: -1 }, /--older-than/],
      [{ olderThan: 'soon' }, /--older-than/],
      [{ state: ['sleeping'] }, /--state: "sleeping" is not one of/],
      [{ regex: '.*' }, /unknown filter "regex"/],
      [[], /must be an object/],
    ] as const) {
      assert.throws(
        () => checkFilter(raw),
        (err: unknown) => err instanceof FilterError && message.test(err.message),
      );
    }
    assert.deepEqual(checkFilter(undefined), {});
    assert.deepEqual(checkFilter({ state: 'held' }), { state: ['held'] });
  });

  test('every part must match; --to matches any recipient; <> is the null sender', () => {
    const m = message();
    assert.equal(matches({}, m), true);
    assert.equal(matches({ to: '*@other.example' }, m), true);
    assert.equal(matches({ to: '*@nowhere.example' }, m), false);
    assert.equal(matches({ from: 'scanner@*', source: 'print*' }, m), true);
    assert.equal(matches({ from: 'scanner@*', source: 'users' }, m), false);
    assert.equal(matches({ olderThan: 2 * 3_600_000 }, m), true);
    assert.equal(matches({ olderThan: 4 * 3_600_000 }, m), false);
    assert.equal(matches({ state: ['held', 'deferred'] }, m), true);
    assert.equal(matches({ state: ['held'] }, m), false);
    assert.equal(matches({ from: '<>' }, message({ from: '' })), true);
    assert.equal(matches({ from: '*' }, message({ from: '' })), true);
  });
});
