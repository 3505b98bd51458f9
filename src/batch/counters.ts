import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { parseJsonColumn } from '../db/json.js';
import { withSession } from '../db/session.js';
import { placeholders, reservationsMatchSql } from '../db/sql.js';
import { insertJobRowsSql } from '../queue/insert.js';
import { newJobRow } from '../queue/rows.js';
import { withSummary, type BatchSummary, type StoredCallbacks } from './batch.js';

/**
 * The statements that keep `job_batches` counters true, run inside the transactions that finish jobs.
 * Counting is aggregated: a worker's completion flush (already one DELETE for many jobs) decrements
 * each batch once by its number of jobs in the flush, so workers never queue on a batch row per job.
 * The decrement counts rows the DELETE really removed, so a job that ran twice counts once.
 */

/** Sends SQL (possibly several statements) on the transaction's connection and returns mysql2's results. */
export type Exec = (sql: string, bindings?: unknown[]) => Promise<unknown>;

export function execOn(trx: Knex.Transaction): Exec {
  return async (sql, bindings = []) => ((await trx.raw(sql, bindings as Knex.RawBinding[])) as [unknown])[0];
}

const FINISH_COLUMNS = 'id, name, total_jobs, failed_jobs, failed_job_ids, callbacks, cancelled_at';

type FinishableRow = { id: string; name: string; total_jobs: number; failed_jobs: number; failed_job_ids: unknown; callbacks: unknown; cancelled_at: Date | null };

function selectFinishableSql(tables: TableNames, batchIds: readonly string[]): string {
  return `SELECT ${FINISH_COLUMNS} FROM \`${tables.jobBatches}\`
    WHERE id IN (${placeholders(batchIds)}) AND pending_jobs <= 0 AND finished_at IS NULL ORDER BY id FOR UPDATE`;
}

/** A completed job as the worker holds it: its reservation (src/worker/claimed-job.ts) and its batch. */
export interface CompletedReservation {
  id: number;
  attempt: number;
  deferrals: number;
  batchId: string | null;
}

/**
 * Completed jobs: one transaction deletes them (jobs of no batch in one DELETE, each batch's jobs in
 * one DELETE whose row count is that batch's decrement), then finishes any batch that reached zero.
 * Each DELETE matches the worker's reservations exactly, so a late flush never removes a row that
 * another claim holds now. Two round trips, three when a batch finishes; one without batches.
 */
export async function completeJobsCountingBatches(knex: Knex, tables: TableNames, jobs: readonly CompletedReservation[], workerId: string): Promise<void> {
  const plain = jobs.filter((job) => !job.batchId);
  const byBatch = new Map<string, CompletedReservation[]>();
  for (const job of jobs) if (job.batchId) byBatch.set(job.batchId, [...(byBatch.get(job.batchId) ?? []), job]);
  // Batch rows locked in one order by every worker, so two flushes never wait on each other crosswise.
  const batchIds = [...byBatch.keys()].sort();
  const deleteSql = (reservations: CompletedReservation[]) => {
    const match = reservationsMatchSql(reservations, workerId);
    return { sql: `DELETE FROM \`${tables.jobs}\` WHERE ${match.sql}`, bindings: match.bindings };
  };
  if (batchIds.length === 0) {
    const only = deleteSql(plain);
    // On the session itself: mysql2 formats the bindings once (knex.raw would scan them first too).
    await withSession(knex, (query) => query(only.sql, only.bindings));
    return;
  }
  const statements = ['START TRANSACTION'];
  const bindings: unknown[] = [];
  if (plain.length > 0) {
    const statement = deleteSql(plain);
    statements.push(statement.sql);
    bindings.push(...statement.bindings);
  }
  for (const batchId of batchIds) {
    const statement = deleteSql(byBatch.get(batchId)!);
    statements.push(statement.sql, 'SET @mailq_done = ROW_COUNT()', `UPDATE \`${tables.jobBatches}\` SET pending_jobs = pending_jobs - @mailq_done WHERE id = ? AND finished_at IS NULL AND @mailq_done > 0`);
    bindings.push(...statement.bindings, batchId);
  }
  statements.push(selectFinishableSql(tables, batchIds));
  bindings.push(...batchIds);
  await withSession(knex, async (query) => {
    const results = (await query(statements.join(';\n'), bindings)) as unknown[];
    const finishable = results[results.length - 1] as FinishableRow[];
    if (finishable.length > 0) await finishBatchRows(query, tables, finishable);
    await query('COMMIT');
  });
}

/**
 * Inside the transaction that moves a job to failed_jobs (worker or lease sweep): counts the failure
 * in its batch and finishes the batch if that was its last job. One primary-key read for a job of no batch.
 */
export async function recordBatchFailure(trx: Knex.Transaction, tables: TableNames, jobId: number): Promise<void> {
  const exec = execOn(trx);
  const [row] = (await exec(`SELECT batch_id, uuid FROM \`${tables.jobs}\` WHERE id = ?`, [jobId])) as Array<{ batch_id: string | null; uuid: string }>;
  if (!row?.batch_id) return;
  await exec(
    `UPDATE \`${tables.jobBatches}\` SET pending_jobs = pending_jobs - 1, failed_jobs = failed_jobs + 1,
       failed_job_ids = JSON_ARRAY_APPEND(failed_job_ids, '$', ?) WHERE id = ? AND finished_at IS NULL`,
    [row.uuid, row.batch_id],
  );
  await finishBatches(exec, tables, [row.batch_id]);
}

/**
 * Failed jobs going back to the queue (`mailq retry`): they count as pending again in their batch,
 * unless it has finished (its callbacks have run; later outcomes no longer change it).
 */
export async function reopenFailedBatchJobs(trx: Knex.Transaction, tables: TableNames, failedIds: readonly number[]): Promise<void> {
  if (failedIds.length === 0) return;
  const exec = execOn(trx);
  const rows = (await exec(
    `SELECT batch_id, uuid FROM \`${tables.failedJobs}\` WHERE id IN (${placeholders(failedIds)}) AND batch_id IS NOT NULL`,
    [...failedIds],
  )) as Array<{ batch_id: string; uuid: string }>;
  const byBatch = new Map<string, string[]>();
  for (const row of rows) byBatch.set(row.batch_id, [...(byBatch.get(row.batch_id) ?? []), row.uuid]);
  for (const batchId of [...byBatch.keys()].sort()) {
    const uuids = new Set(byBatch.get(batchId));
    const [batch] = (await exec(`SELECT failed_job_ids FROM \`${tables.jobBatches}\` WHERE id = ? AND finished_at IS NULL FOR UPDATE`, [batchId])) as Array<{ failed_job_ids: unknown }>;
    if (!batch) continue;
    const remaining = parseJsonColumn<string[]>(batch.failed_job_ids).filter((uuid) => !uuids.has(uuid));
    await exec(`UPDATE \`${tables.jobBatches}\` SET pending_jobs = pending_jobs + ?, failed_jobs = failed_jobs - ?, failed_job_ids = ? WHERE id = ?`, [
      uuids.size,
      uuids.size,
      JSON.stringify(remaining),
      batchId,
    ]);
  }
}

/**
 * Reservations of a dead worker that would go back to the queue, but whose batch was cancelled:
 * removed instead and counted done, as the cancel did with the batch's waiting jobs. In the caller's
 * transaction, which already holds the job rows; batch rows are then locked in id order, as everywhere.
 * Returns the ids removed.
 */
export async function removeJobsOfCancelledBatches(trx: Knex.Transaction, tables: TableNames, jobs: ReadonlyArray<{ id: number; batchId: string | null }>): Promise<number[]> {
  const batchIds = [...new Set(jobs.flatMap((job) => (job.batchId ? [job.batchId] : [])))].sort();
  if (batchIds.length === 0) return [];
  const exec = execOn(trx);
  const cancelled = (await exec(
    `SELECT id FROM \`${tables.jobBatches}\` WHERE id IN (${placeholders(batchIds)}) AND cancelled_at IS NOT NULL AND finished_at IS NULL ORDER BY id FOR UPDATE`,
    batchIds,
  )) as Array<{ id: string }>;
  const removed: number[] = [];
  for (const { id: batchId } of cancelled) {
    const ids = jobs.filter((job) => job.batchId === batchId).map((job) => job.id);
    await dropBatchJobs(exec, tables, batchId, { sql: `id IN (${placeholders(ids)})`, bindings: ids });
    removed.push(...ids);
  }
  await finishBatches(exec, tables, cancelled.map((row) => row.id));
  return removed;
}

/**
 * Cancels a batch's waiting jobs (due, delayed, in backoff), all of them or those of one queue: they
 * are deleted and counted done, the batch is marked cancelled and finishes if nothing else is left.
 * Running jobs are not touched. Run it in a READ COMMITTED transaction, so the DELETE locks only
 * the rows it removes. Returns how many jobs it removed.
 */
export async function cancelWaitingJobs(trx: Knex.Transaction, tables: TableNames, batchId: string, options: { queue?: string } = {}): Promise<number> {
  const exec = execOn(trx);
  const waiting = options.queue === undefined ? { sql: 'reserved_at IS NULL', bindings: [] } : { sql: 'reserved_at IS NULL AND queue = ?', bindings: [options.queue] };
  const removed = await dropBatchJobs(exec, tables, batchId, waiting);
  await finishBatches(exec, tables, [batchId]);
  return removed;
}

/** Deletes those of a batch's jobs that match `which`, counts them done in it, and marks it cancelled. */
async function dropBatchJobs(exec: Exec, tables: TableNames, batchId: string, which: { sql: string; bindings: unknown[] }): Promise<number> {
  const deleted = (await exec(`DELETE FROM \`${tables.jobs}\` WHERE batch_id = ? AND ${which.sql}`, [batchId, ...which.bindings])) as { affectedRows: number };
  await exec(
    `UPDATE \`${tables.jobBatches}\` SET cancelled_at = COALESCE(cancelled_at, NOW(3)), pending_jobs = pending_jobs - ?
     WHERE id = ? AND finished_at IS NULL`,
    [deleted.affectedRows, batchId],
  );
  return deleted.affectedRows;
}

/** Finishes those of `batchIds` that have no pending job left: in the caller's transaction, exactly once. */
export async function finishBatches(exec: Exec, tables: TableNames, batchIds: readonly string[]): Promise<string[]> {
  if (batchIds.length === 0) return [];
  const rows = (await exec(selectFinishableSql(tables, batchIds), [...batchIds])) as FinishableRow[];
  return finishBatchRows(exec, tables, rows);
}

/**
 * Flips `finished_at` (guarded by `finished_at IS NULL` under the row lock the caller holds) and
 * inserts the callback jobs in the same transaction: they exist if and only if the flip commits.
 * One statement per call: an empty batch finishes inside an app's transaction, on a connection
 * that need not accept several statements at once.
 */
async function finishBatchRows(exec: Exec, tables: TableNames, rows: FinishableRow[]): Promise<string[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((row) => row.id);
  const callbackRows = rows.flatMap((row) => callbackJobRows(row));
  await exec(`UPDATE \`${tables.jobBatches}\` SET finished_at = UTC_TIMESTAMP(3) WHERE id IN (${placeholders(ids)}) AND finished_at IS NULL`, [...ids]);
  if (callbackRows.length > 0) {
    const insert = insertJobRowsSql(tables.jobs, callbackRows, 0);
    await exec(insert.sql, insert.bindings);
  }
  return ids;
}

function callbackJobRows(row: FinishableRow) {
  const callbacks = row.callbacks == null ? {} : parseJsonColumn<StoredCallbacks>(row.callbacks);
  const failed = Number(row.failed_jobs);
  const cancelled = row.cancelled_at !== null;
  const summary: BatchSummary = {
    id: row.id,
    name: row.name,
    total: Number(row.total_jobs),
    failed,
    failedJobIds: parseJsonColumn<string[]>(row.failed_job_ids ?? '[]'),
    cancelled,
  };
  const due = [failed === 0 && !cancelled ? callbacks.then : undefined, failed > 0 ? callbacks.catch : undefined, callbacks.finally];
  return due.filter((callback) => callback !== undefined).map((callback) => newJobRow({ ...callback.template, batchId: null }, withSummary(callback.payload, summary)));
}
