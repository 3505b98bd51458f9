import ms from 'ms';
import { quoteValue } from './names.js';

/**
 * A duration as users write it: a number of seconds (Laravel's habit: `--timeout=120`,
 * `backoff: [60, 120, 300]`) or a string with a unit (`'500ms'`, `'2m'`, `'1h'`).
 */
export type Duration = number | string;

/** Longer than this is a typo, not a plan (and past it, dates leave MySQL's DATETIME range soon enough). */
export const MAX_DURATION_MS = 10 * 365 * 86_400_000;
/** What Node's timers can wait (~24.8 days): a longer timeout would fire after 1 ms instead. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The words for MAX_TIMER_MS in an error message. */
export const MAX_TIMER_TEXT = 'at most 24 days (the longest a timer can wait)';

export function parseDuration(value: Duration): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`invalid duration ${value}: expected seconds ≥ 0`);
    return withinRange(Math.round(value * 1000), value);
  }
  const invalid = () => new RangeError(`invalid duration ${quoteValue(value)}: use seconds (120) or a unit (500ms, 30s, 2m, 1h)`);
  if (typeof value !== 'string') throw invalid();
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return withinRange(Math.round(Number(text) * 1000), value);
  let parsed: number | undefined;
  try {
    parsed = ms(text as ms.StringValue);
  } catch {
    // ms throws on '' and on values that are not text.
  }
  if (typeof parsed !== 'number' || !Number.isFinite(parsed) || parsed < 0) throw invalid();
  return withinRange(parsed, value);
}

function withinRange(milliseconds: number, value: Duration): number {
  if (!Number.isFinite(milliseconds) || milliseconds > MAX_DURATION_MS) throw new RangeError(`invalid duration ${quoteValue(value)}: longer than 10 years`);
  return milliseconds;
}

export function formatDuration(milliseconds: number): string {
  if (milliseconds < 1000) return `${Math.round(milliseconds)}ms`;
  if (milliseconds < 60_000) return `${+(milliseconds / 1000).toFixed(1)}s`;
  const minutes = Math.floor(milliseconds / 60_000);
  const seconds = Math.round((milliseconds % 60_000) / 1000);
  if (minutes < 60) return seconds ? `${minutes}m ${seconds}s` : `${minutes}m`;
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}
