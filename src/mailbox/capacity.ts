import type { Knex } from 'knex';
import { ER, errnoOf } from '../db/errors.js';
import type { TableNames } from '../db/tables.js';
import { WorkerRows, type WorkerRecord } from '../worker/worker-rows.js';

/** How many jobs the running workers can run at once, as far as the database can tell. */
export interface WorkerCapacity {
  workers: number;
  /** Jobs at once across those workers. */
  slots: number;
}

/**
 * Live workers that serve `queue` (from their heartbeats in the workers table), or undefined when
 * this database has no workers table yet (then the caller says "unknown").
 */
export async function runningWorkerCapacity(knex: Knex, tables: TableNames, queue: string): Promise<WorkerCapacity | undefined> {
  let records: WorkerRecord[];
  try {
    records = await new WorkerRows(knex, tables).list();
  } catch (error) {
    if (errnoOf(error) === ER.NO_SUCH_TABLE) return undefined;
    throw error;
  }
  const live = records.filter((record) => record.kind === 'worker' && record.alive && record.queues.includes(queue));
  return { workers: live.length, slots: live.reduce((sum, record) => sum + record.concurrency, 0) };
}

/** Wall time to run `jobs` jobs of `perJobMs` each on `slots` parallel slots. */
export function estimateDurationMs(jobs: number, perJobMs: number, slots: number): number {
  if (slots <= 0) return Infinity;
  return Math.ceil(jobs / slots) * perJobMs;
}
