// Time for the upstream machinery (pacer, health, token cache), injectable so that unit tests
// drive it with a fake clock instead of waiting. Wall-clock milliseconds (Date.now), the same
// clock the ESP and the logs use.

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
