import type { Knex } from 'knex';

/**
 * `knex.transaction(work)`, except that a failed `work` always rejects the call with its own error.
 *
 * knex answers a failed `work` with a ROLLBACK. When the connection is what failed (killed,
 * server restarted, network cut, dropped as stalled), that ROLLBACK cannot be sent either, and
 * knex rejects with the rollback's error ("ROLLBACK - Can't add new command when connection is in
 * closed state") instead of the one that says why the transaction died. Nothing is lost by the
 * ROLLBACK that could not be sent: the server rolls back the open transaction of a connection
 * that ends, and the pool drops a dead connection instead of handing it out again.
 *
 * A failed COMMIT still rejects with the COMMIT's error: then `work` succeeded, and whether the
 * transaction landed is exactly what that error leaves open.
 *
 * @example
 * const moved = await withDatabaseRetry(() => inTransaction(knex, (trx) => moveRows(trx)));
 */
export async function inTransaction<T>(knex: Knex, work: (trx: Knex.Transaction) => Promise<T>, config?: Knex.TransactionConfig): Promise<T> {
  let failed: { error: unknown } | undefined;
  try {
    return await knex.transaction(async (trx) => {
      try {
        return await work(trx);
      } catch (error) {
        failed = { error };
        throw error;
      }
    }, config);
  } catch (error) {
    throw failed ? failed.error : error;
  }
}
