/**
 * "Nothing lost, nothing run twice" (DESIGN.md, the held set): every job a worker holds, at any
 * stage, keeps its lease and is finished or put back by statements that match its reservation.
 * Each test provokes one path that used to lose a job or run it twice, for real, on the real server.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import { JobRows } from '../src/worker/job-rows.js';
import type { Worker, WorkerOptions } from '../src/worker/worker.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, openQueue, sleep, waitFor } from './support/queue.js';

let db: TestDatabase;
let mq: Mailq;

interface Run {
  jobId: number;
  attempt: number;
  worker: string;
  startedAt: number;
  endedAt?: number;
}
const runs: Run[] = [];

/** Records each run's interval, so overlapping runs of one job show. */
async function recorded<T>(job: { id: number; attempt: number }, worker: string, work: () => Promise<T>): Promise<T> {
  const run: Run = { jobId: job.id, attempt: job.attempt, worker, startedAt: performance.now() };
  runs.push(run);
  try {
    return await work();
  } finally {
    run.endedAt = performance.now();
  }
}

const workerOf = (ctx: { logger: { bindings(): Record<string, unknown> } }) => String(ctx.logger.bindings().worker ?? '?');

const sleeper = defineJob({
  name: 'sleeper',
  schema: z.object({ ms: z.number() }),
  tries: 3,
  async handle({ ms }, ctx) {
    await recorded(ctx.job, workerOf(ctx), () => sleep(ms));
  },
});

/** Ignores its AbortSignal: runs its full time even past its timeout. */
const deaf = defineJob({
  name: 'deaf',
  schema: z.object({ ms: z.number() }),
  tries: 2,
  backoff: 0,
  timeout: '200ms',
  async handle({ ms }, ctx) {
    await recorded(ctx.job, workerOf(ctx), () => sleep(ms));
  },
});

/** Overlapping runs of one job: [earlier, later] pairs. */
function overlaps(): Array<[Run, Run]> {
  const found: Array<[Run, Run]> = [];
  for (const a of runs) {
    for (const b of runs) {
      if (a === b || a.jobId !== b.jobId || a.startedAt > b.startedAt) continue;
      if ((a.endedAt ?? Infinity) > b.startedAt) found.push([a, b]);
    }
  }
  return found;
}

function runsOf(jobId: number): Run[] {
  return runs.filter((run) => run.jobId === jobId);
}

function worker(options: WorkerOptions = {}): Worker {
  return mq.worker({ sleep: '20ms', sweepInterval: 0, heartbeat: 0, ...options });
}

/** A queue whose reservation UPDATE the server refuses: a claim that fails after earlier queues committed. */
async function trapClaimsOn(queue: string): Promise<void> {
  await mq.knex.raw('DROP TRIGGER IF EXISTS claim_trap');
  await mq.knex.raw(`CREATE TRIGGER claim_trap BEFORE UPDATE ON jobs FOR EACH ROW
    BEGIN
      IF NEW.queue = '${queue}' AND NEW.reserved_by IS NOT NULL AND OLD.reserved_by IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'claim trap: this reservation is refused';
      END IF;
    END`);
}

beforeAll(async () => {
  db = await createTestDatabase('lifecycle');
  mq = openQueue(db.url, { jobs: [sleeper, deaf], poolMax: 12 });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex.raw('DROP TRIGGER IF EXISTS claim_trap');
  await mq.knex('jobs').delete();
  await mq.knex('failed_jobs').delete();
  runs.length = 0;
});

describe('a claim that fails half-way', () => {
  it('jobs already claimed from an earlier queue are run or put back, never left reserved to wait out their lease', async () => {
    await trapClaimsOn('trapped');
    const first = await mq.dispatchMany(sleeper, [{ ms: 10 }, { ms: 10 }], { queue: 'first' });
    expect(first.dispatched).toBe(2);
    await mq.dispatch(sleeper, { ms: 10 }, { queue: 'trapped' });

    const w = worker({ queues: ['first', 'trapped'], concurrency: 4 });
    await expect(w.run()).rejects.toThrow(/claim trap/);

    const firstRows = await mq.knex('jobs').where({ queue: 'first' });
    // Each job of the first queue either ran once (and is gone) or is back, unreserved, with no attempt spent.
    for (const row of firstRows) expect(row).toMatchObject({ reserved_by: null, lease_until: null, attempts: 0 });
    expect(firstRows.length + runs.length).toBe(2);
    expect(overlaps()).toEqual([]);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    expect(await count(mq.knex, 'jobs', { queue: 'trapped', attempts: 0 })).toBe(1);
  });
});

describe('an error that escapes the worker loop', () => {
  it('still drains: the running job keeps its lease and finishes once; no other worker runs it meanwhile', async () => {
    await trapClaimsOn('trapped');
    const { id } = await mq.dispatch(sleeper, { ms: 2_500 }, { queue: 'first' });
    // A short lease (1 s, renewed every 250 ms): without renewal another worker's sweep takes the job.
    const failing = worker({ queues: ['first', 'trapped'], concurrency: 2, timeout: '10s', leaseGrace: '200ms', leaseMax: '1s' });
    const ended = failing.run().then(
      () => 'resolved',
      (error: Error) => error.message,
    );
    await waitFor('the long job to start', () => runsOf(id).length === 1);
    await mq.dispatch(sleeper, { ms: 10 }, { queue: 'trapped' });
    const rescuer = worker({ queues: ['first'], sweepInterval: '100ms' });
    const rescuing = rescuer.run();

    expect(await ended).toMatch(/claim trap/);
    // The failing worker returned only once its running job had finished.
    expect(runsOf(id)[0]!.endedAt).toBeDefined();
    await sleep(1_500);
    await rescuer.stop();
    await rescuing;
    expect(runsOf(id)).toHaveLength(1);
    expect(overlaps()).toEqual([]);
    expect(await count(mq.knex, 'jobs', { id })).toBe(0);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});

describe('a finished job waiting for its grouped DELETE', () => {
  it('keeps its lease: another worker’s sweep never hands it out again', async () => {
    const { id } = await mq.dispatch(sleeper, { ms: 1 });
    // The DELETE waits 3 s for company, three times the lease (1 s: renewed every quarter, so a busy
    // machine's late renewal tick does not lose it; the old code lost it however the machine ran).
    const finisher = worker({ completionWindow: '3s', timeout: '10s', leaseGrace: '100ms', leaseMax: '1s' });
    const sweeper = worker({ sweepInterval: '100ms' });
    const finishing = finisher.run();
    await waitFor('the job to run', () => runsOf(id).length === 1);
    const sweeping = sweeper.run();
    await waitFor('the DELETE', async () => (await count(mq.knex, 'jobs')) === 0, 8_000);
    await sleep(300);
    await Promise.all([finisher.stop(), sweeper.stop()]);
    await Promise.all([finishing, sweeping]);
    expect(runsOf(id)).toHaveLength(1);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});

describe('a handler that runs past its timeout', () => {
  it('its job is not retried while the handler still runs: the retry is written when the handler returns', async () => {
    const { id } = await mq.dispatch(deaf, { ms: 800 });
    const w = worker({ concurrency: 2, timeoutGrace: '5s', stopWhenEmpty: true });
    await w.run();
    expect(runsOf(id).map((run) => run.attempt)).toEqual([1, 2]);
    expect(overlaps()).toEqual([]);
    expect(await count(mq.knex, 'failed_jobs')).toBe(1);
  });
});

describe('finishing statements match the reservation they finish', () => {
  it('a late statement for an earlier reservation leaves a newer reservation of the same row by the same worker alone', async () => {
    const rows = new JobRows(mq.knex, mq.tables);
    const defaults = { maxAttempts: 3, timeoutMs: 1_000, leaseGraceMs: 1_000, leaseMaxMs: 60_000 };
    const { id } = await mq.dispatch(sleeper, { ms: 1 });
    const [first] = await rows.claim(['default'], 1, 'w1', defaults);
    await rows.defer([first!], 'w1', 0, 'put back');
    const [second] = await rows.claim(['default'], 1, 'w1', defaults);
    expect(second).toMatchObject({ id, attempt: 1, deferrals: 1 });

    // Every finishing statement of the first reservation arrives late (its reply was lost, it was sent again):
    await rows.defer([first!], 'w1', 0, 'put back, sent again');
    expect(await rows.retryLater({ ...first!, batchId: null }, 'w1', 0, 'failed')).toBe('not-ours');
    expect(await rows.fail(first!, 'w1', 'failed for good')).toBe(false);
    await rows.complete([{ ...first!, batchId: null }], 'w1');
    expect(await rows.renewLeases([first!], 'w1', 1_000, 60_000)).toEqual([id]);

    // …and the second reservation is untouched, while its own statements still work.
    expect(await mq.knex('jobs').where({ id }).first()).toMatchObject({ reserved_by: 'w1', attempts: 1, deferrals: 1 });
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    expect(await rows.renewLeases([second!], 'w1', 1_000, 60_000)).toEqual([]);
    await rows.complete([{ ...second!, batchId: null }], 'w1');
    expect(await count(mq.knex, 'jobs', { id })).toBe(0);
  });
});

describe('a reservation the worker can no longer vouch for', () => {
  it('when another worker has taken the job over, the run is aborted with LeaseLostError and nothing is written for it', async () => {
    const reasons: string[] = [];
    const listening = defineJob({
      name: 'listening',
      async handle(_payload: unknown, { signal }) {
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
        reasons.push((signal.reason as Error).name);
      },
    });
    const w = mq.worker({ jobs: [listening], sleep: '20ms', sweepInterval: 0, heartbeat: 0, timeout: '10s', leaseGrace: '100ms', leaseMax: '800ms' });
    const lost = new Promise<Error>((resolve) => w.once('job:lease-lost', (_job, error) => resolve(error)));
    const { id } = await mq.dispatch('listening', {});
    const running = w.run();
    await waitFor('the job to start', async () => (await mq.knex('jobs').where({ id }).first())?.reserved_by === w.id);
    // What a sweep and another worker's claim would leave behind:
    await mq.knex('jobs').where({ id }).update({ reserved_by: 'someone-else', attempts: 2 });

    expect((await lost).message).toMatch(/lease lost: .*another worker/);
    await waitFor('the handler to see its signal', () => reasons.length === 1);
    expect(reasons).toEqual(['LeaseLostError']);
    await w.stop();
    await running;
    expect(await mq.knex('jobs').where({ id }).first()).toMatchObject({ reserved_by: 'someone-else', attempts: 2, deferrals: 0 });
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    expect(w.stats).toMatchObject({ completed: 0, failed: 0, retried: 0, deferred: 0 });
  });
});

describe('a claim whose reply is lost', () => {
  it('the undo puts back only what the worker does not hold: a completed job waiting for its DELETE is not run again', async () => {
    // Once, the reservation of a 'trap' job sleeps inside the claim transaction, long enough for the
    // test to kill the worker's connection there: the claim's reply is lost. (The flag lives in a
    // non-transactional table, so the killed statement's rollback does not re-arm the trap.)
    await mq.knex.raw('CREATE TABLE IF NOT EXISTS trap_armed (armed INT) ENGINE=Aria');
    await mq.knex.raw('DELETE FROM trap_armed');
    await mq.knex.raw('INSERT INTO trap_armed VALUES (1)');
    await mq.knex.raw(`CREATE TRIGGER claim_trap BEFORE UPDATE ON jobs FOR EACH ROW
      BEGIN
        IF NEW.name = 'trap' AND NEW.reserved_by IS NOT NULL AND OLD.reserved_by IS NULL AND (SELECT armed FROM trap_armed) = 1 THEN
          UPDATE trap_armed SET armed = 0;
          SET @slept = SLEEP(5);
        END IF;
      END`);
    const trap = defineJob({ name: 'trap', handle: (_payload: unknown, ctx) => recorded(ctx.job, workerOf(ctx), async () => undefined) });
    const first = await mq.dispatch(sleeper, { ms: 1 });
    const trapped = await mq.dispatch('trap', {});
    // Concurrency 1: the first job completes, then waits 2 s for its grouped DELETE while the next claim runs.
    const w = mq.worker({ jobs: [trap], sleep: '20ms', sweepInterval: 0, heartbeat: 0, completionWindow: '2s' });
    const running = w.run();
    const sleeping = await waitFor('the claim to sleep in the trap', async () => {
      const [rows] = (await mq.knex.raw(`SELECT id FROM information_schema.PROCESSLIST WHERE db = ? AND state = 'User sleep'`, [db.name])) as [Array<{ id: number }>];
      return rows[0]?.id;
    });
    expect(runsOf(first.id)).toHaveLength(1);
    await mq.knex.raw(`KILL CONNECTION ${Number(sleeping)}`);

    await waitFor('both jobs to finish', async () => (await count(mq.knex, 'jobs')) === 0 && runsOf(trapped.id).length === 1, 15_000);
    await sleep(300);
    await w.stop();
    await running;
    expect(runsOf(first.id)).toHaveLength(1);
    expect(runsOf(trapped.id)).toHaveLength(1);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});
