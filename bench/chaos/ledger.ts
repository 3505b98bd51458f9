import type { Knex } from 'knex';
import { withDatabaseRetry } from '../../src/db/retry.js';

/**
 * The chaos run's own record of every handler run, written by the job itself (not by mailq):
 * what ran, which attempt, in which process, from when to when, and how it ended. Kept in a table
 * beside mailq's, so it survives the processes it describes.
 */
export const LEDGER_TABLE = 'chaos_ledger';

export type RunOutcome = 'completed' | 'aborted' | 'threw';

export interface LedgerRow {
  seq: number;
  jobId: number;
  jobUuid: string;
  attempt: number;
  pid: number;
  workerId: string | null;
  startedAt: Date;
  endedAt: Date | null;
  outcome: RunOutcome | null;
}

/** What a run writes when it starts; `runId` is unique per handler call, so a statement retried after a lost reply writes the same row again, not a second one. */
export type RunStart = Omit<LedgerRow, 'startedAt' | 'endedAt' | 'outcome'> & { runId: string };

/** The ledger's writes must outlast killed connections and a database restart, or the run would measure its own recording. */
const RECORD_RETRY = { reconnectForMs: 120_000 };

export async function createLedgerTable(knex: Knex): Promise<void> {
  await knex.raw(`CREATE TABLE ${LEDGER_TABLE} (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    run_id CHAR(32) NOT NULL UNIQUE,
    seq INT NOT NULL,
    job_id BIGINT NOT NULL,
    job_uuid VARCHAR(36) NOT NULL,
    attempt INT NOT NULL,
    pid INT NOT NULL,
    worker_id VARCHAR(191) NULL,
    started_at DATETIME(3) NOT NULL,
    ended_at DATETIME(3) NULL,
    outcome VARCHAR(16) NULL,
    KEY (seq)
  )`);
}

export function recordStart(knex: Knex, run: RunStart): Promise<void> {
  return withDatabaseRetry(async () => {
    await knex.raw(
      `INSERT IGNORE INTO ${LEDGER_TABLE} (run_id, seq, job_id, job_uuid, attempt, pid, worker_id, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, NOW(3))`,
      [run.runId, run.seq, run.jobId, run.jobUuid, run.attempt, run.pid, run.workerId],
    );
  }, RECORD_RETRY);
}

export function recordEnd(knex: Knex, runId: string, outcome: RunOutcome): Promise<void> {
  return withDatabaseRetry(async () => {
    await knex.raw(`UPDATE ${LEDGER_TABLE} SET ended_at = COALESCE(ended_at, NOW(3)), outcome = ? WHERE run_id = ?`, [outcome, runId]);
  }, RECORD_RETRY);
}

export async function readLedger(knex: Knex): Promise<LedgerRow[]> {
  const rows = (await knex(LEDGER_TABLE).select('*').orderBy('id')) as Array<Record<string, unknown>>;
  return rows.map((row) => ({
    seq: Number(row.seq),
    jobId: Number(row.job_id),
    jobUuid: String(row.job_uuid),
    attempt: Number(row.attempt),
    pid: Number(row.pid),
    workerId: (row.worker_id as string | null) ?? null,
    startedAt: row.started_at as Date,
    endedAt: (row.ended_at as Date | null) ?? null,
    outcome: (row.outcome as RunOutcome | null) ?? null,
  }));
}
