import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';

/** How many jobs the running workers can run at once, as far as the database can tell. */
export interface WorkerCapacity {
  workers: number;
  /** Jobs at once across those workers. */
  slots: number;
}

const HEARTBEAT_COLUMNS = ['last_beat_at', 'last_heartbeat_at', 'heartbeat_at', 'last_beat', 'last_seen_at'];
const LIVE_WITHIN_SECONDS = 60;

/**
 * Live workers that serve `queue`, read from the `workers` table, or undefined when there is no
 * such table (then the caller says "unknown").
 *
 * Seam: the supervisor (issue #4) owns the `workers` table and its columns. Until its library
 * function for live workers lands, this reads the table defensively by the columns it finds.
 * Replace the body with that function when it exists.
 */
export async function runningWorkerCapacity(knex: Knex, tables: TableNames, queue: string): Promise<WorkerCapacity | undefined> {
  const table = (tables as TableNames & { workers?: string }).workers ?? `${tables.prefix}workers`;
  const [columnRows] = (await knex.raw('SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [table])) as [Array<{ name: string }>];
  const columns = new Set(columnRows.map((row) => row.name.toLowerCase()));
  if (columns.size === 0) return undefined;

  const query = knex(table).count({ workers: '*' });
  if (columns.has('concurrency')) query.sum({ slots: 'concurrency' });
  const heartbeat = HEARTBEAT_COLUMNS.find((column) => columns.has(column));
  if (heartbeat) query.whereRaw(`?? >= NOW(3) - INTERVAL ${LIVE_WITHIN_SECONDS} SECOND`, [heartbeat]);
  if (columns.has('stopped_at')) query.whereNull('stopped_at');
  if (columns.has('queues')) query.where('queues', 'like', `%${queue.replace(/[\\%_]/g, '\\$&')}%`);
  const [row] = (await query) as Array<{ workers: number | string; slots?: number | string | null }>;
  const workers = Number(row?.workers ?? 0);
  // A worker row without a concurrency column runs one job at a time (`--processes=N --concurrency=1`).
  return { workers, slots: row?.slots == null ? workers : Number(row.slots) };
}

/** Wall time to run `jobs` jobs of `perJobMs` each on `slots` parallel slots. */
export function estimateDurationMs(jobs: number, perJobMs: number, slots: number): number {
  if (slots <= 0) return Infinity;
  return Math.ceil(jobs / slots) * perJobMs;
}
