import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseJsonColumn } from '../src/db/json.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, createSideEffectTables, FIXTURE_JOBS, millisBetween, openQueue, startCli, waitFor, type RunningProcess } from './support/queue.js';

let db: TestDatabase;
let mq: Mailq;
let scratch: string;
let config: string;
const started: RunningProcess[] = [];

beforeAll(async () => {
  db = await createTestDatabase('concurrency');
  mq = openQueue(db.url);
  await mq.migrate();
  await createSideEffectTables(mq.knex);
  scratch = await mkdtemp(path.join(tmpdir(), 'mailq-concurrency-'));
  // Short leases and a frequent sweep, so a dead worker's jobs come back within seconds.
  config = path.join(scratch, 'mailq.config.mjs');
  await writeFile(config, `export default { worker: { leaseGrace: '500ms', sweepInterval: '200ms', sleep: '50ms' } };\n`);
});

afterAll(async () => {
  for (const worker of started) if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGKILL');
  await mq?.close();
  await db?.drop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

beforeEach(async () => {
  await mq.knex('jobs').delete();
  await mq.knex('failed_jobs').delete();
  await mq.knex('test_runs').delete();
  await mq.knex('test_starts').delete();
});

/** `mailq work` in its own process, loading the fixture jobs, on this file's database. */
function worker(queue: string, ...flags: string[]): RunningProcess {
  const process = startCli(['work', '--jobs', FIXTURE_JOBS, '--config', config, '--queue', queue, ...flags], { env: { MAILQ_DATABASE_URL: db.url } });
  started.push(process);
  return process;
}

describe('worker processes', () => {
  it.each([['0'], ['20']])('three processes drain 5,000 jobs and every job runs exactly once (--prefetch %s)', async (prefetch) => {
    const total = 5_000;
    await mq.dispatchMany('record', Array.from({ length: total }, (_, n) => ({ n })), { queue: 'bulk' });

    const workers = [1, 2, 3].map(() => worker('bulk', '--concurrency', '10', '--prefetch', prefetch, '--stop-when-empty'));
    const results = await Promise.all(workers.map((process) => process.exited));
    for (const result of results) expect(result.code, result.stderr.slice(-2_000)).toBe(0);

    const [rows] = (await mq.knex.raw(
      'SELECT COUNT(*) AS jobs, COUNT(DISTINCT job_id) AS ids, SUM(runs) AS runs, MAX(runs) AS most, COUNT(DISTINCT pid) AS processes FROM test_runs',
    )) as [Array<Record<string, number | string>>];
    const summary = Object.fromEntries(Object.entries(rows[0]!).map(([key, value]) => [key, Number(value)]));
    expect(summary).toMatchObject({ jobs: total, ids: total, runs: total, most: 1 });
    expect(summary.processes).toBeGreaterThan(1);
    expect(await count(mq.knex, 'jobs')).toBe(0);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });

  it('a worker killed with SIGKILL mid-job: its jobs run again after their lease, and nothing is lost', async () => {
    const total = 6;
    // Dispatched by name from here, where the job is unknown: its 4 s timeout comes from the workers' definition.
    await mq.dispatchMany('hang-first', Array.from({ length: total }, (_, n) => ({ n })), { queue: 'kill' });

    const victim = worker('kill', '--concurrency', '10');
    await waitFor('every job to start in the first worker', async () => (await count(mq.knex, 'test_starts')) === total);
    victim.child.kill('SIGKILL');
    expect((await victim.exited).signal).toBe('SIGKILL');
    // Still reserved by the dead worker: nobody else has them yet. Their leases are its last word.
    expect(await count(mq.knex, 'jobs', { reserved_at: null })).toBe(0);
    const leases = new Map((await mq.knex('jobs').select('payload', 'lease_until')).map((row) => [parseJsonColumn<{ n: number }>(row.payload).n, row.lease_until as Date]));

    const rescuer = worker('kill', '--concurrency', '10');
    await waitFor('every job to complete in the second worker', async () => (await count(mq.knex, 'test_runs')) === total, 30_000);
    rescuer.child.kill('SIGTERM');
    expect((await rescuer.exited).code).toBe(0);

    const victimPid = victim.child.pid;
    const rescuerPid = rescuer.child.pid;
    const starts = await mq.knex('test_starts').orderBy(['n', 'attempt']).select('n', 'attempt', 'pid', 'started_at');
    expect(starts.map((row) => [row.n, row.attempt, row.pid])).toEqual(
      Array.from({ length: total }, (_, n) => [
        [n, 1, victimPid],
        [n, 2, rescuerPid],
      ]).flat(),
    );
    // Not handed out again while the dead worker's lease was live.
    for (let n = 0; n < total; n++) {
      expect(await millisBetween(mq.knex, leases.get(n)!, starts[2 * n + 1].started_at), `job ${n}`).toBeGreaterThanOrEqual(0);
    }
    const runs = await mq.knex('test_runs').select('n', 'runs', 'pid');
    expect(runs).toHaveLength(total);
    for (const run of runs) expect(run).toMatchObject({ runs: 1, pid: rescuerPid });
    expect(await count(mq.knex, 'jobs')).toBe(0);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });

  it('SIGTERM stops a worker process gracefully: unfinished jobs go back with no attempt counted', async () => {
    await mq.dispatchMany('hang-first', [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: 'term' });
    const process = worker('term', '--concurrency', '3', '--stop-wait', '300ms');
    await waitFor('the jobs to start', async () => (await count(mq.knex, 'test_starts')) === 3);
    process.child.kill('SIGTERM');
    const result = await process.exited;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('putting unfinished jobs back');

    const rows = await mq.knex('jobs').select('attempts', 'deferrals', 'reserved_by', 'lease_until');
    expect(rows).toEqual(Array.from({ length: 3 }, () => ({ attempts: 0, deferrals: 1, reserved_by: null, lease_until: null })));
  });
});
