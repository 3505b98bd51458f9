import type { Knex } from 'knex';
import { NEW_JOB_COLUMNS, type NewJobRow } from './rows.js';

/**
 * One multi-row INSERT. Built by hand rather than with knex's builder: for thousands of rows the
 * builder's per-value compilation costs more than the round trip it saves.
 * `available_at` comes from the database clock, shifted by the dispatch delay.
 */
export function insertJobRows(db: Knex | Knex.Transaction, jobsTable: string, rows: NewJobRow[], delayMs: number): Promise<unknown> {
  const columns = [...NEW_JOB_COLUMNS, 'available_at'].map((column) => `\`${column}\``).join(', ');
  const availableAt = delayMs > 0 ? `NOW(3) + INTERVAL ${Math.round(delayMs) * 1000} MICROSECOND` : 'NOW(3)';
  const placeholders = `(${NEW_JOB_COLUMNS.map(() => '?').join(', ')}, ${availableAt})`;
  const bindings: Array<string | number | null> = [];
  for (const row of rows) for (const column of NEW_JOB_COLUMNS) bindings.push(row[column]);
  const values = new Array(rows.length).fill(placeholders).join(', ');
  return db.raw(`INSERT INTO \`${jobsTable}\` (${columns}) VALUES ${values}`, bindings);
}

/** Splits rows so each INSERT stays far below max_allowed_packet (16 MiB on MariaDB, 64 MiB on MySQL 8). */
export function* chunkRows(rows: NewJobRow[], maxRows: number, maxBytes = 4 * 1024 * 1024): Generator<NewJobRow[]> {
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
