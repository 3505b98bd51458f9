import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killIfRunning, startCli, waitFor, type CliProcess } from './support/processes.js';
import { recordingWork, supervisorLogs } from './support/supervisor.js';
import { recordingDatabase, type RecordingDatabase } from './support/recording.js';

// Worker processes that end (a stuck handler, a crash, --max-jobs, --memory) and the supervisor
// that replaces them. Real processes, compiled JS from dist: build first.

const CRASHING_JOBS = fileURLToPath(new URL('./fixtures/crashing-jobs.mjs', import.meta.url));

let rec: RecordingDatabase;
let supervisor: CliProcess | undefined;

const work = recordingWork;
const drained = (queue: string) => async () => (await rec.count(rec.mq.tables.jobs, (query) => query.where({ queue }))) === 0;

async function stopSupervisor(): Promise<void> {
  supervisor!.child.kill('SIGTERM');
  expect(await supervisor!.exited).toEqual({ code: 0, signal: null });
}

beforeAll(async () => {
  rec = await recordingDatabase('supervisor recycle');
});

afterEach(() => {
  killIfRunning(supervisor);
  supervisor = undefined;
});

afterAll(async () => {
  await rec?.close();
});

describe('a handler that ignores its timeout', { timeout: 120_000 }, () => {
  it('fails its attempt as a timeout; its process puts its other job back, exits 70 and is replaced', async () => {
    supervisor = startCli(work('stuck', '--supervise', '--concurrency=2', '--timeout-grace=500ms', '--stop-wait=2s'), rec.env);
    const [first] = await waitFor('the worker process', async () => {
      const rows = await rec.workers();
      return rows.length === 1 ? rows : undefined;
    });
    const stuck = await rec.mq.dispatch('record', { key: 'stuck', ms: 60_000, ignoreTimeout: true }, { queue: 'stuck', tries: 1, timeout: '1s' });
    const other = await rec.mq.dispatch('record', { key: 'other', ms: 60_000 }, { queue: 'stuck', tries: 3, timeout: '2m' });

    const second = await waitFor("the other job's second run, in a new process", async () => {
      const runs = await rec.runs({ job_key: 'other' });
      return runs.length === 2 ? runs[1] : undefined;
    });
    const [firstRun] = await rec.runs({ job_key: 'other' });
    expect(firstRun).toMatchObject({ pid: first!.pid, finished_at: null });
    expect(second.pid).not.toBe(first!.pid);
    expect(second.attempt).toBe(1);

    const [failed] = await rec.mq.failed.list({ queue: 'stuck' });
    expect(failed).toMatchObject({ uuid: stuck.uuid, attempts: 1 });
    expect(failed!.reason).toContain('job timed out after 1000 ms');
    expect(await rec.mq.knex(rec.mq.tables.jobs).where({ id: other.id }).first()).toMatchObject({ deferrals: 1, attempts: 1, reserved_by: second.worker_id });

    const exit = supervisorLogs(supervisor).find((line) => String(line.msg).startsWith('a job handler ignored its timeout'));
    expect(exit).toMatchObject({ code: 70, reason: 'stuck-job', pid: first!.pid });
    expect((await rec.workers()).map((row) => row.id)).toEqual([second.worker_id]);

    await stopSupervisor();
    expect(await rec.mq.knex(rec.mq.tables.jobs).where({ id: other.id }).first()).toMatchObject({ deferrals: 2, attempts: 0, reserved_at: null });
    await rec.mq.knex(rec.mq.tables.jobs).where({ queue: 'stuck' }).delete();
  });
});

describe('crash loop', { timeout: 120_000 }, () => {
  it('restarts a process that cannot start with growing delays, shows the crash loop in the workers table, and still stops at once', async () => {
    supervisor = startCli(['work', '--queue=crash', '--supervise', '--jobs', CRASHING_JOBS, '--heartbeat=200ms'], rec.env);
    const row = await waitFor('the supervisor to report a crash loop', async () => (await rec.supervisors()).find((entry) => entry.state === 'crash-loop'), 30_000);
    expect(row.detail).toMatch(/^process 1: 3 quick crashes in a row \(last: exit code 2\); next start in 4s$/);

    const crashes = supervisorLogs(supervisor).filter((line) => line.level === 50 && line.crashes !== undefined);
    expect(crashes.map((line) => [line.crashes, line.delayMs, line.code])).toEqual([
      [1, 1000, 2],
      [2, 2000, 2],
      [3, 4000, 2],
    ]);
    expect(supervisor.output()).toContain('this deploy is broken');
    await stopSupervisor();
    expect(await rec.count(rec.mq.tables.workers)).toBe(0);
  });
});

describe('recycling', { timeout: 120_000 }, () => {
  it('--max-jobs recycles worker processes gracefully: every job runs exactly once', async () => {
    supervisor = startCli(work('max-jobs', '--processes=2', '--max-jobs=10'), rec.env);
    await rec.mq.dispatchMany('record', Array.from({ length: 60 }, (_, n) => ({ key: `mj-${n}`, ms: 5 })), { queue: 'max-jobs', tries: 1 });
    await waitFor('the queue to drain', drained('max-jobs'), 60_000);

    const runs = (await rec.runs()).filter((run) => run.job_key.startsWith('mj-'));
    expect(runs).toHaveLength(60);
    expect(new Set(runs.map((run) => run.job_key)).size).toBe(60);
    expect(runs.every((run) => run.finished_at)).toBe(true);
    const perWorker = [...runs.reduce((counts, run) => counts.set(run.worker_id, (counts.get(run.worker_id) ?? 0) + 1), new Map<string | null, number>()).values()];
    expect(perWorker.length).toBeGreaterThanOrEqual(6);
    expect(Math.max(...perWorker)).toBeLessThanOrEqual(10);
    expect(await rec.count(rec.mq.tables.failedJobs, (query) => query.where({ queue: 'max-jobs' }))).toBe(0);
    // The queue can drain before the supervisor has logged the exit of the last processes to finish.
    const recycled = () => supervisorLogs(supervisor!).filter((line) => line.reason === 'max-jobs');
    await waitFor('at least five recycles logged', () => recycled().length >= 5, 20_000);
    await stopSupervisor();
  });

  it('--stop-when-empty: processes that find the queue empty are not replaced, and the supervisor exits 0 when all have', async () => {
    await rec.mq.dispatchMany('record', Array.from({ length: 20 }, (_, n) => ({ key: `empty-${n}` })), { queue: 'empty' });
    supervisor = startCli(work('empty', '--processes=2', '--stop-when-empty'), rec.env);
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
    expect(await rec.count(rec.mq.tables.jobs, (query) => query.where({ queue: 'empty' }))).toBe(0);
    expect((await rec.runs()).filter((run) => run.job_key.startsWith('empty-'))).toHaveLength(20);
    const finished = supervisorLogs(supervisor).filter((line) => line.msg === 'worker process finished its work; not replacing it');
    expect(finished.map((line) => line.reason)).toEqual(['empty', 'empty']);
    expect(supervisorLogs(supervisor).at(-1)).toMatchObject({ msg: 'supervisor stopped', end: 'finished', restarts: 0 });
  });

  it('--memory recycles a process that grew past the limit after its job; the next jobs run in a fresh process', async () => {
    supervisor = startCli(work('memory', '--supervise', '--memory=300MB'), rec.env);
    await waitFor('the worker process', async () => (await rec.workers()).length === 1);
    await rec.mq.dispatch('record', { key: 'grow', allocMb: 300 }, { queue: 'memory', priority: -1 });
    await rec.mq.dispatchMany('record', [1, 2, 3].map((n) => ({ key: `after-${n}` })), { queue: 'memory' });
    await waitFor('the queue to drain', drained('memory'), 30_000);

    const [grow] = await rec.runs({ job_key: 'grow' });
    expect(grow!.finished_at).not.toBeNull();
    const after = (await rec.runs()).filter((run) => run.job_key.startsWith('after-'));
    expect(after).toHaveLength(3);
    expect(after.every((run) => run.pid !== grow!.pid)).toBe(true);
    expect(supervisorLogs(supervisor).find((line) => line.reason === 'memory')).toMatchObject({ code: 0, pid: grow!.pid });
    if (process.env.DEBUG_SUPERVISOR) console.log(supervisor.output());
    await stopSupervisor();
  });
});
