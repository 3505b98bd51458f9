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

/**
 * (c) A hand-written batch claimer, the fastest plain-mysql2 drain we know on this table: one fetcher
 * claims ≤ `claimSize` rows per transaction (the same index-served SELECT … FOR UPDATE SKIP LOCKED,
 * then one UPDATE) into a local buffer while `lanes` run them, and finished ids leave in grouped
 * DELETEs. It has none of mailq's bookkeeping: no leases renewed, no attempts, no events, no payload
 * validation, so it is the ceiling a queue on this table can approach.
 */
export async function batchDrain(pool: Pool, table: string, queue: string, lanes: number, handle: (id: number) => void, claimSize = 50): Promise<void> {
  const fetcher = await pool.getConnection();
  const deleter = await pool.getConnection();
  const buffer: number[] = [];
  const finished: number[] = [];
  let drained = false;
  let wakeLanes: Array<() => void> = [];
  let wakeFetcher: (() => void) | undefined;
  const signalLanes = () => {
    const waiting = wakeLanes;
    wakeLanes = [];
    waiting.forEach((wake) => wake());
  };

  const fetch = async () => {
    while (!drained) {
      if (buffer.length > claimSize / 2) {
        await new Promise<void>((resolve) => (wakeFetcher = resolve));
        continue;
      }
      const ids = await claimMany(fetcher, table, queue, claimSize - buffer.length);
      if (ids.length === 0 && buffer.length === 0 && !(await anyDue(fetcher, table, queue))) drained = true;
      buffer.push(...ids);
      signalLanes();
    }
  };
  let deleting: Promise<void> = Promise.resolve();
  const flush = () => {
    if (finished.length === 0) return;
    const ids = finished.splice(0, finished.length);
    deleting = deleting.then(() => deleter.query(`DELETE FROM \`${table}\` WHERE id IN (${ids.map(() => '?').join(', ')})`, ids).then(() => undefined));
  };
  const lane = async () => {
    for (;;) {
      const id = buffer.shift();
      if (id === undefined) {
        if (drained) return;
        await new Promise<void>((resolve) => wakeLanes.push(resolve));
        continue;
      }
      if (buffer.length <= claimSize / 2) wakeFetcher?.();
      handle(id);
      finished.push(id);
      if (finished.length >= claimSize) flush();
      // A no-op job: yield as a real handler's await would, so lanes take turns.
      await Promise.resolve();
    }
  };
  try {
    await Promise.all([fetch(), ...Array.from({ length: lanes }, lane)]);
    flush();
    await deleting;
  } finally {
    fetcher.release();
    deleter.release();
  }
}

async function claimMany(connection: PoolConnection, table: string, queue: string, limit: number): Promise<number[]> {
  await connection.query('START TRANSACTION');
  try {
    const [rows] = await connection.query<RowDataPacket[]>(
      `SELECT id FROM \`${table}\` FORCE INDEX (\`${table}_claim_index\`)
        WHERE queue = ? AND reserved_at IS NULL AND available_at <= NOW(3)
        ORDER BY priority, available_at, id LIMIT ? FOR UPDATE SKIP LOCKED`,
      [queue, limit],
    );
    const ids = rows.map((row) => Number(row.id));
    if (ids.length > 0) await connection.query(`UPDATE \`${table}\` SET reserved_at = NOW(3), attempts = attempts + 1 WHERE id IN (${ids.map(() => '?').join(', ')})`, ids);
    await connection.query('COMMIT');
    return ids;
  } catch (error) {
    await connection.query('ROLLBACK').catch(() => undefined);
    if ((error as { errno?: number }).errno === 1213) return claimMany(connection, table, queue, limit);
    throw error;
  }
}
