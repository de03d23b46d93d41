// When to try again: the configured schedule (last interval repeats), in floats, with ±10 %
// jitter so that a queue that filled during an outage does not retry in lockstep.

export function retryDelay(attempts: number, schedule: number[], random = Math.random): number {
  const index = Math.min(Math.max(attempts - 1, 0), schedule.length - 1);
  const base = schedule[index] ?? 60_000;
  return base * (0.9 + 0.2 * random());
}
