import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { errnoOf, ER } from '../db/errors.js';
import { withDatabaseRetry } from '../db/retry.js';

export type RunStatus = 'running' | 'done' | 'failed' | 'skipped';

export interface ScheduleRun {
  id: number;
  entry: string;
  slot: Date;
  status: RunStatus;
  runner: string;
  batchId: string | null;
  exitCode: number | null;
  detail: string | null;
  firedAt: Date;
  finishedAt: Date | null;
}

/** How long schedule_runs keeps a run (each entry's newest run is always kept). */
export const KEEP_RUNS_DAYS = 30;

/** A run without a batch that never recorded its end (its scheduler died) stops counting as running after this. */
const STALE_RUN_HOURS = 24;

/**
 * The `schedule_runs` table: one row per entry and slot, inserted before the slot fires.
 *
 * @example
 * const runs = new ScheduleRuns(mq.knex, mq.tables);
 * const latest = await runs.latest(['nightly-sync'], 5); // the last five slots and how they went
 */
export class ScheduleRuns {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  /**
   * Claims a slot: the first scheduler to insert (entry, slot) fires it; every other one gets a
   * duplicate-key error and returns undefined. The unique index decides, on any number of hosts.
   */
  async claim(entry: string, slot: Date, runner: string): Promise<number | undefined> {
    try {
      const [id] = await withDatabaseRetry(() => this.knex(this.tables.scheduleRuns).insert({ entry, slot, status: 'running', runner }));
      return Number(id);
    } catch (error) {
      if (errnoOf(error) === ER.DUP_ENTRY) return undefined;
      throw error;
    }
  }

  async finish(id: number, outcome: { status: RunStatus; exitCode?: number; batchId?: string; detail?: string }): Promise<void> {
    await withDatabaseRetry(() =>
      this.knex(this.tables.scheduleRuns)
        .where({ id })
        .update({ status: outcome.status, exit_code: outcome.exitCode ?? null, batch_id: outcome.batchId ?? null, detail: outcome.detail?.slice(0, 4000) ?? null, finished_at: this.knex.raw('NOW(3)') }),
    );
  }

  /**
   * Whether the entry's last fired run before `slot` is still going: its batch has not finished,
   * or (a run without a batch) it has not recorded its end and began less than 24 h ago.
   */
  async previousStillRunning(entry: string, slot: Date): Promise<string | undefined> {
    const previous = await this.knex(this.tables.scheduleRuns)
      .where({ entry })
      .where('slot', '<', slot)
      .whereIn('status', ['running', 'done', 'failed'])
      .orderBy('slot', 'desc')
      .first();
    if (!previous) return undefined;
    if (previous.batch_id) {
      const batch = await this.knex(this.tables.jobBatches).where({ id: previous.batch_id }).first('finished_at', 'pending_jobs', 'total_jobs');
      if (batch && !batch.finished_at) return `the batch ${previous.batch_id} of the ${iso(previous.slot)} run is still running (${batch.total_jobs - Math.max(0, batch.pending_jobs)}/${batch.total_jobs} done)`;
      return undefined;
    }
    if (previous.status === 'running') {
      const [rows] = (await this.knex.raw(`SELECT ? > NOW(3) - INTERVAL ${STALE_RUN_HOURS} HOUR AS recent`, [previous.fired_at])) as [Array<{ recent: number }>];
      if (Number(rows[0]?.recent)) return `the ${iso(previous.slot)} run (on ${previous.runner}) has not finished`;
    }
    return undefined;
  }

  /**
   * Deletes runs older than `keepDays`, except each entry's newest run (which `withoutOverlapping`
   * and `schedule:list` read). A per-minute entry would otherwise add half a million rows a year.
   */
  async prune(keepDays = KEEP_RUNS_DAYS): Promise<number> {
    const runs = `\`${this.tables.scheduleRuns}\``;
    const [result] = (await withDatabaseRetry(() =>
      this.knex.raw(
        `DELETE old FROM ${runs} old JOIN (SELECT entry, MAX(slot) AS newest FROM ${runs} GROUP BY entry) kept ON kept.entry = old.entry
         WHERE old.slot < kept.newest AND old.slot < NOW(3) - INTERVAL ? DAY`,
        [keepDays],
      ),
    )) as [{ affectedRows: number }];
    return result.affectedRows;
  }

  /** The latest runs of each entry, newest first. */
  async latest(entries: string[], perEntry = 1): Promise<Map<string, ScheduleRun[]>> {
    const result = new Map<string, ScheduleRun[]>();
    for (const entry of entries) {
      const rows = await this.knex(this.tables.scheduleRuns).where({ entry }).orderBy('slot', 'desc').limit(perEntry);
      result.set(entry, rows.map(toRun));
    }
    return result;
  }
}

function iso(value: Date | string): string {
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

function toRun(row: Record<string, unknown>): ScheduleRun {
  return {
    id: Number(row.id),
    entry: String(row.entry),
    slot: row.slot as Date,
    status: row.status as RunStatus,
    runner: String(row.runner),
    batchId: (row.batch_id as string | null) ?? null,
    exitCode: row.exit_code == null ? null : Number(row.exit_code),
    detail: (row.detail as string | null) ?? null,
    firedAt: row.fired_at as Date,
    finishedAt: (row.finished_at as Date | null) ?? null,
  };
}
