// Envelope address hygiene: the routing forms of nmap's smtp-open-relay probe and other
// relay tricks are recognised, plain addresses are not; allowedSenders glob patterns.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { domainOf, matchesAny, routingFormProblem } from '../../src/policy/address.js';

describe('routingFormProblem', () => {
  const routing: [string, RegExp][] = [
    ['@[10.0.0.1]:relaytest@nmap.scanme.org', /source route/],
    ['@relay.example:relaytest@nmap.scanme.org', /source route/],
    ['@a,@b:user@example.com', /source route/],
    ['relaytest%nmap.scanme.org@[10.0.0.1]', /% hack/],
    ['relaytest%nmap.scanme.org@relay.test', /% hack/],
    ['"relaytest@nmap.scanme.org"', /quoted local part/],
    ['"relaytest%nmap.scanme.org"', /quoted local part/],
    ['"relaytest@nmap.scanme.org"@[10.0.0.1]', /quoted local part/],
    ['relaytest@nmap.scanme.org@[10.0.0.1]', /more than one @/],
    ['relaytest@nmap.scanme.org@relay.test', /more than one @/],
    ['nmap.scanme.org!relaytest', /bang path/],
    ['nmap.scanme.org!relaytest@[10.0.0.1]', /bang path/],
    ['nmap.scanme.org!relaytest@relay.test', /bang path/],
    ['postmaster', /no domain/],
    ['user@', /no domain/],
    ['@example.com', /source route/],
    ['"unclosed@example.com', /not closed/],
    ['a\r\nb@example.com', /control characters/],
  ];
  for (const [address, why] of routing) {
    test(`refuses ${JSON.stringify(address)}`, () => {
      assert.match(routingFormProblem(address) ?? 'accepted', why);
    });
  }

  for (const address of [
    '',
    'scanner@corp.example',
    'first.last+tag@sub.corp.example',
    'antispam@[10.0.0.1]',
    '"john smith"@corp.example',
    "o'brien@corp.example",
  ]) {
    test(`accepts ${JSON.stringify(address)}`, () => {
      assert.equal(routingFormProblem(address), undefined);
    });
  }
});

describe('matchesAny (allowedSenders)', () => {
  test('globs match the whole address, case-insensitively', () => {
    assert.ok(matchesAny('crm@corp.example', ['*@corp.example']));
    assert.ok(matchesAny('CRM@Corp.Example', ['*@corp.example']));
    assert.ok(!matchesAny('crm@corp.example.evil', ['*@corp.example']));
    assert.ok(!matchesAny('crm@evilcorp.example', ['*@corp.example']));
    assert.ok(matchesAny('alerts-7@corp.example', ['alerts-?@corp.example']));
    assert.ok(!matchesAny('alerts-77@corp.example', ['alerts-?@corp.example']));
    assert.ok(matchesAny('x@b.example', ['*@a.example', '*@b.example']));
  });

  test('regex characters in a pattern are literal', () => {
    assert.ok(!matchesAny('axb@corp.example', ['a.b@corp.example']));
    assert.ok(matchesAny('a.b@corp.example', ['a.b@corp.example']));
    assert.ok(!matchesAny('aaa@corp.example', ['a+@corp.example']));
  });

  test('the null sender matches only "<>"', () => {
    assert.ok(!matchesAny('', ['*']));
    assert.ok(matchesAny('', ['<>', '*@corp.example']));
  });

  test('domainOf', () => {
    assert.equal(domainOf('a@Gmail.COM'), 'gmail.com');
    assert.equal(domainOf('nodomain'), '');
  });
});
