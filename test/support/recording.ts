import type { Knex } from 'knex';
import { createMailq, defineJob, type JobDefinition, type Mailq } from '../../src/index.js';
import { createLogger } from '../../src/logger.js';
import { createTestDatabase, type TestDatabase } from './database.js';

export interface JobRun {
  id: number;
  job_key: string;
  job_id: number;
  attempt: number;
  pid: number;
  worker_id: string | null;
  started_at: Date;
  finished_at: Date | null;
  /** When the handler stopped, finished or aborted (recording-jobs.mjs only), and the abort's error name. */
  ended_at?: Date | null;
  end_reason?: string | null;
}

export interface RecordingDatabase {
  db: TestDatabase;
  mq: Mailq;
  /** Environment for `mailq` processes: the database URL (the fixture jobs read it too). */
  env: NodeJS.ProcessEnv;
  runs(where?: Record<string, unknown>): Promise<JobRun[]>;
  workers(): Promise<Array<Record<string, any>>>;
  supervisors(): Promise<Array<Record<string, any>>>;
  count(table: string, where?: (query: Knex.QueryBuilder) => void): Promise<number>;
  close(): Promise<void>;
}

/** The ledger test/fixtures/recording-jobs.mjs writes: one row per run of a job, started and (if it got there) finished. */
export async function createJobRunsTable(knex: Knex): Promise<void> {
  await knex.raw(`CREATE TABLE job_runs (
    id BIGINT AUTO_INCREMENT PRIMARY KEY, job_key VARCHAR(64) NOT NULL, job_id BIGINT NOT NULL, attempt INT NOT NULL,
    pid INT NOT NULL, worker_id VARCHAR(191) NULL, started_at DATETIME(3) NOT NULL, finished_at DATETIME(3) NULL,
    ended_at DATETIME(3) NULL, end_reason VARCHAR(64) NULL, KEY (job_key))`);
}

/**
 * The fixture's `record` job for a worker in the test's own process: one job_runs row per run,
 * through `knex()` (read when the job runs, so it may be set up after this is called).
 */
export function recordInProcess(knex: () => Knex): JobDefinition<{ key: string; ms?: number }> {
  return defineJob({
    name: 'record',
    async handle(payload: { key: string; ms?: number }, { job }) {
      const [id] = await knex()('job_runs').insert({ job_key: payload.key, job_id: job.id, attempt: job.attempt, pid: process.pid, started_at: knex().raw('NOW(3)') });
      await new Promise((resolve) => setTimeout(resolve, payload.ms ?? 0));
      await knex()('job_runs').where({ id }).update({ finished_at: knex().raw('NOW(3)') });
    },
  });
}

/** Keys whose runs overlap in time: two workers ran the same job at once. */
export function overlappingRuns(runs: readonly JobRun[]): string[] {
  const byKey = new Map<string, JobRun[]>();
  for (const run of runs) byKey.set(run.job_key, [...(byKey.get(run.job_key) ?? []), run]);
  const overlapping: string[] = [];
  for (const [key, list] of byKey) {
    const sorted = [...list].sort((a, b) => a.started_at.getTime() - b.started_at.getTime());
    // A run with no recorded end (its process was killed) is not an overlap by itself.
    const endOf = (run: JobRun) => run.ended_at ?? run.finished_at;
    if (sorted.some((run, i) => i > 0 && endOf(sorted[i - 1]!) != null && endOf(sorted[i - 1]!)!.getTime() > run.started_at.getTime())) overlapping.push(key);
  }
  return overlapping;
}

/** A migrated test database plus the `job_runs` table that test/fixtures/recording-jobs.mjs writes. */
export async function recordingDatabase(label: string): Promise<RecordingDatabase> {
  const db = await createTestDatabase(label);
  const mq = createMailq({ databaseUrl: db.url, logger: createLogger({ level: 'silent' }) });
  await mq.migrate();
  await createJobRunsTable(mq.knex);
  const count = async (table: string, where?: (query: Knex.QueryBuilder) => void) => {
    const query = mq.knex(table).count({ n: '*' });
    where?.(query);
    return Number((await query)[0]!.n);
  };
  return {
    db,
    mq,
    env: { MAILQ_DATABASE_URL: db.url },
    runs: (where = {}) => mq.knex('job_runs').where(where).orderBy('id'),
    workers: () => mq.knex(mq.tables.workers).where({ kind: 'worker' }).orderBy('id'),
    supervisors: () => mq.knex(mq.tables.workers).where({ kind: 'supervisor' }),
    count,
    close: async () => {
      await mq.close();
      await db.drop();
    },
  };
}
