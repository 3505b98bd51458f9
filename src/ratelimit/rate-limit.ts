import { parseDuration, type Duration } from '../duration.js';

/**
 * What a job type declares: at most `limit` starts per `per`, shared by every worker on every host
 * through the database. Several job types may share one key (e.g. everything that calls TWS).
 */
export interface RateLimitOption {
  key: string;
  limit: number;
  per: Duration;
  /**
   * Extra time added to each window. A token is stamped when a worker takes it, slightly before the
   * job's request reaches the remote service; the margin absorbs that delay so the service itself
   * never sees more than `limit` in any window. Default: 2% of `per`, between 20 ms and 1 s.
   */
  margin?: Duration;
}

/** The handle a rate-limited job gets as `ctx.rateLimit`. */
export interface JobRateLimit {
  readonly key: string;
  /**
   * Pauses the key for every worker on every host, e.g. on a 429 with Retry-After.
   * Then `ctx.defer(delay)` puts this job back without counting its attempt.
   */
  pauseFor(delay: Duration): Promise<void>;
  /** Waits for `n` more tokens (a job that makes several limited calls); rejects if the job is aborted. */
  acquire(n?: number): Promise<void>;
}

export interface ResolvedRateLimit {
  key: string;
  limit: number;
  perMs: number;
  marginMs: number;
}

/** The window after which a used slot is free again. */
export function windowMs(limit: ResolvedRateLimit): number {
  return limit.perMs + limit.marginMs;
}

/**
 * Validates a rate limit and fills in its margin; what RateLimiter takes.
 *
 * @example
 * const tws = resolveRateLimit({ key: 'tws-api', limit: 100, per: '1m' }); // { …, perMs: 60000, marginMs: 1000 }
 * await mq.rateLimits.take(tws);
 */
export function resolveRateLimit(option: RateLimitOption, owner = 'rateLimit'): ResolvedRateLimit {
  if (!option || typeof option.key !== 'string' || option.key.length === 0 || option.key.length > 191) {
    throw new TypeError(`${owner}: key must be a non-empty string of at most 191 characters`);
  }
  if (!Number.isInteger(option.limit) || option.limit < 1 || option.limit > 100_000) {
    throw new TypeError(`${owner}: limit must be an integer from 1 to 100000`);
  }
  const perMs = parseDuration(option.per);
  if (perMs < 1) throw new TypeError(`${owner}: per must be a positive duration`);
  const marginMs = option.margin === undefined ? Math.min(1_000, Math.max(20, Math.round(perMs * 0.02))) : parseDuration(option.margin);
  return { key: option.key, limit: option.limit, perMs, marginMs };
}

export function sameRateLimit(a: ResolvedRateLimit, b: ResolvedRateLimit): boolean {
  return a.key === b.key && a.limit === b.limit && a.perMs === b.perMs && a.marginMs === b.marginMs;
}

export function describeRateLimit(limit: ResolvedRateLimit): string {
  return `'${limit.key}' (${limit.limit} per ${limit.perMs} ms)`;
}
