import type { Knex } from 'knex';
import { cancelWaitingJobs } from '../batch/counters.js';
import type { TableNames } from '../db/tables.js';
import { withDatabaseRetry } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';

export interface ClearedQueue {
  queue: string;
  /** Waiting jobs removed: due, delayed and in backoff. Running jobs finish their attempt. */
  removed: number;
  /** Batches that lost jobs to the clear: they are cancelled (`finally` runs, `then` never). */
  cancelledBatches: string[];
}

/** One DELETE removes at most this many rows, so clearing a huge queue never holds one huge undo log. */
const CHUNK = 5_000;

/**
 * Removes the waiting jobs of each queue (Laravel's `queue:clear`). Running jobs are left to
 * finish. Jobs of a batch go through the batch's cancel, so its counters stay true and it finishes.
 *
 * @example
 * const [cleared] = await clearQueues(mq.knex, mq.tables, ['mailbox-sync']);
 */
export async function clearQueues(knex: Knex, tables: TableNames, queues: readonly string[]): Promise<ClearedQueue[]> {
  const cleared: ClearedQueue[] = [];
  for (const queue of queues) {
    let removed = await deleteWaitingOutsideBatches(knex, tables, queue);
    const cancelledBatches = await batchesWaitingIn(knex, tables, queue);
    for (const batchId of cancelledBatches) {
      removed += await withDatabaseRetry(() =>
        inTransaction(knex, (trx) => cancelWaitingJobs(trx, tables, batchId, { queue }), { isolationLevel: 'read committed' }),
      );
    }
    cleared.push({ queue, removed, cancelledBatches });
  }
  return cleared;
}

async function deleteWaitingOutsideBatches(knex: Knex, tables: TableNames, queue: string): Promise<number> {
  let removed = 0;
  for (;;) {
    const [result] = (await withDatabaseRetry(() =>
      knex.raw(`DELETE FROM \`${tables.jobs}\` WHERE queue = ? AND reserved_at IS NULL AND batch_id IS NULL LIMIT ${CHUNK}`, [queue]),
    )) as [{ affectedRows: number }];
    removed += result.affectedRows;
    if (result.affectedRows < CHUNK) return removed;
  }
}

async function batchesWaitingIn(knex: Knex, tables: TableNames, queue: string): Promise<string[]> {
  const [rows] = (await knex.raw(
    `SELECT DISTINCT batch_id FROM \`${tables.jobs}\` WHERE queue = ? AND reserved_at IS NULL AND batch_id IS NOT NULL ORDER BY batch_id`,
    [queue],
  )) as [Array<{ batch_id: string }>];
  return rows.map((row) => row.batch_id);
}
