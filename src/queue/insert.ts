import type { Knex } from 'knex';
import mysql from 'mysql2';
import { NEW_JOB_COLUMNS, type NewJobRow } from './rows.js';
import { placeholders } from '../db/sql.js';

/**
 * One multi-row INSERT. Built by hand rather than with knex's builder: for thousands of rows the
 * builder's per-value compilation costs more than the round trip it saves.
 * `available_at` comes from the database clock, shifted by the dispatch delay: UTC_TIMESTAMP(3),
 * which is what NOW(3) reads in mailq's UTC sessions, and stays right on an app's connection in
 * another time zone (dispatch may run there).
 */
export function insertJobRows(db: Knex | Knex.Transaction, jobsTable: string, rows: NewJobRow[], delayMs: number, options: { skipDuplicates?: boolean } = {}): Promise<unknown> {
  const { sql, bindings } = insertJobRowsSql(jobsTable, rows, delayMs, options);
  return db.raw(sql, bindings);
}

/**
 * The multi-row INSERT with its values already escaped (mysql2's own escaping), ready to send as
 * is: knex would otherwise scan the statement for placeholders once more, and bulk dispatch builds
 * the next statement while the previous one runs (see Dispatcher.insertRows).
 */
export function formattedInsertJobRows(jobsTable: string, rows: NewJobRow[], delayMs: number, options: { skipDuplicates?: boolean } = {}): string {
  const { sql, bindings } = insertJobRowsSql(jobsTable, rows, delayMs, options);
  return mysql.format(sql, bindings);
}

/** The multi-row INSERT as text and bindings, for callers that send it on their own connection. */
export function insertJobRowsSql(jobsTable: string, rows: NewJobRow[], delayMs: number, options: { skipDuplicates?: boolean } = {}): { sql: string; bindings: Array<string | number | null> } {
  const columns = [...NEW_JOB_COLUMNS, 'available_at', 'created_at'].map((column) => `\`${column}\``).join(', ');
  const availableAt = delayMs > 0 ? `UTC_TIMESTAMP(3) + INTERVAL ${Math.round(delayMs) * 1000} MICROSECOND` : 'UTC_TIMESTAMP(3)';
  const tuple = `(${placeholders(NEW_JOB_COLUMNS)}, ${availableAt}, UTC_TIMESTAMP(3))`;
  const bindings: Array<string | number | null> = [];
  for (const row of rows) for (const column of NEW_JOB_COLUMNS) bindings.push(row[column]);
  const values = new Array(rows.length).fill(tuple).join(', ');
  // `id = id` changes nothing: a row whose unique_key is taken is skipped, and every other error still raises.
  const onDuplicate = options.skipDuplicates ? ' ON DUPLICATE KEY UPDATE id = id' : '';
  return { sql: `INSERT INTO \`${jobsTable}\` (${columns}) VALUES ${values}${onDuplicate}`, bindings };
}

/** Splits rows so each INSERT stays far below max_allowed_packet (16 MiB on MariaDB, 64 MiB on MySQL 8). */
export function* chunkRows(rows: Iterable<NewJobRow>, maxRows: number, maxBytes = 4 * 1024 * 1024): Generator<NewJobRow[]> {
  let chunk: NewJobRow[] = [];
  let bytes = 0;
  for (const row of rows) {
    const size = row.payload.length + 200;
    if (chunk.length > 0 && (chunk.length >= maxRows || bytes + size > maxBytes)) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(row);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
}

export interface UniqueInsertOutcome {
  inserted: number;
  skipped: number;
  /** unique_key → the job holding it now: one of ours, or the pending/running job that made ours a duplicate. */
  holders: Map<string, { id: number; uuid: string }>;
}

/**
 * Inserts rows some of which carry a unique key, skipping those whose key a pending or running job
 * holds. The unique index decides, not a read-then-write. Must run inside a transaction: our rows
 * stay invisible to workers until commit, and the holders' rows stay locked while we look at them.
 */
export async function insertJobRowsUnique(trx: Knex.Transaction, jobsTable: string, rows: NewJobRow[], delayMs: number): Promise<UniqueInsertOutcome> {
  await insertJobRows(trx, jobsTable, rows, delayMs, { skipDuplicates: true });
  const keyed = rows.filter((row) => row.unique_key !== null);
  const holders = await lockUniqueKeyHolders(trx, jobsTable, keyed.map((row) => row.unique_key!));
  const skipped = keyed.filter((row) => holders.get(row.unique_key!)?.uuid !== row.uuid).length;
  return { inserted: rows.length - skipped, skipped, holders };
}

/**
 * unique_key → the job that holds it now. A locking read: the current rows whatever snapshot the
 * caller's transaction holds, kept locked until it ends. After an insert that skipped duplicates,
 * a row of ours went in exactly when its key's holder has our uuid.
 */
export async function lockUniqueKeyHolders(trx: Knex.Transaction, jobsTable: string, keys: readonly string[]): Promise<Map<string, { id: number; uuid: string }>> {
  const holders = new Map<string, { id: number; uuid: string }>();
  const distinct = [...new Set(keys)];
  if (distinct.length === 0) return holders;
  const [found] = (await trx.raw(`SELECT id, uuid, unique_key FROM \`${jobsTable}\` WHERE unique_key IN (${placeholders(distinct)}) FOR UPDATE`, distinct)) as [
    Array<{ id: number | string; uuid: string; unique_key: string }>,
  ];
  for (const row of found) holders.set(row.unique_key, { id: Number(row.id), uuid: row.uuid });
  return holders;
}
