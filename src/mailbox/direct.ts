import pLimit from 'p-limit';
import type { FailureReason } from './store.js';
import { sleep } from '../sleep.js';
import { MailboxSyncError, type MailboxSync } from './sync.js';

export interface DirectSyncOptions {
  /** Taxpayers synced at once in this process. Default 1: one after another. */
  concurrency?: number;
  /** Attempts per taxpayer (a 429 does not count as one). Default 1. */
  tries?: number;
  /** Pause before another attempt after a transient failure without Retry-After. Default 1 s. */
  retryPauseMs?: number;
  /** Stop starting taxpayers; those running finish their attempt. */
  signal?: AbortSignal;
  /** Awaited before every TWS request: takes a token of the shared TWS rate limit. */
  beforeRequest?: () => Promise<void>;
  onProgress?: (progress: DirectSyncProgress) => void;
}

export interface DirectSyncProgress {
  done: number;
  total: number;
  synced: number;
  failed: number;
}

export interface DirectSyncFailure {
  taxpayerId: number;
  code: string;
  message: string;
}

export interface DirectSyncResult {
  total: number;
  synced: number;
  skipped: number;
  failed: number;
  /** Taxpayers never started because the signal aborted the run. */
  notStarted: number;
  /** Messages read from TWS and stored (new, changed or unchanged). */
  messages: number;
  elapsedMs: number;
  failures: DirectSyncFailure[];
}

/** Waits on consecutive 429s for one taxpayer before giving up on it. */
const MAX_RATE_LIMIT_WAITS = 20;

/**
 * Direct mode: syncs the given taxpayers in this process, without the queue (`mailq sync-mailbox`
 * without --queue). Same per-taxpayer function as the queue job; no backoff schedule, no failed_jobs.
 *
 * @example
 * const ids = await sync.taxpayerIds({ teamIds: [7] });
 * const result = await syncMailboxesDirectly(sync, ids, { concurrency: 4, tries: 3 });
 */
export async function syncMailboxesDirectly(sync: MailboxSync, taxpayerIds: readonly number[], options: DirectSyncOptions = {}): Promise<DirectSyncResult> {
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError('concurrency must be an integer ≥ 1');
  const tries = options.tries ?? 1;
  const startedAt = Date.now();
  const result: DirectSyncResult = { total: taxpayerIds.length, synced: 0, skipped: 0, failed: 0, notStarted: 0, messages: 0, elapsedMs: 0, failures: [] };
  const report = () => options.onProgress?.({ done: result.synced + result.skipped + result.failed, total: result.total, synced: result.synced, failed: result.failed });

  const syncOne = async (taxpayerId: number) => {
    if (options.signal?.aborted) {
      result.notStarted++;
      return;
    }
    const outcome = await syncWithRetries(sync, taxpayerId, tries, options);
    if (outcome.status === 'synced') {
      result.synced++;
      result.messages += outcome.messages;
    } else if (outcome.status === 'skipped') {
      result.skipped++;
    } else {
      result.failed++;
      result.failures.push({ taxpayerId, code: outcome.error.code, message: outcome.error.message });
    }
    report();
  };

  const limit = pLimit(concurrency);
  await Promise.all(taxpayerIds.map((id) => limit(syncOne, id)));
  result.elapsedMs = Date.now() - startedAt;
  return result;
}

type Attempted = { status: 'synced'; messages: number } | { status: 'skipped' } | { status: 'failed'; error: MailboxSyncError };

async function syncWithRetries(sync: MailboxSync, taxpayerId: number, tries: number, options: DirectSyncOptions): Promise<Attempted> {
  let rateLimitWaits = 0;
  for (let attempt = 1; ; ) {
    try {
      await options.beforeRequest?.();
      const outcome = await sync.syncTaxpayer(taxpayerId, { signal: options.signal, finalAttempt: attempt >= tries, beforeNextRequest: options.beforeRequest });
      return outcome.status === 'synced' ? { status: 'synced', messages: outcome.messages } : { status: 'skipped' };
    } catch (error) {
      if (!(error instanceof MailboxSyncError)) throw error;
      const waitForRateLimit = error.rateLimited && rateLimitWaits < MAX_RATE_LIMIT_WAITS;
      const retry = !error.permanent && !error.rateLimited && attempt < tries;
      if (options.signal?.aborted || (!waitForRateLimit && !retry)) return { status: 'failed', error };
      if (waitForRateLimit) rateLimitWaits++;
      else attempt++;
      await sleep(error.retryAfterMs ?? options.retryPauseMs ?? 1_000, options.signal);
    }
  }
}


/** Failures grouped by code, most frequent first (the shape the store reports for the queue path). */
export function groupFailures(failures: readonly DirectSyncFailure[]): FailureReason[] {
  const groups = new Map<string, FailureReason>();
  for (const failure of failures) {
    const group = groups.get(failure.code);
    if (group) group.count++;
    else groups.set(failure.code, { code: failure.code, count: 1, example: failure.message });
  }
  return [...groups.values()].sort((a, b) => b.count - a.count || a.code.localeCompare(b.code));
}
