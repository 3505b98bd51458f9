import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { moveJobToFailed } from '../failed/store.js';
import { withSession } from '../db/session.js';
import { isConnectionError } from '../db/errors.js';
import { CLAIM_COLUMNS, toClaimedJob, type ClaimDefaults, type ClaimedJob } from './claimed-job.js';
import { completeJobsCountingBatches } from '../batch/counters.js';

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
   * The claim (DESIGN.md "must"): one range of the claim index, in index order, SKIP LOCKED, then
   * one UPDATE that reserves what was locked. Queues are read in the order given, so the first
   * queue drains before the next is touched. The caller wraps this in a deadlock retry.
   */
  async claim(
    queues: readonly string[],
    limit: number,
    workerId: string,
    defaults: ClaimDefaults & { leaseGraceMs: number; leaseMaxMs: number },
    /** Rate-limited queues: at most this many from each (the tokens the worker holds). */
    caps?: ReadonlyMap<string, number>,
  ): Promise<ClaimedJob[]> {
    return withSession(this.knex, async (query) => {
      const rows: Record<string, unknown>[] = [];
      let began = false;
      for (const queue of queues) {
        if (rows.length >= limit) break;
        const take = Math.min(limit - rows.length, caps?.get(queue) ?? Infinity);
        if (take <= 0) continue;
        const select = this.claimSelect(queue, take);
        // START TRANSACTION rides with the first SELECT: one round trip instead of two. The server's
        // default REPEATABLE READ measured cheaper here than READ COMMITTED (2.5 vs 4.2 ms of server
        // CPU per 10-job claim cycle on MariaDB 10.11), at the cost of a rare deadlock that is retried.
        const results = began ? await query(select.sql, select.bindings) : ((await query(`START TRANSACTION; ${select.sql}`, select.bindings)) as unknown[])[1];
        began = true;
        rows.push(...(results as Record<string, unknown>[]));
      }
      if (rows.length === 0) {
        await query('COMMIT');
        return [];
      }
      const ids = rows.map((row) => Number(row.id));
      const maxAttempts = defaultFor(defaults, 'maxAttempts');
      const timeoutMs = defaultFor(defaults, 'timeoutMs');
      await this.reserve(ids, () => query(
        `UPDATE ${this.jobs} SET reserved_at = NOW(3), reserved_by = ?, attempts = attempts + 1,
           max_attempts = COALESCE(max_attempts, ${maxAttempts.sql}), timeout_ms = COALESCE(timeout_ms, ${timeoutMs.sql}),
           lease_until = NOW(3) + INTERVAL (LEAST(COALESCE(timeout_ms, ${timeoutMs.sql}) + ?, ?) * 1000) MICROSECOND
         WHERE id IN (${placeholders(ids)}); COMMIT`,
        [workerId, ...maxAttempts.bindings, ...timeoutMs.bindings, ...timeoutMs.bindings, defaults.leaseGraceMs, defaults.leaseMaxMs, ...ids],
      ));
      return rows.map((row) => toClaimedJob(row, defaults));
    });
  }

  /**
   * If the connection dies during `UPDATE …; COMMIT`, the server may have committed a reservation
   * whose reply never arrived: those jobs would sit until their lease expires. Say which ids, so
   * the worker can put back any that turn out to be reserved by it.
   */
  private async reserve(ids: number[], update: () => Promise<unknown>): Promise<void> {
    try {
      await update();
    } catch (error) {
      if (isConnectionError(error)) throw new ClaimReplyLostError(ids, error);
      throw error;
    }
  }

  private claimSelect(queue: string, limit: number): { sql: string; bindings: unknown[] } {
    return {
      sql: `SELECT ${CLAIM_COLUMNS.join(', ')} FROM ${this.jobs} FORCE INDEX (\`${this.tables.jobs}_claim_index\`)
       WHERE queue = ? AND reserved_at IS NULL AND available_at <= NOW(3)
       ORDER BY priority, available_at, id LIMIT ? FOR UPDATE SKIP LOCKED`,
      bindings: [queue, limit],
    };
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

  /** Extends the leases of jobs still running, from the database clock. */
  async renewLeases(ids: number[], workerId: string, leaseGraceMs: number, leaseMaxMs: number): Promise<void> {
    if (ids.length === 0) return;
    await this.knex.raw(
      `UPDATE ${this.jobs} SET lease_until = NOW(3) + INTERVAL (LEAST(timeout_ms + ?, ?) * 1000) MICROSECOND
       WHERE id IN (${placeholders(ids)}) AND reserved_by = ?`,
      [leaseGraceMs, leaseMaxMs, ...ids, workerId],
    );
  }

  /**
   * Success: grouped into one DELETE by primary key. Jobs of batches (pass their batch ids) also
   * count down their batch, once per batch per flush, in the same transaction (src/batch/counters.ts).
   */
  async complete(ids: number[], batchIds?: ReadonlyArray<string | null>): Promise<void> {
    if (ids.length === 0) return;
    if (batchIds?.some((batchId) => batchId !== null)) {
      return completeJobsCountingBatches(this.knex, this.tables, ids.map((id, index) => ({ id, batchId: batchIds[index] ?? null })));
    }
    await this.knex.raw(`DELETE FROM ${this.jobs} WHERE id IN (${placeholders(ids)})`, ids);
  }

  /** A failed attempt with attempts left: same row, same id, due again after the backoff. */
  async retryLater(id: number, workerId: string, delayMs: number, error: string): Promise<boolean> {
    const [result] = (await this.knex.raw(
      `UPDATE ${this.jobs} SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL,
         available_at = NOW(3) + INTERVAL ? MICROSECOND, last_error = ?
       WHERE id = ? AND reserved_by = ?`,
      [Math.round(delayMs) * 1000, truncate(error), id, workerId],
    )) as [{ affectedRows: number }];
    return result.affectedRows > 0;
  }

  /** Put back without counting the attempt (graceful stop, rate limit, pause): a deferral. */
  async defer(ids: number[], workerId: string, delayMs: number, reason: string): Promise<void> {
    if (ids.length === 0) return;
    await this.knex.raw(
      `UPDATE ${this.jobs} SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL,
         attempts = GREATEST(attempts, 1) - 1, deferrals = deferrals + 1,
         available_at = NOW(3) + INTERVAL ? MICROSECOND, last_error = ?
       WHERE id IN (${placeholders(ids)}) AND reserved_by = ?`,
      [Math.round(delayMs) * 1000, truncate(reason), ...ids, workerId],
    );
  }

  /** The last attempt failed (or the job can never succeed): to failed_jobs, atomically. */
  async fail(id: number, workerId: string, exception: string): Promise<boolean> {
    return this.knex.transaction((trx) => moveJobToFailed(trx, this.tables, id, workerId, exception));
  }

  /** Returns every job a worker holds to the queue, e.g. after its process died. Attempts stay counted. */
  async releaseWorker(workerId: string): Promise<number> {
    const [result] = (await this.knex.raw(
      `UPDATE ${this.jobs} SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL, available_at = NOW(3),
         last_error = 'worker stopped while running this job'
       WHERE reserved_by = ?`,
      [workerId],
    )) as [{ affectedRows: number }];
    return result.affectedRows;
  }

  /**
   * Reservations whose lease ran out (their worker died): back to the queue with the attempt
   * counted, or to failed_jobs when no attempts are left.
   */
  async sweepExpiredLeases(limit = 100): Promise<{ released: number; failed: number }> {
    return this.knex.transaction(async (trx) => {
      const [rows] = (await trx.raw(
        `SELECT id, attempts, max_attempts, reserved_by FROM ${this.jobs} FORCE INDEX (\`${this.tables.jobs}_lease_until_index\`)
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
  async releaseDeadWorker(workerId: string, cause: string): Promise<{ released: number; failed: number }> {
    // Find them without locks (a locking read would lock every reserved row it passes), then lock just those.
    const [found] = (await this.knex.raw(
      `SELECT id FROM ${this.jobs} FORCE INDEX (\`${this.tables.jobs}_lease_until_index\`) WHERE lease_until IS NOT NULL AND reserved_by = ?`,
      [workerId],
    )) as [Array<{ id: number }>];
    if (found.length === 0) return { released: 0, failed: 0 };
    const ids = found.map((row) => row.id);
    return this.knex.transaction(async (trx) => {
      const [rows] = (await trx.raw(
        `SELECT id, attempts, max_attempts, reserved_by FROM ${this.jobs} WHERE id IN (${placeholders(ids)}) AND reserved_by = ? FOR UPDATE`,
        [...ids, workerId],
      )) as [ReservationRow[]];
      return this.returnOrFail(trx, rows, `worker process died while running this job: ${cause}`, (row) =>
        `worker process died on attempt ${row.attempts} of ${row.max_attempts}: ${cause}`,
      );
    });
  }

  /** Reservations of a dead worker: retryable ones back to the queue, exhausted ones to failed_jobs. */
  private async returnOrFail(
    trx: Knex.Transaction,
    rows: ReservationRow[],
    releasedBecause: string,
    failedBecause: (row: ReservationRow) => string,
  ): Promise<{ released: number; failed: number }> {
    const exhausted = rows.filter((row) => row.max_attempts != null && row.attempts >= row.max_attempts);
    const retryable = rows.filter((row) => !exhausted.includes(row));
    if (retryable.length > 0) {
      const ids = retryable.map((row) => row.id);
      await trx.raw(
        `UPDATE ${this.jobs} SET reserved_at = NULL, reserved_by = NULL, lease_until = NULL, available_at = NOW(3), last_error = ?
         WHERE id IN (${placeholders(ids)})`,
        [releasedBecause, ...ids],
      );
    }
    for (const row of exhausted) await moveJobToFailed(trx, this.tables, row.id, row.reserved_by, failedBecause(row));
    return { released: retryable.length, failed: exhausted.length };
  }
}

interface ReservationRow {
  id: number;
  attempts: number;
  max_attempts: number | null;
  reserved_by: string;
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

function placeholders(values: readonly unknown[]): string {
  return values.map(() => '?').join(', ');
}

function truncate(text: string, max = 60_000): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** The claim's reservation may or may not have committed: `jobIds` are the rows it tried to reserve. */
export class ClaimReplyLostError extends Error {
  constructor(
    readonly jobIds: number[],
    cause: unknown,
  ) {
    super(`lost the reply to a claim of ${jobIds.length} job(s): ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = 'ClaimReplyLostError';
  }
}
