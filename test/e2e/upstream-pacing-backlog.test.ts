// Issue 12's pacing acceptance at four times the speed (120/min, every window a quarter as
// long), so that it runs in about 10 s; the exact 30/min case is in
// test/reliability/pacing.test.ts. The scenario: test/e2e/pacing-common.ts.
import { test } from 'node:test';
import { pacedBacklog } from './pacing-common.js';

test(
  '20 queued at 120/min: at most 2 in any 250 ms, never 30 in 15 s, all delivered',
  { timeout: 90_000 },
  () => pacedBacklog(4),
);
