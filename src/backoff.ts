import { formatDuration, parseDuration, type Duration } from './duration.js';

/**
 * How long a failed job waits before its next attempt.
 * A list is Laravel's `$backoff`: the n-th retry waits the n-th entry, the last one repeats.
 */
export type BackoffOption =
  | Duration
  | Duration[]
  | { type: 'exponential'; base: Duration; max?: Duration; jitter?: boolean };

/** The stored form (milliseconds), kept in the job row so any worker computes the same delay. */
export type BackoffPlan = number[] | { exponential: { baseMs: number; maxMs: number; jitter: boolean } };

export function toBackoffPlan(option: BackoffOption): BackoffPlan {
  if (Array.isArray(option)) {
    if (option.length === 0) throw new RangeError('backoff list is empty');
    return option.map(parseDuration);
  }
  if (typeof option === 'object') {
    const baseMs = parseDuration(option.base);
    const maxMs = option.max === undefined ? 3_600_000 : parseDuration(option.max);
    return { exponential: { baseMs, maxMs, jitter: option.jitter ?? true } };
  }
  return [parseDuration(option)];
}

/** Delay before the attempt that follows failed attempt number `attempt` (1-based). */
export function backoffDelayMs(plan: BackoffPlan, attempt: number, random: () => number = Math.random): number {
  if (Array.isArray(plan)) return plan[Math.min(attempt, plan.length) - 1] ?? 0;
  const { baseMs, maxMs, jitter } = plan.exponential;
  const ceiling = Math.min(maxMs, baseMs * 2 ** (attempt - 1));
  // "Equal jitter": keeps at least half the delay, so retries never pile up at zero.
  return jitter ? Math.round(ceiling / 2 + random() * (ceiling / 2)) : ceiling;
}

/** Parses `60,120,300` or `exp:10s:10m`, the CLI spelling. */
export function parseBackoffFlag(text: string): BackoffOption {
  const exponential = /^exp(?:onential)?(?::([^:]+))?(?::([^:]+))?$/.exec(text.trim());
  if (exponential) return { type: 'exponential', base: exponential[1] ?? '1s', max: exponential[2] ?? '1h' };
  return text.split(',').map((part) => part.trim());
}

/** The inverse of toBackoffPlan, for handing a stored plan to an API that takes options. */
export function planToOption(plan: BackoffPlan): BackoffOption {
  if (Array.isArray(plan)) return plan.map((delay) => `${delay}ms`);
  const { baseMs, maxMs, jitter } = plan.exponential;
  return { type: 'exponential', base: `${baseMs}ms`, max: `${maxMs}ms`, jitter };
}

/** A plan in words, for summaries: `1m, 2m, 5m` or `exponential 1s…1h`. */
export function describeBackoff(plan: BackoffPlan): string {
  if (Array.isArray(plan)) return plan.map(formatDuration).join(', ');
  const { baseMs, maxMs, jitter } = plan.exponential;
  return `exponential ${formatDuration(baseMs)}…${formatDuration(maxMs)}${jitter ? ' with jitter' : ''}`;
}
