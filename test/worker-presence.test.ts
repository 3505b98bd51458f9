import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMailq, defineJob, type Mailq, type Worker } from '../src/index.js';
import { createLogger } from '../src/logger.js';
import { JobRows } from '../src/worker/job-rows.js';
import { WorkerRows } from '../src/worker/worker-rows.js';
import { StatsRows } from '../src/stats/stats-rows.js';
import { parseJsonColumn } from '../src/db/json.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { waitFor } from './support/processes.js';

/** A job whose handler waits until the test lets it finish. */
function gatedJob(name: string) {
  let open: () => void = () => undefined;
  let gate = new Promise<void>((resolve) => (open = resolve));
  const job = defineJob<{ n: number }>({
    name,
    async handle() {
      await gate;
    },
  });
  return {
    job,
    open: () => open(),
    close: () => {
      gate = new Promise<void>((resolve) => (open = resolve));
    },
  };
}

const ok = defineJob<{ n: number }>({ name: 'ok', handle: () => undefined });
const boom = defineJob<{ n: number }>({
  name: 'boom',
  handle: () => {
    throw new Error('boom');
  },
});
const gated = gatedJob('gated');

let db: TestDatabase;
let mq: Mailq;

const logger = createLogger({ level: 'silent' });
const fast = { heartbeat: '100ms', sleep: '20ms' } as const;

async function workerRow(id: string) {
  return mq.knex(mq.tables.workers).where({ id }).first();
}

/** Resolves after the worker has beaten `beats` more times: by then its last control read is done. */
async function beatsOf(worker: Worker, beats: number): Promise<void> {
  let seen = (await workerRow(worker.id))?.last_beat_at?.getTime() ?? 0;
  for (let i = 0; i < beats; i++) {
    const before = seen;
    await waitFor(`a beat of ${worker.id}`, async () => {
      seen = (await workerRow(worker.id))?.last_beat_at?.getTime() ?? 0;
      return seen > before;
    });
  }
}

beforeAll(async () => {
  db = await createTestDatabase('worker presence');
  mq = createMailq({ databaseUrl: db.url, jobs: [ok, boom, gated.job], logger });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

describe('workers table', () => {
  it('registers a running worker with host, pid, queues and counts, adds its counts to the per-minute stats, and deletes its row when it stops', async () => {
    await mq.dispatchMany(ok, [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: 'p1' });
    await mq.dispatch(boom, { n: 4 }, { queue: 'p1', tries: 1 });
    await mq.dispatch(gated.job, { n: 5 }, { queue: 'p1' });
    const worker = mq.worker({ ...fast, queues: ['p1'], concurrency: 2 });
    const run = worker.run();

    const row = await waitFor('the worker row with 3 done, 1 failed, 1 running', async () => {
      const found = await workerRow(worker.id);
      return found && Number(found.jobs_done) === 3 && Number(found.jobs_failed) === 1 && Number(found.running) === 1 ? found : undefined;
    });
    expect(row).toMatchObject({ kind: 'worker', host: hostname(), pid: process.pid, concurrency: 2, state: 'running', heartbeat_ms: 100 });
    expect(parseJsonColumn(row.queues)).toEqual(['p1']);
    expect(Number(row.memory_bytes)).toBeGreaterThan(10 * 1024 * 1024);
    expect(row.last_beat_at.getTime()).toBeGreaterThan(row.started_at.getTime());

    gated.open();
    await waitFor('the queue to drain', async () => (await mq.knex(mq.tables.jobs).where({ queue: 'p1' }).count({ n: '*' }))[0]!.n == 0);
    await worker.stop();
    await run;
    expect(await workerRow(worker.id)).toBeUndefined();
    const stats = await mq.knex(mq.tables.queueStats).where({ queue: 'p1' }).sum({ completed: 'completed', failed: 'failed' });
    expect(stats[0]).toMatchObject({ completed: '4', failed: '1' });
  });

  it('adds counts from many workers into one row per queue and minute', async () => {
    const stats = new StatsRows(mq.knex, mq.tables);
    const counts = (completed: number) => new Map([['agg', { completed, failed: 1, retried: 0, deferred: 2, runtimeMs: 10 * completed }]]);
    await stats.add(counts(5));
    await stats.add(counts(7));
    const rows = await mq.knex(mq.tables.queueStats).where({ queue: 'agg' });
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ completed: 12, failed: 2, deferred: 4, runtime_ms: 120 });
    expect((await stats.recent()).get('agg')?.last5Minutes.completed).toBe(12);
  });

  it('shows a silent worker as not alive and prunes rows silent for longer than the prune age', async () => {
    const rows = new WorkerRows(mq.knex, mq.tables);
    const identity = { kind: 'worker' as const, host: 'elsewhere', pid: 1, queues: ['x'], concurrency: 1, heartbeatMs: 1000 };
    await rows.register({ ...identity, id: 'gone-long-ago' }, { state: 'running' });
    await rows.register({ ...identity, id: 'silent-a-while' }, { state: 'running' });
    await rows.register({ ...identity, id: 'alive' }, { state: 'running' });
    await mq.knex(mq.tables.workers).where({ id: 'gone-long-ago' }).update({ last_beat_at: mq.knex.raw('NOW(3) - INTERVAL 1 HOUR') });
    await mq.knex(mq.tables.workers).where({ id: 'silent-a-while' }).update({ last_beat_at: mq.knex.raw('NOW(3) - INTERVAL 10 SECOND') });

    const listed = new Map((await rows.list()).map((record) => [record.id, record]));
    expect(listed.get('alive')?.alive).toBe(true);
    expect(listed.get('silent-a-while')?.alive).toBe(false);

    expect(await rows.prune(15 * 60_000)).toBe(1);
    const left = (await mq.knex(mq.tables.workers).whereIn('id', ['gone-long-ago', 'silent-a-while', 'alive']).pluck('id')).sort();
    expect(left).toEqual(['alive', 'silent-a-while']);
    await rows.remove(left);
  });
});

describe('pause and resume', () => {
  it('a worker skips a queue paused before it started, and drains it once resumed', async () => {
    await mq.controls.pause(['pa']);
    await mq.dispatchMany(ok, [{ n: 1 }, { n: 2 }], { queue: 'pa' });
    await mq.dispatchMany(ok, [{ n: 3 }, { n: 4 }], { queue: 'pb' });

    expect(await mq.worker({ ...fast, queues: ['pa', 'pb'], stopWhenEmpty: true }).run()).toBe('empty');
    const left = await mq.knex(mq.tables.jobs).whereIn('queue', ['pa', 'pb']).select('queue', 'attempts', 'reserved_at');
    expect(left).toEqual([
      { queue: 'pa', attempts: 0, reserved_at: null },
      { queue: 'pa', attempts: 0, reserved_at: null },
    ]);

    expect(await mq.controls.resume(['pa'])).toBe(1);
    expect(await mq.worker({ ...fast, queues: ['pa', 'pb'], stopWhenEmpty: true }).run()).toBe('empty');
    expect(await mq.knex(mq.tables.jobs).whereIn('queue', ['pa', 'pb']).count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  it('a running worker stops claiming from a queue paused meanwhile (at its next heartbeat) and picks it up again after resume', async () => {
    const worker = mq.worker({ ...fast, queues: ['pc'] });
    const run = worker.run();
    await waitFor('the worker row', () => workerRow(worker.id));
    await mq.controls.pause(['pc']);
    await beatsOf(worker, 2);

    const { id } = await mq.dispatch(ok, { n: 1 }, { queue: 'pc' });
    await beatsOf(worker, 3);
    expect(await mq.knex(mq.tables.jobs).where({ id }).first()).toMatchObject({ attempts: 0, reserved_at: null });

    await mq.controls.resume(['pc']);
    await waitFor('the job to run after resume', async () => !(await mq.knex(mq.tables.jobs).where({ id }).first()));
    await worker.stop();
    await run;
  });

  it("pause --all ('*') pauses every queue", async () => {
    await mq.controls.pause(['*']);
    const { id } = await mq.dispatch(ok, { n: 1 }, { queue: 'pd' });
    expect(await mq.worker({ ...fast, queues: ['pd'], stopWhenEmpty: true }).run()).toBe('empty');
    expect(await mq.knex(mq.tables.jobs).where({ id }).first()).toMatchObject({ attempts: 0 });
    await mq.controls.resume(['*']);
    expect(await mq.worker({ ...fast, queues: ['pd'], stopWhenEmpty: true }).run()).toBe('empty');
    expect(await mq.knex(mq.tables.jobs).where({ id }).first()).toBeUndefined();
  });
});

describe('restart signal', () => {
  it('a running worker finishes its current job and stops with reason restart; a worker started after the signal keeps running', async () => {
    gated.close();
    const { id } = await mq.dispatch(gated.job, { n: 1 }, { queue: 'rs' });
    const before = mq.worker({ ...fast, queues: ['rs'] });
    const stopped = before.run();
    await waitFor('the job to start', async () => (await mq.knex(mq.tables.jobs).where({ id }).first())?.reserved_by === before.id);

    await mq.controls.requestRestart();
    await waitFor('the worker to see the signal', () => before.isStopping);
    const after = mq.worker({ ...fast, queues: ['rs'] });
    const running = after.run();

    gated.open();
    expect(await stopped).toBe('restart');
    expect(await mq.knex(mq.tables.jobs).where({ id }).first()).toBeUndefined();
    expect(before.stats.completed).toBe(1);

    await waitFor('the new worker row', () => workerRow(after.id));
    await beatsOf(after, 3);
    expect(after.isStopping).toBe(false);
    await after.stop();
    expect(await running).toBe('stopped');
  });

  it('a restart for one queue reaches only the workers of that queue', async () => {
    const other = mq.worker({ ...fast, queues: ['rq-other'] });
    const target = mq.worker({ ...fast, queues: ['rq-target'] });
    const runs = [other.run(), target.run()];
    await waitFor('both rows', async () => (await workerRow(other.id)) && (await workerRow(target.id)));
    await mq.controls.requestRestart('rq-target');
    expect(await runs[1]).toBe('restart');
    await beatsOf(other, 2);
    expect(other.isStopping).toBe(false);
    await other.stop();
    await runs[0];
  });
});

describe('memory limit', () => {
  it('a worker above its memory limit stops with reason memory before claiming more', async () => {
    const { id } = await mq.dispatch(ok, { n: 1 }, { queue: 'mem' });
    expect(await mq.worker({ ...fast, queues: ['mem'], memoryLimit: 1024 * 1024 }).run()).toBe('memory');
    expect(await mq.knex(mq.tables.jobs).where({ id }).first()).toMatchObject({ attempts: 0, reserved_at: null });
  });
});

describe('releaseDeadWorker', () => {
  it("returns a dead worker's reservations at once, fails those on their last attempt, and leaves other workers' jobs alone", async () => {
    const rows = new JobRows(mq.knex, mq.tables);
    const lastTry = await mq.dispatch(ok, { n: 1 }, { queue: 'dead', tries: 1 });
    const retryable = await mq.dispatchMany(ok, [{ n: 2 }, { n: 3 }], { queue: 'dead', tries: 3 });
    expect(retryable.dispatched).toBe(2);
    const defaults = { maxAttempts: 1, timeoutMs: 60_000, leaseGraceMs: 30_000, leaseMaxMs: 300_000 };
    const claimedByDead = await rows.claim(['dead'], 3, 'dead-worker', defaults);
    expect(claimedByDead).toHaveLength(3);
    const alive = await mq.dispatch(ok, { n: 4 }, { queue: 'dead' });
    expect(await rows.claim(['dead'], 1, 'live-worker', defaults)).toHaveLength(1);

    expect(await rows.releaseDeadWorker('dead-worker', 'killed by SIGKILL')).toEqual({ released: 2, failed: 1, removed: 0 });

    const left = await mq.knex(mq.tables.jobs).where({ queue: 'dead' }).orderBy('id');
    expect(left.map((row) => [row.reserved_by, row.attempts])).toEqual([
      [null, 1],
      [null, 1],
      ['live-worker', 1],
    ]);
    expect(left[0].last_error).toContain('worker process died while running this job: killed by SIGKILL');
    expect(left[2].id).toBe(alive.id);
    const failed = await mq.failed.list({ queue: 'dead' });
    expect(failed.map((job) => job.uuid)).toEqual([lastTry.uuid]);
    expect(failed[0]!.reason).toBe('worker process died on attempt 1 of 1: killed by SIGKILL');
    expect(await rows.releaseDeadWorker('dead-worker', 'again')).toEqual({ released: 0, failed: 0, removed: 0 });
  });
});
