import type { Options, PositionalOptions } from 'yargs';
import { parseBackoffFlag, toBackoffPlan } from '../backoff.js';
import { parseBytes } from '../bytes.js';
import { MAX_TIMER_MS, MAX_TIMER_TEXT, parseDuration } from '../duration.js';
import { assertName, quoteValue } from '../names.js';

/**
 * Every flag and argument that takes a value is declared through one of these: each checks its
 * value when argv is parsed, before any command runs, and a value it cannot use is one line
 * (`mailq: --limit: expected an integer from 1 to 10000, got 'abc'`) and exit 2. yargs' own
 * `type: 'number'` turns `abc` into NaN and lets the command run; these never do. Booleans need no
 * helper: defineCommand refuses `--json=maybe` for every boolean flag.
 *
 * @example
 * yargs.option('limit', integer('--limit', { min: 1, max: 10_000, default: 50, describe: 'How many to show' }))
 */

/** What a helper checks, kept beside the yargs option so tests can list every rule (test/bad-input.test.ts). */
export type ValueRule =
  | { kind: 'integer'; min: number; max: number }
  | { kind: 'number'; min: number; max: number }
  | { kind: 'duration'; maxMs: number }
  | { kind: 'name'; list: boolean }
  | { kind: 'uuid' }
  | { kind: 'json' }
  | { kind: 'text' }
  | { kind: 'backoff' }
  | { kind: 'bytes' }
  | { kind: 'rate'; off: string | undefined }
  | { kind: 'ids'; all: boolean };

const rules = new WeakMap<object, ValueRule>();

/** The rule behind a yargs option built here, if it is one of ours. */
export function ruleOf(option: object): ValueRule | undefined {
  const coerce = (option as { coerce?: unknown }).coerce;
  return typeof coerce === 'function' ? rules.get(coerce) : undefined;
}

interface Described<T> {
  describe?: string;
  default?: T;
  demandOption?: boolean;
  array?: boolean;
}

/** What yargs needs to see in the option's type to infer a defined value (a default, or a required argument). */
type Given<S> = (S extends { default: {} } ? { default: S['default'] } : unknown) & (S extends { demandOption: true } ? { demandOption: true } : unknown);

/** Checks one value: `parse` throws a message, which comes back as `<label>: <message>, got '<value>'`. */
function checker<T>(label: string, parse: (text: string) => T): (value: unknown) => T {
  return (value) => {
    if (typeof value !== 'string' && typeof value !== 'number') throw new Error(`${label}: expected a value, got ${quoteValue(value)}`);
    try {
      return parse(String(value));
    } catch (error) {
      const message = (error as Error).message;
      // Parsers that quote the value themselves (`invalid duration 'abc': …`) need no second quote.
      const quoted = [quoteValue(value), `'${String(value)}'`, `"${String(value)}"`].some((form) => message.includes(form));
      throw new Error(quoted ? `${label}: ${message}` : `${label}: ${message}, got ${quoteValue(value)}`);
    }
  };
}

/** The yargs option: a string that must have a value, checked by `coerce` at parse time. */
function option<T, S extends Described<unknown>>(rule: ValueRule, coerce: (value: unknown) => T, spec: S) {
  rules.set(coerce, rule);
  return {
    type: 'string' as const,
    requiresArg: true,
    ...(spec.array ? { array: true as const } : {}),
    ...(spec.default !== undefined ? { default: spec.default } : {}),
    ...(spec.demandOption ? { demandOption: true as const } : {}),
    ...(spec.describe ? { describe: spec.describe } : {}),
    coerce,
  } as { type: 'string'; requiresArg: true; describe?: string; coerce: (value: unknown) => T } & Given<S>;
}

/** One value (a repeated flag is an error), or with `array` a list of them. */
function checked<T, S extends Described<unknown>>(label: string, rule: ValueRule, parse: (text: string) => T, spec: S) {
  const one = checker(label, parse);
  type Out = S extends { array: true } ? T[] : T;
  const coerce = (value: unknown): Out => {
    if (value === undefined) return undefined as Out;
    if (Array.isArray(value)) {
      if (spec.array) return value.map(one) as Out;
      throw new Error(`${label} was given more than once`);
    }
    return (spec.array ? [one(value)] : one(value)) as Out;
  };
  return option(rule, coerce, spec);
}

const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

/** Decimal digits only (not `1e3`, `0x10` or `1.0`), from `min` to `max`; else undefined. */
function parseInteger(text: string, min: number, max: number): number | undefined {
  const value = Number(text.trim());
  return /^[+-]?\d+$/.test(text.trim()) && Number.isSafeInteger(value) && value >= min && value <= max ? value : undefined;
}

/** An integer from `min` to `max`. */
export function integer<const S extends Described<number> & { min: number; max?: number }>(label: string, spec: S) {
  const max = spec.max ?? Number.MAX_SAFE_INTEGER;
  const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${spec.min}` : `from ${spec.min} to ${max}`;
  return checked(label, { kind: 'integer', min: spec.min, max }, (text) => {
    const value = parseInteger(text, spec.min, max);
    if (value === undefined) throw new Error(`expected an integer ${range}`);
    return value;
  }, spec);
}

/** A decimal number from `min` to `max`. */
export function decimal<const S extends Described<number> & { min: number; max: number }>(label: string, spec: S) {
  return checked(label, { kind: 'number', min: spec.min, max: spec.max }, (text) => {
    const value = Number(text.trim());
    if (!DECIMAL.test(text.trim()) || !(value >= spec.min && value <= spec.max)) throw new Error(`expected a number from ${spec.min} to ${spec.max}`);
    return value;
  }, spec);
}

/** A duration (`120`, `500ms`, `2m`), returned as written once checked. `timer`: at most what Node's timers wait (~24.8 days). */
export function duration<const S extends Described<string> & { timer?: boolean }>(label: string, spec: S) {
  const maxMs = spec.timer ? MAX_TIMER_MS : Number.MAX_SAFE_INTEGER;
  return checked(label, { kind: 'duration', maxMs }, (text) => {
    const ms = parseDuration(text);
    if (ms > maxMs) throw new Error(MAX_TIMER_TEXT);
    return text;
  }, spec);
}

/** A queue or job name. `list`: several, comma-separated or repeated (`a,b` or `a b`), returned as a flat list. */
export function name<const S extends Described<string> & { what?: string }>(label: string, spec: S) {
  return checked(label, { kind: 'name', list: false }, (text) => checkName(spec.what, text), spec);
}

export function names<const S extends Described<string[]> & { what?: string }>(label: string, spec: S) {
  const one = checker(label, (text) => text.split(',').map((part) => part.trim()).filter(Boolean).map((part) => checkName(spec.what, part)));
  const coerce = (value: unknown): string[] => (value === undefined ? (undefined as unknown as string[]) : (Array.isArray(value) ? value : [value]).flatMap(one));
  return option({ kind: 'name', list: true }, coerce, { ...spec, array: true as const });
}

function checkName(what: string | undefined, text: string): string {
  assertName(what ?? 'name', text, (message) => new Error(message));
  return text;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A uuid (batch ids), lower-cased. */
export function uuid<const S extends Described<string>>(label: string, spec: S) {
  return checked(label, { kind: 'uuid' }, (text) => {
    if (!UUID.test(text.trim())) throw new Error('expected a uuid (see `mailq batches`)');
    return text.trim().toLowerCase();
  }, spec);
}

/** JSON text, returned parsed. */
export function json<const S extends Described<string>>(label: string, spec: S) {
  const parse = checker(label, (value) => {
    try {
      return JSON.parse(value) as unknown;
    } catch (error) {
      throw new Error(`not valid JSON (${(error as Error).message})`);
    }
  });
  const coerce = (value: unknown): unknown => {
    if (Array.isArray(value)) throw new Error(`${label} was given more than once`);
    return value === undefined ? undefined : parse(value);
  };
  return option({ kind: 'json' }, coerce, spec);
}

/** Free text that must not be empty nor hold control characters (a host, a token, a key). */
export function text<const S extends Described<string> & { maxLength?: number }>(label: string, spec: S) {
  const maxLength = spec.maxLength ?? 1_000;
  return checked(label, { kind: 'text' }, (value) => {
    if (value.length === 0) throw new Error('expected a value');
    if (value.length > maxLength) throw new Error(`at most ${maxLength} characters`);
    if (/\p{Cc}/u.test(value)) throw new Error('control characters are not allowed');
    return value;
  }, spec);
}

/** Delays between attempts: `60,120,300` or `exp:1s:10m`, returned as written once checked. */
export function backoff<const S extends Described<string>>(label: string, spec: S) {
  return checked(label, { kind: 'backoff' }, (value) => {
    toBackoffPlan(parseBackoffFlag(value));
    return value;
  }, spec);
}

/** A memory size (`256MB`; a bare number is MB), returned as written once checked. */
export function bytes<const S extends Described<string>>(label: string, spec: S) {
  return checked(label, { kind: 'bytes' }, (value) => {
    parseBytes(value);
    return value;
  }, spec);
}

/**
 * A rate (`100/min`) read by `parse` (the mailbox's parseRate: the core imports nothing of it), or
 * the word `off` for none. Returned as written once checked.
 */
export function rate<const S extends Described<string> & { off?: string; parse: (text: string) => unknown }>(label: string, spec: S) {
  return checked(label, { kind: 'rate', off: spec.off }, (value) => {
    if (spec.off !== undefined && value === spec.off) return value;
    spec.parse(value);
    return value;
  }, spec);
}

/** Failed-job ids (positive integers); `all` alone too if `all`. */
export function ids<const S extends Described<string[]> & { all?: boolean }>(label: string, spec: S) {
  const id = checker(label, (value) => {
    const n = parseInteger(value, 1, Number.MAX_SAFE_INTEGER);
    if (n === undefined) throw new Error(spec.all ? "expected positive integer ids, or 'all'" : 'expected positive integer ids');
    return n;
  });
  const coerce = (value: unknown): Array<number | 'all'> => {
    if (value === undefined) return undefined as unknown as Array<number | 'all'>;
    const values = Array.isArray(value) ? value : [value];
    if (spec.all && values.length === 1 && values[0] === 'all') return ['all'];
    return values.map(id);
  };
  return option({ kind: 'ids', all: spec.all ?? false }, coerce, { ...spec, array: true as const });
}

/** `--hostname`, for every command whose processes name themselves after their host (see src/host-name.ts). */
export const hostnameOption = text('--hostname', { maxLength: 191, describe: "The host name shown in mailq status, worker ids and schedule runs (env MAILQ_HOSTNAME; default: the machine's)" });
