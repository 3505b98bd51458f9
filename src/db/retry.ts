import { isConnectionError, isLockConflict } from './errors.js';
import { sleep } from '../sleep.js';

export interface RetryOptions {
  /** How many times a conflict (deadlock, lock-wait timeout, a cluster's commit conflict: see isLockConflict) is retried before it surfaces. */
  lockRetries?: number;
  /** How long connection failures are retried (server restart, killed connection); 0 = not at all. */
  reconnectForMs?: number;
  onRetry?: (error: unknown, attempt: number) => void;
  /** Asked before each retry: false ends the retrying (the error surfaces), e.g. once the work no longer matters. */
  shouldRetry?: () => boolean;
}


/**
 * Runs a statement (or a whole transaction) again after a deadlock or lock-wait timeout, and,
 * when asked, after the connection drops. Deadlocks between a batched DELETE and another worker's
 * claim are expected now and then; they must never become job failures.
 */
export async function withDatabaseRetry<T>(operation: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const lockRetries = options.lockRetries ?? 20;
  const reconnectForMs = options.reconnectForMs ?? 0;
  const startedAt = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      const retryLock = isLockConflict(error) && attempt <= lockRetries;
      const retryConnection = !retryLock && isConnectionError(error) && Date.now() - startedAt < reconnectForMs;
      if ((!retryLock && !retryConnection) || options.shouldRetry?.() === false) throw error;
      options.onRetry?.(error, attempt);
      const baseMs = retryLock ? 5 : 250;
      await sleep(Math.min(retryLock ? 200 : 2_000, baseMs * 2 ** Math.min(attempt, 6)) * (0.5 + Math.random() / 2));
    }
  }
}
