// Routing by recipient and sender domain (src/delivery/routes.ts), as a table.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Upstream } from '../../src/config/load.js';
import { planRoutes, routeForRecipient } from '../../src/delivery/routes.js';
import { sizeLimitOf } from '../../src/delivery/smtp-courier.js';

const up = (
  name: string,
  recipientDomains: string[] = [],
  senderDomains: string[] = [],
  maxSize?: number,
) => ({
  upstream: { name, recipientDomains, senderDomains } as unknown as Upstream,
  maxSize,
});

const exchange = up('exchange', ['corp.example'], [], 10_000);
const exchange2 = up('exchange-2', ['corp.example'], [], 10_000);
const esp = up('esp', [], [], 50_000);
const brand = up('brand', [], ['brand.example'], 50_000);
const clients = [exchange, exchange2, esp, brand];
const names = (list: { upstream: Upstream }[]) => list.map((c) => c.upstream.name);

test('each recipient gets the upstreams of its route, in order', () => {
  // [sender, recipient, the upstreams to try]
  const table: [string, string, string[]][] = [
    ['x@example.com', 'a@corp.example', ['exchange', 'exchange-2']],
    ['x@example.com', 'a@Corp.Example', ['exchange', 'exchange-2']],
    ['x@example.com', 'a@sub.corp.example', ['esp']],
    ['x@brand.example', 'a@example.com', ['brand']],
    ['x@brand.example', 'a@corp.example', ['exchange', 'exchange-2']],
    ['x@corp.example', 'a@elsewhere.example', ['esp']],
  ];
  for (const [sender, recipient, expected] of table) {
    assert.deepEqual(
      names(routeForRecipient(clients, sender, recipient)),
      expected,
      `${sender} → ${recipient}`,
    );
  }
});

test('a message to several routes is planned in parts; one route is one part', () => {
  const parts = planRoutes(clients, 'scanner@corp.example', [
    'x@corp.example',
    'y@example.com',
    'z@corp.example',
  ]);
  assert.deepEqual(
    parts.map((p) => [names(p.candidates), p.recipients]),
    [
      [
        ['exchange', 'exchange-2'],
        ['x@corp.example', 'z@corp.example'],
      ],
      [['esp'], ['y@example.com']],
    ],
  );
  assert.equal(planRoutes([esp], 'a@b.example', ['x@corp.example', 'y@example.com']).length, 1);
  // Every upstream has recipientDomains: recipients in none go through all of them.
  assert.deepEqual(names(routeForRecipient([exchange, exchange2], 'a@b.example', 'y@example.com')), [
    'exchange',
    'exchange-2',
  ]);
});

test('the accept-time size limit counts only the upstreams for other recipients', () => {
  assert.equal(sizeLimitOf(clients, 'a@corp.example'), 50_000 - 2048);
});
