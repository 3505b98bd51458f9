import { randomUUID } from 'node:crypto';
import type { Pool, PoolConnection, RowDataPacket } from 'mysql2/promise';

/**
 * What a careful developer would write by hand with plain mysql2, to measure mailq against.
 * Both use mailq's own table and index, so only the technique differs.
 */

const INSERT_COLUMNS = ['uuid', 'queue', 'name', 'payload', 'max_attempts', 'backoff', 'timeout_ms', 'priority', 'batch_id', 'unique_key'] as const;

/** (b) The same rows as dispatchMany writes, as multi-row INSERTs of `chunkSize` rows in one transaction. */
export async function plainInsert(pool: Pool, table: string, queue: string, name: string, payloads: readonly unknown[], chunkSize = 1_000): Promise<void> {
  const columns = [...INSERT_COLUMNS, 'available_at'].map((column) => `\`${column}\``).join(', ');
  const tuple = `(${INSERT_COLUMNS.map(() => '?').join(', ')}, NOW(3))`;
  const connection = await pool.getConnection();
  try {
    await connection.query('START TRANSACTION');
    for (let start = 0; start < payloads.length; start += chunkSize) {
      const chunk = payloads.slice(start, start + chunkSize);
      const values: unknown[] = [];
      for (const payload of chunk) values.push(randomUUID(), queue, name, JSON.stringify(payload), null, null, null, 0, null, null);
      await connection.query(`INSERT INTO \`${table}\` (${columns}) VALUES ${new Array(chunk.length).fill(tuple).join(', ')}`, values);
    }
    await connection.query('COMMIT');
  } catch (error) {
    await connection.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    connection.release();
  }
}

/**
 * (a) Laravel's database driver, one job per transaction: BEGIN; SELECT … LIMIT 1 FOR UPDATE SKIP
 * LOCKED; UPDATE; COMMIT; run it; DELETE. Kinder than Laravel itself: it uses mailq's index-served
 * predicate (Laravel's `OR reserved_at <= ?` defeats the index) and a plain DELETE (Laravel deletes
 * in a second locking transaction). `loops` of these run at once, each on its own connection.
 */
export async function oneRowDrain(pool: Pool, table: string, queue: string, loops: number, handle: (id: number) => void): Promise<void> {
  await Promise.all(Array.from({ length: loops }, () => oneRowLoop(pool, table, queue, handle)));
}

async function oneRowLoop(pool: Pool, table: string, queue: string, handle: (id: number) => void): Promise<void> {
  const connection = await pool.getConnection();
  try {
    for (;;) {
      const id = await claimOne(connection, table, queue);
      if (id === undefined) {
        // An empty claim may only mean every due row was locked by another loop.
        if (!(await anyDue(connection, table, queue))) return;
        continue;
      }
      handle(id);
      await connection.query(`DELETE FROM \`${table}\` WHERE id = ?`, [id]);
    }
  } finally {
    connection.release();
  }
}

async function claimOne(connection: PoolConnection, table: string, queue: string): Promise<number | undefined> {
  await connection.query('START TRANSACTION');
  try {
    const [rows] = await connection.query<RowDataPacket[]>(
      `SELECT * FROM \`${table}\` FORCE INDEX (\`${table}_claim_index\`)
        WHERE queue = ? AND reserved_at IS NULL AND available_at <= NOW(3)
        ORDER BY priority, available_at, id LIMIT 1 FOR UPDATE SKIP LOCKED`,
      [queue],
    );
    const row = rows[0];
    if (row) await connection.query(`UPDATE \`${table}\` SET reserved_at = NOW(3), attempts = attempts + 1 WHERE id = ?`, [row.id]);
    await connection.query('COMMIT');
    return row ? Number(row.id) : undefined;
  } catch (error) {
    await connection.query('ROLLBACK').catch(() => undefined);
    // A deadlock against another loop's DELETE: try again.
    if ((error as { errno?: number }).errno === 1213) return claimOne(connection, table, queue);
    throw error;
  }
}

async function anyDue(connection: PoolConnection, table: string, queue: string): Promise<boolean> {
  const [rows] = await connection.query<RowDataPacket[]>(`SELECT 1 FROM \`${table}\` WHERE queue = ? AND reserved_at IS NULL AND available_at <= NOW(3) LIMIT 1`, [queue]);
  return rows.length > 0;
}
