import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { moveJobToFailed } from '../failed/store.js';
import { withSession, type SessionQuery } from '../db/session.js';
import { integerList, placeholders, reservationsMatchSql } from '../db/sql.js';
import { isConnectionError } from '../db/errors.js';
import { withDatabaseRetry } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';
import { CLAIM_COLUMNS, toClaimedJob, type ClaimDefaults, type ClaimedJob, type Reservation } from './claimed-job.js';
import { completeJobsCountingBatches, removeJobsOfCancelledBatches } from '../batch/counters.js';

/**
 * Every statement a worker sends about the rows it claims, in one place:
 * claim, renew, complete, retry later, defer, fail, and the expired-lease sweep.
 */
export class JobRows {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  private get jobs(): string {
    return `\`${this.tables.jobs}\``;
  }

  /**
   * The claim (DESIGN.md "must"): per queue, one range of the claim index in index order, SKIP
   * LOCKED, then one UPDATE that reserves exactly the rows it locked. Queues are read in the order
   * given, so the first drains before the next is touched; a rate-limited queue gives at most its
   * cap. Each queue's claim commits on its own: `onCommitted` hears of its jobs at once, so a failure
   * in a later queue cannot make the worker forget jobs it already holds. The caller wraps this in a
   * deadlock retry.
   */
  async claim(
    queues: readonly string[],
    limit: number,
    workerId: string,
    defaults: ClaimDefaults & { leaseGraceMs: number; leaseMaxMs: number },
    /** Rate-limited queues: at most this many from each (the tokens the worker holds). */
    caps?: ReadonlyMap<string, number>,
    onCommitted: (jobs: ClaimedJob[]) => void = () => undefined,
  ): Promise<ClaimedJob[]> {
    const reserve = this.reserveClause(workerId, defaults);
    return withSession(this.knex, async (query) => {
      const claimed: ClaimedJob[] = [];
      for (const queue of queues) {
        const take = Math.min(limit - claimed.length, caps?.get(queue) ?? Infinity);
        if (take <= 0) continue;
        // Retried per queue (deadlock, lock wait): a retry never re-claims what an earlier queue committed.
        const rows = await withDatabaseRetry(() => this.claimFromQueue(query, queue, take, reserve));
        const jobs = rows.map((row) => toClaimedJob(row, defaults));
        if (jobs.length > 0) onCommitted(jobs);
        claimed.push(...jobs);
        if (claimed.length >= limit) break;
      }
      return claimed;
    });
  }

  /**
   * START TRANSACTION rides with the SELECT and COMMIT with the UPDATE: two round trips. Measured
   * against one round trip (locked ids into a session variable, UPDATE … JOIN JSON_TABLE, SELECT
   * back): that was 20–30% slower here (3.3–3.8k vs 4.2–4.8k no-op jobs/s, one process ×
   * concurrency 10, MariaDB 10.11): the server's extra work outweighed the saved round trip.
   * The server's default REPEATABLE READ measured cheaper than READ COMMITTED (2.5 vs 4.2 ms of
   * server CPU per 10-job claim cycle), at the cost of a rare deadlock that is retried.
   */
  private async claimFromQueue(query: SessionQuery, queue: string, take: number, reserve: SqlFragment): Promise<Record<string, unknown>[]> {
    const select = this.claimSelect(queue, take);
    const rows = await rollingBackOnError(query, async () => ((await query(`START TRANSACTION; ${select.sql}`, select.bindings)) as unknown[])[1] as Record<string, unknown>[]);
    if (rows.length === 0) {
      await query('COMMIT');
      return [];
    }
    const ids = rows.map((row) => Number(row.id));
    await rollingBackOnError(query, () => this.reserving(() => query(`UPDATE ${this.jobs} SET ${reserve.sql} WHERE id IN (${integerList(ids)}); COMMIT`, reserve.bindings)));
    // The rows were read before the UPDATE: count this run like the UPDATE did.
    for (const row of rows) row.attempts = Number(row.attempts) + 1;
    return rows;
  }

  /** What a reservation writes: owner, attempt, and the job's tries/timeout/lease resolved. */
  private reserveClause(workerId: string, defaults: ClaimDefaults & { leaseGraceMs: number; leaseMaxMs: number }): SqlFragment {
    const maxAttempts = defaultFor(defaults, 'maxAttempts');
    const timeoutMs = defaultFor(defaults, 'timeoutMs');
    return {
      sql: `reserved_at = NOW(3), reserved_by = ?, attempts = attempts + 1,
        max_attempts = COALESCE(max_attempts, ${maxAttempts.sql}), timeout_ms = COALESCE(timeout_ms, ${timeoutMs.sql}),
        lease_until = NOW(3) + INTERVAL (LEAST(COALESCE(timeout_ms, ${timeoutMs.sql}) + ?, ?) * 1000) MICROSECOND`,
      bindings: [workerId, ...maxAttempts.bindings, ...timeoutMs.bindings, ...timeoutMs.bindings, defaults.leaseGraceMs, defaults.leaseMaxMs],
    };
  }

  /**
   * If the connection dies while a reservation commits, the server may have committed it without
   * the reply arriving: the worker then puts back whatever it turns out to hold but is not running.
   */
  private async reserving<T>(statement: () => Promise<T>): Promise<T> {
    try {
      return await statement();
    } catch (error) {
      if (isConnectionError(error)) throw new ClaimReplyLostError(error);
      throw error;
    }
  }

  private claimSelect(queue: string, limit: number): SqlFragment {
    return {
      sql: `SELECT ${CLAIM_COLUMNS.join(', ')} FROM ${this.jobs} FORCE INDEX (\`${this.tables.jobs}_claim_index\`)
       WHERE queue = ? AND reserved_at IS NULL AND available_at <= NOW(3)
       ORDER BY priority, available_at, id LIMIT ? FOR UPDATE SKIP LOCKED`,
      bindings: [queue, limit],
    };
  }

  /**
   * After a lost claim reply: jobs reserved by this worker that it does not hold (at any stage) go
   * back, with the attempt uncounted. Found through the lease index, which holds only reserved rows.
   */
  async putBackUnknownReservations(workerId: string, heldIds: readonly number[]): Promise<number> {
    const [result] = (await this.knex.raw(
      `UPDATE ${this.jobs} FORCE INDEX (\`${this.tables.jobs}_lease_until_index\`)
       SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL, attempts = GREATEST(attempts, 1) - 1,
         deferrals = deferrals + 1, last_error = 'put back: the claim reply was lost'
       WHERE lease_until IS NOT NULL AND reserved_by = ?${heldIds.length ? ` AND id NOT IN (${placeholders(heldIds)})` : ''}`,
      [workerId, ...heldIds],
    )) as [{ affectedRows: number }];
    return result.affectedRows;
  }

  /** The claim's SELECT, exposed so a test can EXPLAIN exactly what workers run. */
  claimSelectSql(queue: string, limit: number): Knex.Raw {
    const select = this.claimSelect(queue, limit);
    return this.knex.raw(select.sql, select.bindings as Knex.RawBinding[]);
  }

  /** A non-locking look: is anything due? Idle workers ask this before opening a claim transaction. */
  async anyDue(queues: readonly string[]): Promise<boolean> {
    const [rows] = (await this.knex.raw(
      `SELECT 1 FROM ${this.jobs} WHERE queue IN (${placeholders(queues)}) AND reserved_at IS NULL AND available_at <= NOW(3) LIMIT 1`,
      [...queues],
    )) as [unknown[]];
    return rows.length > 0;
  }

  /**
   * Extends the leases of the reservations a worker holds, from the database clock. Returns the ids
   * among them that are no longer this worker's (swept after a partition, say): the worker must let
   * go of those without writing anything for them.
   */
  async renewLeases(reservations: readonly Reservation[], workerId: string, leaseGraceMs: number, leaseMaxMs: number): Promise<number[]> {
    if (reservations.length === 0) return [];
    const match = reservationsMatchSql(reservations, workerId);
    const [result] = (await this.knex.raw(
      `UPDATE ${this.jobs} SET lease_until = NOW(3) + INTERVAL (LEAST(timeout_ms + ?, ?) * 1000) MICROSECOND WHERE ${match.sql}`,
      [leaseGraceMs, leaseMaxMs, ...match.bindings] as Knex.RawBinding[],
    )) as [{ affectedRows: number }];
    if (result.affectedRows === reservations.length) return [];
    const [still] = (await this.knex.raw(`SELECT id FROM ${this.jobs} WHERE ${match.sql}`, match.bindings as Knex.RawBinding[])) as [Array<{ id: number }>];
    const ours = new Set(still.map((row) => Number(row.id)));
    return reservations.filter((reservation) => !ours.has(reservation.id)).map((reservation) => reservation.id);
  }

  /**
   * Success: grouped into one DELETE of exactly these reservations. Jobs of batches also count down
   * their batch, once per batch per flush, in the same transaction (src/batch/counters.ts).
   */
  async complete(jobs: ReadonlyArray<Reservation & { batchId: string | null }>, workerId: string): Promise<void> {
    if (jobs.length === 0) return;
    await completeJobsCountingBatches(this.knex, this.tables, jobs, workerId);
  }

  /**
   * A failed attempt with attempts left: same row, same id, due again after the backoff. Not when
   * its batch was cancelled meanwhile: a job waiting in backoff is a waiting job, which a cancel
   * removes, so the worker removes it instead ('batch-cancelled'). 'not-ours': the lease was lost.
   */
  async retryLater(job: Reservation & { batchId: string | null }, workerId: string, delayMs: number, error: string): Promise<'retried' | 'batch-cancelled' | 'not-ours'> {
    const batches = `\`${this.tables.jobBatches}\``;
    const match = reservationsMatchSql([job], workerId);
    const unlessCancelled = job.batchId === null ? '' : ` AND NOT EXISTS (SELECT 1 FROM ${batches} WHERE id = ? AND cancelled_at IS NOT NULL)`;
    const [result] = (await this.knex.raw(
      `UPDATE ${this.jobs} SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL,
         available_at = NOW(3) + INTERVAL ? MICROSECOND, last_error = ?
       WHERE ${match.sql}${unlessCancelled}`,
      [Math.round(delayMs) * 1000, truncate(error), ...match.bindings, ...(job.batchId === null ? [] : [job.batchId])] as Knex.RawBinding[],
    )) as [{ affectedRows: number }];
    if (result.affectedRows > 0) return 'retried';
    if (job.batchId === null) return 'not-ours';
    const [cancelled] = (await this.knex.raw(`SELECT 1 FROM ${batches} WHERE id = ? AND cancelled_at IS NOT NULL`, [job.batchId])) as [unknown[]];
    return cancelled.length > 0 ? 'batch-cancelled' : 'not-ours';
  }

  /** Put back without counting the attempt (graceful stop, rate limit, pause): a deferral. */
  async defer(jobs: readonly Reservation[], workerId: string, delayMs: number, reason: string): Promise<void> {
    if (jobs.length === 0) return;
    const match = reservationsMatchSql(jobs, workerId);
    await this.knex.raw(
      `UPDATE ${this.jobs} SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL,
         attempts = GREATEST(attempts, 1) - 1, deferrals = deferrals + 1,
         available_at = NOW(3) + INTERVAL ? MICROSECOND, last_error = ?
       WHERE ${match.sql}`,
      [Math.round(delayMs) * 1000, truncate(reason), ...match.bindings] as Knex.RawBinding[],
    );
  }

  /**
   * Leaves a note on a reservation the worker keeps (a handler that ignored its timeout runs on):
   * whoever returns the job later (lease sweep, dead-worker release) reports it.
   */
  async noteError(job: Reservation, workerId: string, error: string): Promise<void> {
    const match = reservationsMatchSql([job], workerId);
    await this.knex.raw(`UPDATE ${this.jobs} SET last_error = ? WHERE ${match.sql}`, [truncate(error), ...match.bindings] as Knex.RawBinding[]);
  }

  /** The last attempt failed (or the job can never succeed): to failed_jobs, atomically. */
  async fail(job: Reservation, workerId: string, exception: string): Promise<boolean> {
    return inTransaction(this.knex, (trx) => moveJobToFailed(trx, this.tables, job.id, reservationsMatchSql([job], workerId), exception));
  }

  /**
   * Reservations whose lease ran out (their worker died): back to the queue with the attempt
   * counted, or to failed_jobs when no attempts are left.
   */
  async sweepExpiredLeases(limit = 100): Promise<ReturnedReservations> {
    return inTransaction(this.knex, async (trx) => {
      const [rows] = (await trx.raw(
        `SELECT id, attempts, max_attempts, reserved_by, batch_id, last_error FROM ${this.jobs} FORCE INDEX (\`${this.tables.jobs}_lease_until_index\`)
         WHERE lease_until < NOW(3) ORDER BY lease_until LIMIT ? FOR UPDATE SKIP LOCKED`,
        [limit],
      )) as [ReservationRow[]];
      return this.returnOrFail(trx, rows, 'lease expired: its worker stopped heartbeating', (row) =>
        `lease expired on attempt ${row.attempts} of ${row.max_attempts}: worker ${row.reserved_by} stopped heartbeating (presumed dead)`,
      );
    });
  }

  /**
   * A worker process is known dead (its supervisor saw it exit): its reservations go back at once
   * instead of waiting for their leases, as the lease sweep would do, attempts counted, and a job
   * on its last attempt fails (a job that kills its worker must not kill workers forever). Reads
   * reserved rows through the lease index, so it never scans the queue.
   */
  async releaseDeadWorker(workerId: string, cause: string): Promise<ReturnedReservations> {
    // Find them without locks (a locking read would lock every reserved row it passes), then lock just those.
    const [found] = (await this.knex.raw(
      `SELECT id FROM ${this.jobs} FORCE INDEX (\`${this.tables.jobs}_lease_until_index\`) WHERE lease_until IS NOT NULL AND reserved_by = ?`,
      [workerId],
    )) as [Array<{ id: number }>];
    if (found.length === 0) return { released: 0, failed: 0, removed: 0 };
    const ids = found.map((row) => row.id);
    return inTransaction(this.knex, async (trx) => {
      const [rows] = (await trx.raw(
        `SELECT id, attempts, max_attempts, reserved_by, batch_id, last_error FROM ${this.jobs} WHERE id IN (${placeholders(ids)}) AND reserved_by = ? FOR UPDATE`,
        [...ids, workerId],
      )) as [ReservationRow[]];
      return this.returnOrFail(trx, rows, `worker process died while running this job: ${cause}`, (row) =>
        `worker process died on attempt ${row.attempts} of ${row.max_attempts}: ${cause}`,
      );
    });
  }

  /**
   * Reservations of a dead worker: retryable ones back to the queue (or, in a cancelled batch,
   * removed and counted done), exhausted ones to failed_jobs.
   */
  private async returnOrFail(
    trx: Knex.Transaction,
    rows: ReservationRow[],
    releasedBecause: string,
    failedBecause: (row: ReservationRow) => string,
  ): Promise<ReturnedReservations> {
    const exhausted = rows.filter((row) => row.max_attempts != null && row.attempts >= row.max_attempts);
    const removed = await removeJobsOfCancelledBatches(
      trx,
      this.tables,
      rows.filter((row) => !exhausted.includes(row)).map((row) => ({ id: Number(row.id), batchId: row.batch_id })),
    );
    const retryable = rows.filter((row) => !exhausted.includes(row) && !removed.includes(Number(row.id)));
    if (retryable.length > 0) {
      const ids = retryable.map((row) => row.id);
      await trx.raw(
        `UPDATE ${this.jobs} SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL, available_at = NOW(3), last_error = ?
         WHERE id IN (${placeholders(ids)})`,
        [releasedBecause, ...ids],
      );
    }
    for (const row of exhausted) {
      const because = row.last_error ? `${failedBecause(row)}; its last error: ${row.last_error}` : failedBecause(row);
      await moveJobToFailed(trx, this.tables, row.id, { sql: 'reserved_by = ?', bindings: [row.reserved_by] }, because);
    }
    return { released: retryable.length, failed: exhausted.length, removed: removed.length };
  }
}

/** What a lease sweep or a dead worker's release did with the reservations it found. */
export interface ReturnedReservations {
  /** Back in the queue, attempt counted. */
  released: number;
  /** To failed_jobs: no attempts left. */
  failed: number;
  /** Jobs of cancelled batches: removed and counted done instead of queued again. */
  removed: number;
}

interface ReservationRow {
  id: number;
  attempts: number;
  max_attempts: number | null;
  reserved_by: string;
  batch_id: string | null;
  last_error: string | null;
}

/**
 * The value the claim writes into a row that has none: the worker's default, or, for jobs whose
 * definition sets its own, a CASE over the job name (so the sweep and later claims see it too).
 */
function defaultFor(defaults: ClaimDefaults, key: 'maxAttempts' | 'timeoutMs'): { sql: string; bindings: unknown[] } {
  const own = [...(defaults.byName ?? [])].filter(([, job]) => job[key] !== undefined);
  if (own.length === 0) return { sql: '?', bindings: [defaults[key]] };
  return {
    sql: `CASE name ${own.map(() => 'WHEN ? THEN ?').join(' ')} ELSE ? END`,
    bindings: [...own.flatMap(([name, job]) => [name, job[key]]), defaults[key]],
  };
}


/** A failed claim statement leaves no transaction open on the session, so the next try starts clean. */
async function rollingBackOnError<T>(query: SessionQuery, statement: () => Promise<T>): Promise<T> {
  try {
    return await statement();
  } catch (error) {
    await query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

function truncate(text: string, max = 60_000): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** The claim's reservation may or may not have committed (its connection died meanwhile). */
export class ClaimReplyLostError extends Error {
  constructor(cause: unknown) {
    super(`lost the reply to a claim: ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = 'ClaimReplyLostError';
  }
}

interface SqlFragment {
  sql: string;
  bindings: unknown[];
}

