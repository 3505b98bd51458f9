import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { parseJsonColumn } from '../db/json.js';
import { withDatabaseRetry } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';
import { MailqError } from '../errors.js';
import { recordBatchFailure, reopenFailedBatchJobs } from '../batch/counters.js';
import { placeholders } from '../db/sql.js';
import { findOwnKeyedRows, uniqueKeyHolders } from '../queue/insert.js';

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
  /** `<job name>:<key>` for a unique job: a retry brings it back holding the key again. */
  uniqueKey: string | null;
  createdAt: Date | null;
  failedAt: Date;
}

/** Which failed jobs: of one queue, of one batch, or both. */
export interface FailedFilter {
  queue?: string;
  batchId?: string;
}

/** Failed jobs that share a reason (the exception's first line). */
export interface FailureGroup {
  reason: string;
  count: number;
}

export interface ListFailedOptions extends FailedFilter {
  limit?: number;
  /** Newest first; page with `beforeId` (the smallest id of the previous page). */
  beforeId?: number;
}

export interface RetryFailedResult {
  retried: number;
  /** Requested ids that were not in failed_jobs. */
  missing: number[];
  /**
   * Failed jobs not brought back because a pending or running job already holds their unique key:
   * that job does the work, so these leave failed_jobs (failed id → the id of the job holding the key).
   */
  alreadyQueued: Array<{ id: number; heldBy: number }>;
}

type Ids = number[] | 'all';

/** `queue`: only failed jobs of this queue; `batchId`: only those of this batch (Laravel's `queue:retry-batch`). */
export type RetryFailedOptions = FailedFilter;

/** Columns copied between `jobs` and `failed_jobs`, so a retried job keeps its identity, options and unique key. */
const CARRIED_COLUMNS = ['uuid', 'queue', 'name', 'payload', 'max_attempts', 'backoff', 'timeout_ms', 'priority', 'batch_id', 'unique_key', 'created_at']
  .map((column) => `\`${column}\``)
  .join(', ');
/**
 * Failed jobs moved per transaction. Below 1000 on purpose: MariaDB turns an IN list of 1000 values
 * or more into a join over a derived table (in_predicate_conversion_threshold), whose plan scans and
 * locks every row of failed_jobs, so each chunk would stall every worker failing a job meanwhile.
 */
const RETRY_CHUNK = 500;

/** The failed-job store: what `mailq failed | retry | forget | flush` operate on. */
export class FailedJobs {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  async list(options: ListFailedOptions = {}): Promise<FailedJob[]> {
    const query = this.filtered(options).select('*').orderBy('id', 'desc').limit(options.limit ?? 100);
    if (options.beforeId) query.where('id', '<', options.beforeId);
    return (await query).map(toFailedJob);
  }

  async show(id: number): Promise<FailedJob> {
    const row = await this.knex(this.tables.failedJobs).where({ id }).first();
    if (!row) throw new MailqError(`no failed job with id ${id}`);
    return toFailedJob(row);
  }

  /** How many failed jobs there are, of one queue (a string) or matching a filter. */
  async count(filter: string | FailedFilter = {}): Promise<number> {
    const [row] = await this.filtered(typeof filter === 'string' ? { queue: filter } : filter).count({ count: '*' });
    return Number(row?.count ?? 0);
  }

  /**
   * Failed jobs grouped by reason, most frequent first: why the night's batch failed, at a glance.
   * The reason is the exception's first line with every run of 4 or more digits shown as `#`, so
   * "taxpayer 20100000250 not found" and "taxpayer 20100000311 not found" are one group while
   * HTTP statuses (404 vs 403) stay apart.
   *
   * @example
   * const groups = await mq.failed.reasons({ batchId }); // [{ reason: 'TwsError: taxpayer # not found', count: 6 }, …]
   */
  async reasons(filter: FailedFilter = {}, limit = 20): Promise<FailureGroup[]> {
    const rows = (await this.filtered(filter)
      .select(this.knex.raw("REGEXP_REPLACE(SUBSTRING_INDEX(exception, CHAR(10), 1), '[0-9]{4,}', '#') AS reason"))
      .count({ count: '*' })
      .groupBy('reason')
      .orderBy([{ column: 'count', order: 'desc' }, { column: 'reason' }])
      .limit(limit)) as Array<{ reason: string; count: number | string }>;
    return rows.map((row) => ({ reason: String(row.reason ?? ''), count: Number(row.count) }));
  }

  /**
   * Moves failed jobs back into `jobs` with their attempts reset and their unique key kept. Each
   * chunk is one transaction that inserts and deletes the same locked rows: a job is never in both
   * tables, never in neither. A job whose key a pending or running job holds is not inserted twice.
   */
  async retry(ids: Ids, options: RetryFailedOptions = {}): Promise<RetryFailedResult> {
    const result: RetryFailedResult = { retried: 0, missing: [], alreadyQueued: [] };
    const add = (moved: MovedBack) => {
      result.retried += moved.retried.length;
      result.alreadyQueued.push(...moved.alreadyQueued);
    };
    if (ids === 'all') {
      // The list is taken once, when the call starts (as Laravel does): a job that fails again
      // meanwhile gets a new, higher failed id and waits for the next retry, instead of being
      // chased by this one for as long as it keeps failing.
      const newest = await this.newestId(options);
      for (let after = 0; newest !== undefined; ) {
        const chunk = await this.selectIds(options, RETRY_CHUNK, { after, upTo: newest });
        if (chunk.length === 0) break;
        add(await this.moveBack(chunk));
        after = chunk[chunk.length - 1]!;
      }
      return result;
    }
    // Missing means "not moved by this call": never a failed job, or moved by a concurrent retry.
    const moved = new Set<number>();
    for (let start = 0; start < ids.length; start += RETRY_CHUNK) {
      const chunk = ids.slice(start, start + RETRY_CHUNK);
      const outcome = await this.moveBack(await this.selectIds(options, RETRY_CHUNK, { among: chunk }));
      add(outcome);
      for (const id of [...outcome.retried, ...outcome.alreadyQueued.map((entry) => entry.id)]) moved.add(id);
    }
    result.missing = ids.filter((id) => !moved.has(id));
    return result;
  }

  /**
   * Deletes failed jobs by id; returns how many existed. One statement, retried whole on a lock
   * conflict: the count is that of the attempt that committed.
   */
  async forget(ids: number[]): Promise<number> {
    if (ids.length === 0) return 0;
    return withDatabaseRetry(() => this.knex(this.tables.failedJobs).whereIn('id', ids).delete());
  }

  /** Deletes all failed jobs (of a queue, of a batch), or those that failed more than `hours` ago; retried as forget is. */
  async flush(options: FailedFilter & { hours?: number } = {}): Promise<number> {
    return withDatabaseRetry(() => {
      const query = this.filtered(options);
      if (options.hours !== undefined) query.whereRaw('failed_at < NOW(3) - INTERVAL ? SECOND', [Math.round(options.hours * 3600)]);
      return query.delete();
    });
  }

  /** Failed ids in id order: among given ones, or a page of the range (after, upTo]. */
  private async selectIds(filter: FailedFilter, limit: number, range: { among?: number[]; after?: number; upTo?: number }): Promise<number[]> {
    const query = this.filtered(filter).select('id').orderBy('id').limit(limit);
    if (range.among) query.whereIn('id', range.among);
    if (range.after !== undefined) query.where('id', '>', range.after);
    if (range.upTo !== undefined) query.where('id', '<=', range.upTo);
    return (await query).map((row: { id: number | string }) => Number(row.id));
  }

  /** The highest failed id that matches, if any. */
  private async newestId(filter: FailedFilter): Promise<number | undefined> {
    const [row] = (await this.filtered(filter).max({ id: 'id' })) as Array<{ id: number | string | null }>;
    return row?.id == null ? undefined : Number(row.id);
  }

  /** failed_jobs narrowed to a queue and/or a batch: the one place every read and delete filters. */
  private filtered(filter: FailedFilter): Knex.QueryBuilder {
    const query = this.knex(this.tables.failedJobs);
    if (filter.queue) query.where('queue', filter.queue);
    if (filter.batchId) query.where('batch_id', filter.batchId);
    return query;
  }

  /**
   * Moves the rows it can lock (those a concurrent retry moved first are gone). A row whose unique
   * key is held, by a live job or by an older failed row of this same chunk, is skipped by the
   * unique index and leaves failed_jobs as already queued.
   */
  private async moveBack(ids: number[]): Promise<MovedBack> {
    if (ids.length === 0) return { retried: [], alreadyQueued: [] };
    const jobs = `\`${this.tables.jobs}\``;
    return withDatabaseRetry(() =>
      inTransaction(this.knex, async (trx) => {
        const locked: Array<{ id: number | string; uuid: string; unique_key: string | null }> = await trx(this.tables.failedJobs)
          .select('id', 'uuid', 'unique_key')
          .whereIn('id', ids)
          .orderBy('id')
          .forUpdate();
        if (locked.length === 0) return { retried: [], alreadyQueued: [] };
        const lockedIds = locked.map((row) => Number(row.id));
        await trx.raw(
          `INSERT INTO ${jobs} (${CARRIED_COLUMNS}, attempts, deferrals, available_at)
           SELECT ${CARRIED_COLUMNS}, 0, 0, NOW(3) FROM \`${this.tables.failedJobs}\` WHERE id IN (${placeholders(lockedIds)}) ORDER BY id
           ON DUPLICATE KEY UPDATE ${jobs}.id = ${jobs}.id`,
          lockedIds,
        );
        const keys = locked.flatMap((row) => (row.unique_key === null ? [] : [row.unique_key]));
        const holders = await uniqueKeyHolders(trx, this.tables.jobs, keys, await findOwnKeyedRows(trx, this.tables.jobs, locked));
        const outcome: MovedBack = { retried: [], alreadyQueued: [] };
        for (const row of locked) {
          const holder = row.unique_key === null ? undefined : holders.get(row.unique_key);
          if (holder && holder.uuid !== row.uuid) outcome.alreadyQueued.push({ id: Number(row.id), heldBy: holder.id });
          else outcome.retried.push(Number(row.id));
        }
        await reopenFailedBatchJobs(trx, this.tables, outcome.retried);
        await trx(this.tables.failedJobs).whereIn('id', lockedIds).delete();
        return outcome;
      }),
    );
  }
}

/**
 * Moves one reserved job to failed_jobs in a transaction (used by workers and the lease sweep).
 * `reservation` says which reservation of the row this is (a worker's exact one, see
 * reservationsMatchSql, or "held by this worker" for rows the sweep has locked), so a worker whose
 * lease was taken over cannot fail another's attempt. Returns false when the row was no longer so.
 */
export async function moveJobToFailed(trx: Knex.Transaction, tables: TableNames, jobId: number, reservation: { sql: string; bindings: unknown[] }, exception: string): Promise<boolean> {
  const [result] = (await trx.raw(
    `INSERT INTO \`${tables.failedJobs}\` (${CARRIED_COLUMNS}, attempts, deferrals, exception, failed_at)
     SELECT ${CARRIED_COLUMNS}, attempts, deferrals, ?, NOW(3) FROM \`${tables.jobs}\` WHERE id = ? AND ${reservation.sql}`,
    [exception, jobId, ...reservation.bindings] as Knex.RawBinding[],
  )) as [{ affectedRows: number }];
  if (result.affectedRows === 0) return false;
  await recordBatchFailure(trx, tables, jobId);
  await trx(tables.jobs).where({ id: jobId }).delete();
  return true;
}

interface MovedBack {
  retried: number[];
  alreadyQueued: Array<{ id: number; heldBy: number }>;
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
    uniqueKey: (row.unique_key as string | null) ?? null,
    createdAt: (row.created_at as Date | null) ?? null,
    failedAt: row.failed_at as Date,
  };
}
