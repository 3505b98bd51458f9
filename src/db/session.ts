import type { Knex } from 'knex';

/** The slice of a mysql2 callback connection we use for hand-batched statements. */
interface RawConnection {
  query(sql: string, values: unknown[], callback: (error: Error | null, results: unknown) => void): void;
}

export type SessionQuery = (sql: string, values?: unknown[]) => Promise<unknown>;

/**
 * Runs `work` on one pooled connection, outside knex's query builder. The hot path uses it to
 * send several statements in one round trip (`START TRANSACTION; SELECT …`), which knex's
 * transaction API cannot. Any failure rolls back before the connection returns to the pool.
 */
export async function withSession<T>(knex: Knex, work: (query: SessionQuery) => Promise<T>): Promise<T> {
  const client = knex.client as { acquireConnection(): Promise<RawConnection>; releaseConnection(connection: RawConnection): Promise<void> };
  const connection = await client.acquireConnection();
  const query: SessionQuery = (sql, values = []) =>
    new Promise((resolve, reject) => connection.query(sql, values, (error, results) => (error ? reject(error) : resolve(results))));
  try {
    return await work(query);
  } catch (error) {
    await query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    await client.releaseConnection(connection);
  }
}
