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

/** A job as a unique key names it: the one that holds the key. */
export interface KeyHolder {
  id: number;
  uuid: string;
}

export interface UniqueInsertOutcome {
  inserted: number;
  skipped: number;
  /** unique_key → the row of ours that went in with it; a key of ours missing here was taken. */
  ours: Map<string, KeyHolder>;
}

/**
 * Inserts rows some of which carry a unique key, skipping those whose key a pending or running job
 * holds. The unique index decides, not a read-then-write. Must run inside a transaction: our rows
 * stay invisible to workers until commit.
 */
export async function insertJobRowsUnique(trx: Knex.Transaction, jobsTable: string, rows: NewJobRow[], delayMs: number): Promise<UniqueInsertOutcome> {
  await insertJobRows(trx, jobsTable, rows, delayMs, { skipDuplicates: true });
  const ours = await findOwnKeyedRows(trx, jobsTable, rows);
  const skipped = rows.filter((row) => row.unique_key !== null && ours.get(row.unique_key)?.uuid !== row.uuid).length;
  return { inserted: rows.length - skipped, skipped, ours };
}

/**
 * unique_key → the row of `rows` (matched by uuid) that holds it, after an insert that skipped
 * duplicates: a row went in exactly when its key's row carries its uuid. A plain read that locks
 * nothing: a transaction always sees its own rows, whatever snapshot it holds, so no locking read
 * is needed to tell inserted from skipped (a locking read of a key list would lock every row and
 * gap it scans for the rest of the caller's transaction).
 */
export async function findOwnKeyedRows(trx: Knex.Transaction, jobsTable: string, rows: ReadonlyArray<{ uuid: string; unique_key: string | null }>): Promise<Map<string, KeyHolder>> {
  const uuids = new Set(rows.map((row) => row.uuid));
  const ours = new Map<string, KeyHolder>();
  const keys = rows.flatMap((row) => (row.unique_key === null ? [] : [row.unique_key]));
  for (const row of await readUniqueKeyRows(trx, jobsTable, keys, { lock: false })) {
    if (uuids.has(row.uuid)) ours.set(row.unique_key, { id: Number(row.id), uuid: row.uuid });
  }
  return ours;
}

/**
 * unique_key → the job that holds it now. Keys our rows hold (`ours`, see findOwnKeyedRows) are
 * answered as they are; the others with a locking read, which sees the current holder whatever
 * snapshot the caller's transaction holds. It reads only rows our INSERT already locked when it met
 * them as duplicates: for one key (a dispatch) it adds no lock another session would notice; for a
 * list (a retry, in its own short transaction) it also locks the gaps beside those keys.
 */
export async function uniqueKeyHolders(trx: Knex.Transaction, jobsTable: string, keys: readonly string[], ours: ReadonlyMap<string, KeyHolder>): Promise<Map<string, KeyHolder>> {
  const holders = new Map(ours);
  const taken = keys.filter((key) => !ours.has(key));
  for (const row of await readUniqueKeyRows(trx, jobsTable, taken, { lock: true })) holders.set(row.unique_key, { id: Number(row.id), uuid: row.uuid });
  return holders;
}

/**
 * The rows with these unique keys, read through the unique index and nothing else. FORCE INDEX
 * because on a small table the optimizer prefers a full scan for a list of keys, and a locking
 * read locks every row it scans: jobs would be invisible to every claim (SKIP LOCKED) and other
 * dispatchers would wait until the transaction ends.
 */
async function readUniqueKeyRows(trx: Knex.Transaction, jobsTable: string, keys: readonly string[], options: { lock: boolean }): Promise<Array<{ id: number | string; uuid: string; unique_key: string }>> {
  const distinct = [...new Set(keys)];
  if (distinct.length === 0) return [];
  const lock = options.lock ? ' FOR UPDATE' : '';
  const [found] = (await trx.raw(
    `SELECT id, uuid, unique_key FROM \`${jobsTable}\` FORCE INDEX (\`${uniqueKeyIndex(jobsTable)}\`) WHERE unique_key IN (${placeholders(distinct)})${lock}`,
    distinct,
  )) as [Array<{ id: number | string; uuid: string; unique_key: string }>];
  return found;
}

/** The UNIQUE index on jobs.unique_key, as the jobs migration names it. */
function uniqueKeyIndex(jobsTable: string): string {
  return `${jobsTable}_unique_key_unique`;
}
