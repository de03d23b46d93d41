// The kinds of value a config file's settings are written in (durations, sizes, rates,
// secrets, addresses, CIDR ranges): each a Zod schema that checks the text a human wrote,
// says what it expected when it is wrong, and turns it into what the program uses.
import { isIP } from 'node:net';
import { z } from 'zod';
import { Secret } from './secret.js';
import { parseDuration, parseRate, parseSize } from './units.js';

export const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: 'expected a duration such as 30s, 5m, 72h or 2d' });
    return z.NEVER;
  }
  return ms;
});

export const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: 'expected a size such as 512KB, 25MB or a number of bytes' });
    return z.NEVER;
  }
  return bytes;
});

export const rate = z.string().transform((value, ctx) => {
  const parsed = parseRate(value);
  if (!parsed) {
    ctx.addIssue({ code: 'custom', message: 'expected a rate such as 60/min, 1000/hour, 5000/day or 14/s' });
    return z.NEVER;
  }
  return parsed;
});

/** How long to keep something: a duration, or 0 / off / false to keep it for ever. */
export const retentionAge = z
  .union([z.literal('off'), z.literal(false), z.string(), z.number()])
  .transform((value, ctx) => {
    if (value === 'off' || value === false) return 0;
    const ms = parseDuration(value);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: 'expected a duration such as 7d or 30d, or off' });
      return z.NEVER;
    }
    return ms;
  });

export const port = z.number().int().min(1).max(65535);

/**
 * A password, client secret or token: text, kept in a Secret from here on (it prints as ***).
 * The message never echoes the value (see describeIssues in load.ts).
 */
export const secretText = (minLength = 0) =>
  z
    .string({
      error: 'expected text: put quotes around a value made of digits (the value is not shown)',
    })
    .min(minLength, 'must not be empty')
    .transform((value) => new Secret(value));

// Deliberately loose: the real check of an address happens in the SMTP layer; here we
// only want to catch typos such as a missing @ or spaces.
export const email = z
  .string()
  .regex(/^[^\s@<>]+@[^\s@<>]+$/, 'expected an email address such as scanner@corp.example');
export const domain = z
  .string()
  .regex(/^(?=.{1,253}$)[a-z0-9-]+(\.[a-z0-9-]+)*$/i, 'expected a domain name such as corp.example')
  .transform((d) => d.toLowerCase());

export const cidr = z.string().refine((value) => {
  const [address, bits, ...rest] = value.split('/');
  if (rest.length || !address) return false;
  const family = isIP(address);
  if (!family) return false;
  if (bits === undefined) return true;
  if (!/^\d+$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}, 'expected an IP address or CIDR range such as 10.20.30.0/24 or fd00::/64');
