import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { emptyCounts, type QueueCounts } from './tally.js';
import { placeholders } from '../db/sql.js';

/** Completed/failed totals of one queue over the last 1, 5 and 15 minutes (the current minute included). */
export interface QueueThroughput {
  lastMinute: QueueCounts;
  last5Minutes: QueueCounts;
  last15Minutes: QueueCounts;
}

/** One queue's counts for one minute of the rollup. */
export interface MinuteCounts extends QueueCounts {
  queue: string;
  /** The minute's start, on the database clock. */
  minute: Date;
}

const MINUTE_OF_NOW = "DATE_FORMAT(NOW(), '%Y-%m-%d %H:%i:00')";

/** The per-minute stats rollup: every statement on it, in one place. */
export class StatsRows {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  private get table(): string {
    return `\`${this.tables.queueStats}\``;
  }

  /** Adds a worker's counts to this minute's row of each queue: one statement for all queues. */
  async add(counts: ReadonlyMap<string, QueueCounts>): Promise<void> {
    if (counts.size === 0) return;
    const entries = [...counts];
    await this.knex.raw(
      `INSERT INTO ${this.table} (queue, minute, completed, failed, retried, deferred, runtime_ms)
       VALUES ${entries.map(() => `(?, ${MINUTE_OF_NOW}, ?, ?, ?, ?, ?)`).join(', ')}
       ON DUPLICATE KEY UPDATE completed = completed + VALUES(completed), failed = failed + VALUES(failed),
         retried = retried + VALUES(retried), deferred = deferred + VALUES(deferred), runtime_ms = runtime_ms + VALUES(runtime_ms)`,
      entries.flatMap(([queue, c]) => [queue, c.completed, c.failed, c.retried, c.deferred, Math.round(c.runtimeMs)]),
    );
  }

  /** Throughput per queue over the recent minutes; queues with no finished job are absent. */
  async recent(): Promise<Map<string, QueueThroughput>> {
    const window = (minutes: number, column: string) =>
      `SUM(CASE WHEN minute > ${MINUTE_OF_NOW} - INTERVAL ${minutes} MINUTE THEN ${column} ELSE 0 END)`;
    const columns = ['completed', 'failed', 'retried', 'deferred', 'runtime_ms'];
    const selects = [1, 5, 15].flatMap((minutes) => columns.map((column) => `${window(minutes, column)} AS ${column}_${minutes}`));
    const [rows] = (await this.knex.raw(
      `SELECT queue, ${selects.join(', ')} FROM ${this.table} WHERE minute > ${MINUTE_OF_NOW} - INTERVAL 15 MINUTE GROUP BY queue`,
    )) as [Array<Record<string, unknown>>];
    const result = new Map<string, QueueThroughput>();
    for (const row of rows) {
      const counts = (minutes: number): QueueCounts => ({
        completed: Number(row[`completed_${minutes}`] ?? 0),
        failed: Number(row[`failed_${minutes}`] ?? 0),
        retried: Number(row[`retried_${minutes}`] ?? 0),
        deferred: Number(row[`deferred_${minutes}`] ?? 0),
        runtimeMs: Number(row[`runtime_ms_${minutes}`] ?? 0),
      });
      result.set(String(row.queue), { lastMinute: counts(1), last5Minutes: counts(5), last15Minutes: counts(15) });
    }
    return result;
  }

  /**
   * The rollup's rows of the last `minutes` minutes (the current one included), oldest first:
   * what the dashboard charts and what /metrics turns into counters. Minutes with no finished job have no row.
   */
  async perMinute(minutes: number, queues?: readonly string[]): Promise<MinuteCounts[]> {
    const filter = queues?.length ? `AND queue IN (${placeholders(queues)})` : '';
    const [rows] = (await this.knex.raw(
      `SELECT queue, minute, completed, failed, retried, deferred, runtime_ms FROM ${this.table}
        WHERE minute > ${MINUTE_OF_NOW} - INTERVAL ? MINUTE ${filter} ORDER BY minute, queue`,
      [Math.max(1, Math.floor(minutes)), ...(queues ?? [])],
    )) as [Array<Record<string, unknown>>];
    return rows.map((row) => ({
      queue: String(row.queue),
      minute: row.minute as Date,
      completed: Number(row.completed),
      failed: Number(row.failed),
      retried: Number(row.retried),
      deferred: Number(row.deferred),
      runtimeMs: Number(row.runtime_ms),
    }));
  }

  /** Deletes minutes older than `keepMs`, a chunk at a time. */
  async prune(keepMs: number): Promise<number> {
    const [result] = (await this.knex.raw(`DELETE FROM ${this.table} WHERE minute < NOW() - INTERVAL ? SECOND LIMIT 5000`, [
      Math.round(keepMs / 1000),
    ])) as [{ affectedRows: number }];
    return result.affectedRows;
  }
}

export function emptyThroughput(): QueueThroughput {
  return { lastMinute: emptyCounts(), last5Minutes: emptyCounts(), last15Minutes: emptyCounts() };
}
