import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { parseJsonColumn } from '../db/json.js';
import { withDatabaseRetry } from '../db/retry.js';
import { MailqError } from '../errors.js';
import { recordBatchFailure, reopenFailedBatchJobs } from '../batch/counters.js';
import { placeholders } from '../db/sql.js';

export interface FailedJob {
  id: number;
  uuid: string;
  queue: string;
  name: string;
  payload: unknown;
  attempts: number;
  maxAttempts: number | null;
  /** First line of the exception: the reason. */
  reason: string;
  exception: string;
  batchId: string | null;
  createdAt: Date | null;
  failedAt: Date;
}

export interface ListFailedOptions {
  queue?: string;
  limit?: number;
  /** Newest first; page with `beforeId` (the smallest id of the previous page). */
  beforeId?: number;
}

export interface RetryFailedResult {
  retried: number;
  /** Requested ids that were not in failed_jobs. */
  missing: number[];
}

type Ids = number[] | 'all';

/** Columns copied between `jobs` and `failed_jobs`, so a retried job keeps its identity and options. */
const CARRIED_COLUMNS = ['uuid', 'queue', 'name', 'payload', 'max_attempts', 'backoff', 'timeout_ms', 'priority', 'batch_id', 'created_at']
  .map((column) => `\`${column}\``)
  .join(', ');
const RETRY_CHUNK = 1000;

/** The failed-job store: what `mailq failed | retry | forget | flush` operate on. */
export class FailedJobs {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  async list(options: ListFailedOptions = {}): Promise<FailedJob[]> {
    const query = this.knex(this.tables.failedJobs).select('*').orderBy('id', 'desc').limit(options.limit ?? 100);
    if (options.queue) query.where('queue', options.queue);
    if (options.beforeId) query.where('id', '<', options.beforeId);
    return (await query).map(toFailedJob);
  }

  async show(id: number): Promise<FailedJob> {
    const row = await this.knex(this.tables.failedJobs).where({ id }).first();
    if (!row) throw new MailqError(`no failed job with id ${id}`);
    return toFailedJob(row);
  }

  async count(queue?: string): Promise<number> {
    const query = this.knex(this.tables.failedJobs).count({ count: '*' });
    if (queue) query.where('queue', queue);
    const [row] = await query;
    return Number(row?.count ?? 0);
  }

  /**
   * Moves failed jobs back into `jobs` with their attempts reset. Each chunk is one transaction
   * that inserts and deletes the same locked rows: a job is never in both tables, never in neither.
   */
  async retry(ids: Ids, options: { queue?: string } = {}): Promise<RetryFailedResult> {
    if (ids === 'all') {
      let retried = 0;
      for (;;) {
        const chunk = await this.selectIds(options.queue, RETRY_CHUNK);
        if (chunk.length === 0) return { retried, missing: [] };
        retried += (await this.moveBack(chunk)).length;
      }
    }
    // Missing means "not moved by this call": never a failed job, or moved by a concurrent retry.
    const moved = new Set<number>();
    for (let start = 0; start < ids.length; start += RETRY_CHUNK) {
      const chunk = ids.slice(start, start + RETRY_CHUNK);
      const existing = await this.selectIds(options.queue, RETRY_CHUNK, chunk);
      for (const id of await this.moveBack(existing)) moved.add(id);
    }
    return { retried: moved.size, missing: ids.filter((id) => !moved.has(id)) };
  }

  /** Deletes failed jobs by id; returns how many existed. */
  async forget(ids: number[]): Promise<number> {
    if (ids.length === 0) return 0;
    return this.knex(this.tables.failedJobs).whereIn('id', ids).delete();
  }

  /** Deletes all failed jobs, or those that failed more than `hours` ago. */
  async flush(options: { hours?: number; queue?: string } = {}): Promise<number> {
    const query = this.knex(this.tables.failedJobs);
    if (options.queue) query.where('queue', options.queue);
    if (options.hours !== undefined) query.whereRaw('failed_at < NOW(3) - INTERVAL ? SECOND', [Math.round(options.hours * 3600)]);
    return query.delete();
  }

  private async selectIds(queue: string | undefined, limit: number, among?: number[]): Promise<number[]> {
    const query = this.knex(this.tables.failedJobs).select('id').orderBy('id').limit(limit);
    if (queue) query.where('queue', queue);
    if (among) query.whereIn('id', among);
    return (await query).map((row: { id: number | string }) => Number(row.id));
  }

  /** Moves the rows it can lock and returns their ids (those a concurrent retry moved first are gone). */
  private async moveBack(ids: number[]): Promise<number[]> {
    if (ids.length === 0) return [];
    return withDatabaseRetry(() =>
      this.knex.transaction(async (trx) => {
        const locked = (await trx(this.tables.failedJobs).select('id').whereIn('id', ids).forUpdate()).map((row: { id: number | string }) => Number(row.id));
        if (locked.length === 0) return [];
        await reopenFailedBatchJobs(trx, this.tables, locked);
        await trx.raw(
          `INSERT INTO \`${this.tables.jobs}\` (${CARRIED_COLUMNS}, attempts, deferrals, available_at)
           SELECT ${CARRIED_COLUMNS}, 0, 0, NOW(3) FROM \`${this.tables.failedJobs}\` WHERE id IN (${placeholders(locked)}) ORDER BY id`,
          locked,
        );
        await trx(this.tables.failedJobs).whereIn('id', locked).delete();
        return locked;
      }),
    );
  }
}

/**
 * Moves one reserved job to failed_jobs in a transaction (used by workers and the lease sweep).
 * Guarded by `reserved_by` so a worker whose lease was taken over cannot fail another's attempt.
 * Returns false when the row was no longer ours.
 */
export async function moveJobToFailed(trx: Knex.Transaction, tables: TableNames, jobId: number, reservedBy: string, exception: string): Promise<boolean> {
  const [result] = (await trx.raw(
    `INSERT INTO \`${tables.failedJobs}\` (${CARRIED_COLUMNS}, attempts, deferrals, exception, failed_at)
     SELECT ${CARRIED_COLUMNS}, attempts, deferrals, ?, NOW(3) FROM \`${tables.jobs}\` WHERE id = ? AND reserved_by = ?`,
    [exception, jobId, reservedBy],
  )) as [{ affectedRows: number }];
  if (result.affectedRows === 0) return false;
  await recordBatchFailure(trx, tables, jobId);
  await trx(tables.jobs).where({ id: jobId }).delete();
  return true;
}

function toFailedJob(row: Record<string, unknown>): FailedJob {
  const exception = String(row.exception ?? '');
  return {
    id: Number(row.id),
    uuid: String(row.uuid),
    queue: String(row.queue),
    name: String(row.name),
    payload: parseJsonColumn(row.payload),
    attempts: Number(row.attempts),
    maxAttempts: row.max_attempts === null ? null : Number(row.max_attempts),
    reason: exception.split('\n', 1)[0] ?? '',
    exception,
    batchId: (row.batch_id as string | null) ?? null,
    createdAt: (row.created_at as Date | null) ?? null,
    failedAt: row.failed_at as Date,
  };
}
