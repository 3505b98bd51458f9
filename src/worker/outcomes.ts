import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { backoffDelayMs, type BackoffPlan } from '../backoff.js';
import { withDatabaseRetry } from '../db/retry.js';
import { describeError } from './attempt.js';
import { CompletionBuffer } from './completions.js';
import type { WorkerEvents, WorkerStats } from './events.js';
import type { HeldJob, HeldSet } from './held-set.js';
import type { JobRows } from './job-rows.js';

export interface OutcomeOptions {
  workerId: string;
  backoff: BackoffPlan;
  /** How long finish statements keep retrying while the database is unreachable. */
  reconnectForMs: number;
  /** How long a finished job waits for others to share its DELETE. */
  completionWindowMs?: number;
}

/**
 * Writes how each held job ended, and only then lets it leave the held set: completions grouped
 * into one DELETE per flush, retries, deferrals, failures and put-backs one statement each. Every
 * statement matches the job's reservation. A write whose reservation the worker let go of meanwhile
 * (lease lost) stops retrying: another worker may own the job now.
 */
export class OutcomeRecorder {
  private readonly completions: CompletionBuffer<HeldJob>;
  private readonly writes = new Set<Promise<unknown>>();

  constructor(
    private readonly rows: JobRows,
    private readonly held: HeldSet,
    private readonly events: EventEmitter<WorkerEvents>,
    private readonly stats: WorkerStats,
    private readonly logger: Logger,
    private readonly options: OutcomeOptions,
  ) {
    this.completions = new CompletionBuffer<HeldJob>(
      (entries) => this.completeNow(entries),
      (error, entries) => this.logger.error({ err: error, jobIds: entries.map((entry) => entry.job.id) }, 'could not delete completed jobs; they will run again when their leases expire'),
      500,
      options.completionWindowMs,
    );
  }

  completed(entry: HeldJob, elapsedMs: number): void {
    this.held.move(entry, 'recording');
    this.completions.add(entry);
    this.stats.completed++;
    this.logger.debug({ jobId: entry.job.id, job: entry.job.name, ms: elapsedMs }, 'job completed');
    this.events.emit('job:completed', entry.job, elapsedMs);
  }

  /** A failed attempt: retried after its backoff while attempts are left, else moved to failed_jobs. */
  failed(entry: HeldJob, error: Error, permanent: boolean): Promise<void> {
    const { job } = entry;
    if (!permanent && job.attempt < job.maxAttempts) return this.retryLater(entry, error);
    return this.fail(entry, error);
  }

  deferred(entry: HeldJob, delayMs: number, reason: string): Promise<void> {
    return this.record([entry], 'defer', () => this.rows.defer([entry.job], this.options.workerId, delayMs, reason)).then(() => {
      this.stats.deferred++;
      this.events.emit('job:deferred', entry.job, delayMs, reason);
    });
  }

  /** A note on a job that stays reserved (see JobRows.noteError); best effort, the job stays held. */
  async note(entry: HeldJob, error: string): Promise<void> {
    await withDatabaseRetry(() => this.rows.noteError(entry.job, this.options.workerId, error)).catch((failure: unknown) =>
      this.logger.warn({ err: failure, jobId: entry.job.id }, 'could not note the error on a job that stays reserved'),
    );
  }

  /** Back to the queue now, attempt not counted: the job did not run (or was stopped by us). */
  putBack(entries: readonly HeldJob[], reason: string, delayMs = 0): Promise<void> {
    if (entries.length === 0) return Promise.resolve();
    return this.record(entries, 'put back', () => this.rows.defer(entries.map((entry) => entry.job), this.options.workerId, delayMs, reason));
  }

  /**
   * After a lost claim reply: whatever this worker has reserved but does not hold goes back, attempt
   * not counted. The held ids are read at each try, so a retry never puts back a job held since.
   */
  async undoUnknownReservations(): Promise<void> {
    const undone = await withDatabaseRetry(() => this.rows.putBackUnknownReservations(this.options.workerId, this.held.ids()), { reconnectForMs: this.options.reconnectForMs });
    if (undone > 0) this.logger.warn({ undone }, 'a claim reply was lost; put back the jobs it had reserved');
  }

  /** Resolves when every outcome handed over so far is written (or given up). */
  async settled(): Promise<void> {
    await this.completions.flush();
    while (this.writes.size > 0) await Promise.allSettled([...this.writes]);
  }

  private async retryLater(entry: HeldJob, error: Error): Promise<void> {
    const { job } = entry;
    const delayMs = backoffDelayMs(job.backoff ?? this.options.backoff, job.attempt);
    const result: { retried?: Awaited<ReturnType<JobRows['retryLater']>> } = {};
    await this.record([entry], 'retry', async () => {
      result.retried = await this.rows.retryLater(job, this.options.workerId, delayMs, describeError(error));
      // Removed and counted done instead, as the cancel did with the batch's other waiting jobs.
      if (result.retried === 'batch-cancelled') await this.rows.complete([job], this.options.workerId);
    });
    if (result.retried === 'batch-cancelled') {
      this.logger.warn({ jobId: job.id, job: job.name, batchId: job.batchId, error: error.message }, 'job failed; not retried: its batch was cancelled');
      return;
    }
    if (result.retried !== 'retried') {
      if (result.retried === 'not-ours') this.logger.warn({ jobId: job.id, job: job.name }, 'job failed, but its reservation is no longer ours: another worker has it now');
      return;
    }
    this.stats.retried++;
    this.logger.warn({ jobId: job.id, job: job.name, attempt: job.attempt, of: job.maxAttempts, delayMs, error: error.message }, 'job failed; will retry');
    this.events.emit('job:retrying', job, error, delayMs);
  }

  private async fail(entry: HeldJob, error: Error): Promise<void> {
    const { job } = entry;
    const result: { moved?: boolean } = {};
    await this.record([entry], 'fail', async () => {
      result.moved = await this.rows.fail(job, this.options.workerId, describeError(error));
    });
    if (!result.moved) {
      if (result.moved === false) this.logger.warn({ jobId: job.id, job: job.name }, 'job failed, but its reservation is no longer ours: another worker has it now');
      return;
    }
    this.stats.failed++;
    this.logger.error({ jobId: job.id, job: job.name, attempt: job.attempt, error: error.message }, 'job failed');
    this.events.emit('job:failed', job, error);
  }

  private completeNow(entries: HeldJob[]): Promise<void> {
    const mine = entries.filter((entry) => this.held.holds(entry.job));
    return this.record(mine, 'complete', () => this.rows.complete(mine.map((entry) => entry.job), this.options.workerId));
  }

  /**
   * Runs one finishing statement for `entries` (retried through deadlocks and outages, up to
   * reconnectFor), then lets them leave the held set whatever happened: if it never landed, their
   * leases bring them back. Gives up early once the worker no longer holds any of them.
   */
  private record(entries: readonly HeldJob[], what: string, statement: () => Promise<unknown>): Promise<void> {
    if (entries.length === 0) return Promise.resolve();
    for (const entry of entries) this.held.move(entry, 'recording');
    const stillHeld = () => entries.some((entry) => this.held.holds(entry.job));
    const write: Promise<void> = withDatabaseRetry(statement, {
      reconnectForMs: this.options.reconnectForMs,
      shouldRetry: stillHeld,
      onRetry: (error, attempt) => {
        if (attempt === 1 || attempt % 10 === 0) this.logger.warn({ err: error, attempt }, `retrying ${what}`);
      },
    })
      .then(
        () => undefined,
        (error: unknown) => {
        if (stillHeld()) this.logger.error({ err: error, jobIds: entries.map((entry) => entry.job.id) }, `could not ${what}; the lease will return the job`);
        },
      )
      .finally(() => {
        for (const entry of entries) this.held.release(entry);
        this.writes.delete(write);
      });
    this.writes.add(write);
    return write;
  }
}
