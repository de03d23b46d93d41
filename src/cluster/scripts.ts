// The Lua scripts of cluster mode: each check is one atomic round trip to Redis, with Redis's
// own TIME as the one clock every relay shares (the relays' clocks may disagree). ioredis runs
// them with EVALSHA (EVAL once when Redis does not know the script yet).
//
// Numbers: Redis turns a Lua number it returns into an integer, so fractions come back as text.

/** Redis's clock in milliseconds (with a fraction). */
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000`;

/**
 * Token bucket, as RateLimiter.take() (src/policy/limits.ts): a bucket holds at most `count`
 * tokens and refills at `count` per `perMs`. KEYS[1] the bucket (a hash: tokens, at);
 * ARGV count, perMs. Returns {1, 0} (taken) or {0, retryInMs}. The key expires when the
 * bucket would be full again, when it is the same as no key.
 */
export const TAKE_TOKEN = `${NOW}
local count = tonumber(ARGV[1])
local perMs = tonumber(ARGV[2])
local perToken = perMs / count
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = count
  at = now
end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
-- A rate lowered by a reload must not leave more tokens than the new burst.
tokens = math.min(count, tokens + elapsed / perToken)
local ok = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  ok = 1
else
  retry = math.ceil((1 - tokens) * perToken)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(perMs) + 1000)
return {ok, retry}`;

/**
 * A failed login, counted by address (KEYS[1] failures, KEYS[2] lockout) and by username
 * (KEYS[3], KEYS[4]; ARGV[5] = '1' when there is one), as AuthFailureTracker.fail():
 * `max` failures within `windowMs` lock out for `lockoutMs`. ARGV max, windowMs, lockoutMs,
 * nonce (keeps two failures in the same millisecond apart), hasUser. Returns {addressLocked,
 * userLocked} (1 when this failure started the lockout).
 */
export const AUTH_FAILED = `${NOW}
local max = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local lockout = tonumber(ARGV[3])
local function fail(failures, lock)
  redis.call('ZREMRANGEBYSCORE', failures, '-inf', now - window)
  redis.call('ZADD', failures, now, tostring(now) .. ':' .. ARGV[4])
  if redis.call('ZCARD', failures) >= max then
    redis.call('DEL', failures)
    redis.call('SET', lock, '1', 'PX', math.ceil(lockout))
    return 1
  end
  redis.call('PEXPIRE', failures, math.ceil(window))
  return 0
end
local a = fail(KEYS[1], KEYS[2])
local u = 0
if ARGV[5] == '1' then u = fail(KEYS[3], KEYS[4]) end
return {a, u}`;

/** Milliseconds left of the lockouts KEYS[1] (address) and KEYS[2] (username); 0 when none. */
export const LOCKED_FOR = `local a = redis.call('PTTL', KEYS[1])
local u = redis.call('PTTL', KEYS[2])
if a < 0 then a = 0 end
if u < 0 then u = 0 end
return {a, u}`;

/**
 * An upstream's pace, GCRA as the Pacer's even pace (src/upstream/pacer.ts), shared: KEYS[1]
 * the theoretical arrival time, KEYS[2] the throttling slowdown any relay last reported (a
 * factor on the interval, with a TTL). ARGV intervalMs (at the configured pace), burst, this
 * relay's factor, publish ('1': store this relay's factor for all, it changed), slowTtlMs.
 * Returns {waitMs, factor in force}: 0 means this relay may start one message now (reserved).
 */
export const RESERVE_PACE = `${NOW}
local factor = tonumber(ARGV[3])
if ARGV[4] == '1' then
  if factor > 1 then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[5])
  else
    redis.call('DEL', KEYS[2])
  end
end
local shared = tonumber(redis.call('GET', KEYS[2]) or '1') or 1
if shared > factor then factor = shared end
local interval = tonumber(ARGV[1]) * factor
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
-- Never further ahead than the burst at the pace in force (the pace recovered).
if tat > now + burst * interval then tat = now + interval end
local wait = tat - (burst - 1) * interval - now
if wait > 0 then return {math.ceil(wait), tostring(factor)} end
tat = tat + interval
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now + burst * interval) + 1000)
return {0, tostring(factor)}`;

export const SCRIPTS = {
  smarthostTakeToken: { numberOfKeys: 1, lua: TAKE_TOKEN },
  smarthostAuthFailed: { numberOfKeys: 4, lua: AUTH_FAILED },
  smarthostLockedFor: { numberOfKeys: 2, lua: LOCKED_FOR },
  smarthostReservePace: { numberOfKeys: 2, lua: RESERVE_PACE },
} as const;

/** The scripts as methods of the client (ioredis defineCommand). */
export interface ScriptCommands {
  smarthostTakeToken(key: string, count: number, perMs: number): Promise<[number, number]>;
  smarthostAuthFailed(
    addressFailures: string,
    addressLock: string,
    userFailures: string,
    userLock: string,
    max: number,
    windowMs: number,
    lockoutMs: number,
    nonce: string,
    hasUser: '0' | '1',
  ): Promise<[number, number]>;
  smarthostLockedFor(addressLock: string, userLock: string): Promise<[number, number]>;
  smarthostReservePace(
    tat: string,
    slow: string,
    intervalMs: number,
    burst: number,
    factor: number,
    publish: '0' | '1',
    slowTtlMs: number,
  ): Promise<[number, string]>;
}
