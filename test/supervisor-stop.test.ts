import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseJsonColumn } from '../src/db/json.js';
import { killIfRunning, startCli, waitFor, type CliProcess } from './support/processes.js';
import { liveWorkers, recordingWork, supervisorLogs } from './support/supervisor.js';
import { recordingDatabase, type RecordingDatabase } from './support/recording.js';

// Stopping a supervisor: SIGTERM within the stop wait, a kill when a worker overstays, a forced
// stop, a supervisor killed under its workers, bad settings. Real processes (compiled JS from dist).

let rec: RecordingDatabase;
let supervisor: CliProcess | undefined;

const work = recordingWork;


beforeAll(async () => {
  rec = await recordingDatabase('supervisor stop');
});

afterEach(() => {
  killIfRunning(supervisor);
  supervisor = undefined;
});

afterAll(async () => {
  await rec?.close();
});

describe('stopping', { timeout: 120_000 }, () => {
  it('SIGTERM: jobs that finish within the stop wait complete, the others go back without counting the attempt, and the supervisor exits well before they would have finished', async () => {
    supervisor = startCli(work('term', '--processes=2', '--concurrency=2', '--stop-wait=2s'), rec.env);
    await liveWorkers(rec, 2);
    await rec.mq.dispatchMany('record', [{ key: 'long-1', ms: 30_000 }, { key: 'long-2', ms: 30_000 }, { key: 'short-1', ms: 800 }, { key: 'short-2', ms: 800 }], { queue: 'term', tries: 3 });
    await waitFor('all four jobs running', async () => (await rec.count(rec.mq.tables.jobs, (query) => query.where({ queue: 'term' }).whereNotNull('reserved_at'))) === 4);

    const signalledAt = Date.now();
    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
    // The long jobs would run 30 s; the stop wait is 2 s.
    expect(Date.now() - signalledAt).toBeLessThan(15_000);

    const left = await rec.mq.knex(rec.mq.tables.jobs).where({ queue: 'term' }).orderBy('id');
    expect(left.map((row) => [parseJsonColumn<{ key: string }>(row.payload).key, row.attempts, row.deferrals, row.reserved_at, row.reserved_by])).toEqual([
      ['long-1', 0, 1, null, null],
      ['long-2', 0, 1, null, null],
    ]);
    const runs = await rec.runs();
    expect(runs.filter((run) => run.job_key.startsWith('short-') && run.finished_at)).toHaveLength(2);
    expect(runs.filter((run) => run.job_key.startsWith('long-')).map((run) => run.finished_at)).toEqual([null, null]);
    expect(await rec.count(rec.mq.tables.workers)).toBe(0);
    await rec.mq.knex(rec.mq.tables.jobs).where({ queue: 'term' }).delete();
  });

  it('a worker process that does not stop within the stop wait is killed, and its job goes back to the queue at once', async () => {
    supervisor = startCli(work('busy', '--supervise', '--stop-wait=1s'), rec.env);
    await liveWorkers(rec, 1);
    const { id } = await rec.mq.dispatch('record', { key: 'busy', busyMs: 20_000 }, { queue: 'busy', tries: 3 });
    await waitFor('the blocking job to start', async () => (await rec.runs({ job_key: 'busy' })).length === 1);

    const signalledAt = Date.now();
    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(15_000);
    expect(supervisor.output()).toContain('stop wait over: killing worker processes');

    const row = await rec.mq.knex(rec.mq.tables.jobs).where({ id }).first();
    expect(row).toMatchObject({ reserved_at: null, reserved_by: null, attempts: 1 });
    expect(row.last_error).toBe('worker process died while running this job: killed by SIGKILL');
    await rec.mq.knex(rec.mq.tables.jobs).where({ id }).delete();
  });

  it('a second SIGTERM kills the workers at once (exit 130) and returns their jobs', async () => {
    supervisor = startCli(work('forced', '--supervise', '--stop-wait=30s'), rec.env);
    await liveWorkers(rec, 1);
    const { id } = await rec.mq.dispatch('record', { key: 'forced', ms: 60_000 }, { queue: 'forced', tries: 3 });
    await waitFor('the job to start', async () => (await rec.runs({ job_key: 'forced' })).length === 1);

    supervisor.child.kill('SIGTERM');
    await waitFor('the graceful stop to begin', () => supervisorLogs(supervisor!).some((line) => line.msg === 'stopping worker processes'));
    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 130, signal: null });
    expect(supervisor.output()).toContain('forced stop: killing worker processes');
    expect(await rec.mq.knex(rec.mq.tables.jobs).where({ id }).first()).toMatchObject({ reserved_at: null, attempts: 1 });
    expect(await rec.count(rec.mq.tables.workers)).toBe(0);
    await rec.mq.knex(rec.mq.tables.jobs).where({ id }).delete();
  });

  it('worker processes whose supervisor was killed with -9 stop by themselves', async () => {
    supervisor = startCli(work('orphans', '--processes=2'), rec.env);
    const workers = await liveWorkers(rec, 2);
    supervisor.child.kill('SIGKILL');
    await supervisor.exited;
    await waitFor('the orphaned workers to unregister', async () => (await rec.workers()).length === 0);
    await waitFor('the orphaned processes to exit', () => workers.every((row) => !isRunning(row.pid)));
    await rec.mq.knex(rec.mq.tables.workers).delete();
  });

  it('a bad setting fails in the supervisor, once, before any worker process starts', async () => {
    supervisor = startCli(['work', '--processes=3', '--jobs', '/nonexistent/jobs.mjs'], rec.env);
    expect(await supervisor.exited).toEqual({ code: 2, signal: null });
    expect(supervisor.output()).toMatch(/^mailq: cannot load job module '\/nonexistent\/jobs\.mjs'/m);
    expect(supervisor.output()).not.toContain('worker process started');
  });
});

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
