// Issue 12's pacing acceptance, exactly: `rateLimit: 30/min` with 20 queued: at most 2
// deliveries in any one second, never more than 30 in any 60 s, all delivered (about 40 s).
// The scenario: test/e2e/pacing-common.ts (npm test runs it four times faster).
import { test } from 'node:test';
import { pacedBacklog } from '../e2e/pacing-common.js';

test(
  '20 queued at 30/min: at most 2 in any second, never 30 in 60 s, all delivered',
  { timeout: 150_000 },
  () => pacedBacklog(1),
);
