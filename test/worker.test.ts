import { Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { errnoOf, ER } from '../src/db/errors.js';
import { withDatabaseRetry } from '../src/db/retry.js';
import { PermanentError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import { createLogger } from '../src/logger.js';
import type { Mailq } from '../src/mailq.js';
import { JobRows } from '../src/worker/job-rows.js';
import type { Worker } from '../src/worker/worker.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, millisBetween, openQueue, runNode, waitFor } from './support/queue.js';

let db: TestDatabase;
let mq: Mailq;
/** Bare: knows no job, so it dispatches by name without validating (what another app might do). */
let bare: Mailq;
const logLines: string[] = [];

/** Handlers log each attempt here: start time on the database clock, and the row's available_at then. */
async function logAttempt(jobId: number, attempt: number): Promise<void> {
  await mq.knex.raw(
    `INSERT INTO attempt_log (job_id, attempt, started_at, available_at) SELECT id, ?, NOW(3), available_at FROM jobs WHERE id = ?`,
    [attempt, jobId],
  );
}

async function attemptLog(jobId: number): Promise<Array<{ attempt: number; started_at: Date; available_at: Date }>> {
  return mq.knex('attempt_log').where({ job_id: jobId }).orderBy('id');
}

let flakyFails = true;
const flaky = defineJob({
  name: 'flaky',
  tries: 3,
  backoff: [1, 3],
  async handle(_payload: unknown, { job }) {
    await logAttempt(job.id, job.attempt);
    if (flakyFails) throw new Error(`flaky failure on attempt ${job.attempt}`);
  },
});

const abortReasons: string[] = [];
const slow = defineJob({
  name: 'slow',
  schema: z.object({ succeedOnAttempt: z.number() }),
  timeout: '300ms',
  async handle({ succeedOnAttempt }, { job, signal }) {
    await logAttempt(job.id, job.attempt);
    if (job.attempt >= succeedOnAttempt) return;
    // Honours its signal, as handlers should; the worker's timeout is what ends it.
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    abortReasons.push((signal.reason as Error).name);
  },
});

const strict = defineJob({ name: 'strict', schema: z.object({ n: z.number() }), tries: 5, handle: () => undefined });

const order: string[] = [];
const remember = defineJob({ name: 'remember', schema: z.object({ label: z.string() }), handle: ({ label }) => void order.push(label) });

const alwaysFails = defineJob({
  name: 'always-fails',
  handle: () => {
    throw new Error('nope');
  },
});
const failsThrice = defineJob({ name: 'fails-thrice', tries: 3, backoff: 0, handle: alwaysFails.handle });
const permanent = defineJob({
  name: 'permanent',
  tries: 5,
  handle: () => {
    throw new PermanentError('account closed: nothing to retry');
  },
});

let releaseGate: () => void = () => undefined;
const gated = defineJob({
  name: 'gated',
  async handle(_payload: unknown, { job, signal }) {
    // The gate exists before the attempt is logged: a test that saw the log may release it at once.
    const gate = new Promise<void>((resolve) => (releaseGate = resolve));
    await logAttempt(job.id, job.attempt);
    await Promise.race([gate, new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))]);
  },
});
const stubborn = defineJob({
  name: 'stubborn',
  async handle(_payload: unknown, { job, signal }) {
    await logAttempt(job.id, job.attempt);
    await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    abortReasons.push((signal.reason as Error).name);
  },
});

/** Sets its own tries, timeout and backoff; dispatched by name from a process that does not know it. */
const byName = defineJob({
  name: 'by-name',
  tries: 3,
  timeout: '300ms',
  backoff: [0, 1],
  async handle(_payload: unknown, { job, signal }) {
    await logAttempt(job.id, job.attempt);
    if (job.attempt < 3) await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
  },
});

let releaseDeaf: () => void = () => undefined;
/** Ignores its signal: keeps running past its timeout until the test lets it go. */
const deaf = defineJob({
  name: 'deaf',
  timeout: '200ms',
  async handle() {
    await new Promise<void>((resolve) => (releaseDeaf = resolve));
  },
});

const inStepRunning: Array<() => void> = [];
/** Runs until the test lets it finish. */
const inStep = defineJob({ name: 'in-step', handle: () => new Promise<void>((resolve) => inStepRunning.push(resolve)) });

const deferring = defineJob({
  name: 'deferring',
  tries: 1,
  handle(_payload: unknown, { defer }) {
    defer('30s', 'upstream said 429');
  },
});

beforeAll(async () => {
  db = await createTestDatabase('worker');
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  mq = openQueue(db.url, {
    jobs: [flaky, slow, strict, remember, alwaysFails, failsThrice, permanent, gated, stubborn, byName, deaf, deferring, inStep],
    logger: createLogger({ level: 'warn', pretty: false, destination: sink }),
    poolMax: 12,
  });
  bare = openQueue(db.url);
  await mq.migrate();
  await mq.knex.raw('CREATE TABLE attempt_log (id INT AUTO_INCREMENT PRIMARY KEY, job_id BIGINT, attempt INT, started_at DATETIME(3), available_at DATETIME(3))');
});

afterAll(async () => {
  await bare?.close();
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex('jobs').delete();
  await mq.knex('failed_jobs').delete();
  await mq.knex('attempt_log').delete();
  logLines.length = 0;
  abortReasons.length = 0;
  order.length = 0;
});

/** Worker options for tests: quick polls, no background sweep unless asked. */
function testWorker(options: Parameters<Mailq['worker']>[0] = {}): Worker {
  return mq.worker({ sleep: '20ms', sweepInterval: 0, ...options });
}

async function failedRow(uuid: string) {
  return mq.knex('failed_jobs').where({ uuid }).first();
}

describe('retries and failure', () => {
  it('retries follow the backoff on the database clock; the last failure lands in failed_jobs with message and stack', async () => {
    const { id, uuid } = await mq.dispatch(flaky, {});
    const worker = testWorker();
    const failed = new Promise((resolve) => worker.once('job:failed', resolve));
    const running = worker.run();
    await failed;
    await worker.stop();
    await running;

    const log = await attemptLog(id);
    expect(log.map((entry) => entry.attempt)).toEqual([1, 2, 3]);
    // available_at seen by attempt k+1 was set when attempt k failed: failure time + backoff[k].
    // The tolerance (for a loaded machine) stays below the 2 s between the entries, so a wrong entry shows.
    const tolerance = 1_500;
    for (const [index, backoffMs] of [1_000, 3_000].entries()) {
      const failedAround = log[index]!.started_at;
      const nextDue = log[index + 1]!.available_at;
      const delay = await millisBetween(mq.knex, failedAround, nextDue);
      expect(delay, `backoff after attempt ${index + 1}`).toBeGreaterThanOrEqual(backoffMs);
      expect(delay, `backoff after attempt ${index + 1}`).toBeLessThan(backoffMs + tolerance);
      // And the next attempt never starts before it is due.
      expect(await millisBetween(mq.knex, nextDue, log[index + 1]!.started_at)).toBeGreaterThanOrEqual(0);
    }

    expect(await count(mq.knex, 'jobs')).toBe(0);
    const row = await failedRow(uuid);
    expect(row).toMatchObject({ name: 'flaky', queue: 'default', attempts: 3, max_attempts: 3 });
    expect(row.exception).toContain('Error: flaky failure on attempt 3');
    expect(row.exception).toMatch(/\n\s+at .*worker\.test\.ts/);
  });

  it('retry all brings failed jobs back with their identity and attempts reset, and they then succeed', async () => {
    const first = await mq.dispatch(flaky, {}, { tries: 1 });
    const second = await mq.dispatch(flaky, {}, { tries: 1 });
    await testWorker({ concurrency: 2, stopWhenEmpty: true }).run();
    expect(await count(mq.knex, 'failed_jobs')).toBe(2);

    expect(await mq.failed.retry('all')).toEqual({ retried: 2, missing: [], alreadyQueued: [] });
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    // The two failed side by side, so failed_jobs (and so the retried rows) hold them in either order.
    const byUuid = (a: unknown[], b: unknown[]) => (String(a[0]) < String(b[0]) ? -1 : 1);
    const back = await mq.knex('jobs');
    expect(back.map((row) => [row.uuid, row.attempts, row.reserved_at]).sort(byUuid)).toEqual(
      [
        [first.uuid, 0, null],
        [second.uuid, 0, null],
      ].sort(byUuid),
    );

    flakyFails = false;
    try {
      const worker = testWorker({ concurrency: 2, stopWhenEmpty: true });
      expect(await worker.run()).toBe('empty');
      expect(worker.stats).toMatchObject({ completed: 2, failed: 0 });
    } finally {
      flakyFails = true;
    }
    expect(await count(mq.knex, 'jobs')).toBe(0);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });

  it('job options override the worker defaults; jobs without their own use the worker defaults', async () => {
    const own = await mq.dispatch(failsThrice, {});
    const inherits = await mq.dispatch(alwaysFails, {});
    await testWorker({ tries: 2, backoff: 0, concurrency: 2, stopWhenEmpty: true }).run();
    expect((await failedRow(own.uuid)).attempts).toBe(3);
    expect((await failedRow(inherits.uuid)).attempts).toBe(2);
  });

  it("a job dispatched by name where its definition is unknown still runs with the definition's tries, timeout and backoff", async () => {
    const { id } = await bare.dispatch('by-name', {});
    expect(await mq.knex('jobs').where({ id }).first()).toMatchObject({ max_attempts: null, timeout_ms: null, backoff: null });
    // The worker's own defaults would fail it on the first attempt, after a minute.
    const worker = testWorker({ tries: 1, timeout: '60s', backoff: 30 });
    const leases: number[] = [];
    worker.on('job:started', (job) => {
      // The last attempt may finish (and its row go) before this read: only leases seen count.
      void mq.knex('jobs').where({ id: job.id }).first().then(async (row) => row && leases.push(await millisBetween(mq.knex, row.reserved_at, row.lease_until)));
    });
    const completed = new Promise((resolve) => worker.once('job:completed', resolve));
    const running = worker.run();
    await completed;
    await worker.stop();
    await running;

    const log = await attemptLog(id);
    expect(log.map((entry) => entry.attempt)).toEqual([1, 2, 3]);
    expect(worker.stats).toMatchObject({ retried: 2, completed: 1, failed: 0 });
    // Backoff [0, 1]: the third attempt was due a second after the second one failed (its start + ~300 ms).
    expect(await millisBetween(mq.knex, log[1]!.started_at, log[2]!.available_at)).toBeGreaterThanOrEqual(1_000);
    // The lease follows the job's timeout (300 ms + 30 s grace), not the worker's 60 s.
    expect(leases[0]).toBe(30_300);
  });

  it('a PermanentError goes straight to failed_jobs whatever the tries left', async () => {
    const { uuid } = await mq.dispatch(permanent, {});
    await testWorker({ stopWhenEmpty: true }).run();
    const row = await failedRow(uuid);
    expect(row).toMatchObject({ attempts: 1, max_attempts: 5 });
    expect(row.exception).toContain('account closed: nothing to retry');
  });

  it('an unknown job name and a schema-invalid payload fail at once, with no retries burnt', async () => {
    const ghost = await bare.dispatch('ghost', { any: 1 }, { tries: 5 });
    const invalid = await bare.dispatch('strict', { n: 'not a number' }, { tries: 5 });
    const worker = testWorker({ concurrency: 2, stopWhenEmpty: true });
    expect(await worker.run()).toBe('empty');

    const ghostRow = await failedRow(ghost.uuid);
    expect(ghostRow).toMatchObject({ attempts: 1, max_attempts: 5, name: 'ghost' });
    expect(ghostRow.exception).toMatch(/unknown job 'ghost'/);
    const invalidRow = await failedRow(invalid.uuid);
    expect(invalidRow).toMatchObject({ attempts: 1, max_attempts: 5 });
    expect(invalidRow.exception).toMatch(/invalid payload for job 'strict': n: /);
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });
});

describe('timeouts', () => {
  it('aborts the signal with a timeout error and counts the attempt', async () => {
    const retried = await mq.dispatch(slow, { succeedOnAttempt: 2 }, { tries: 2, backoff: 0 });
    const exhausted = await mq.dispatch(slow, { succeedOnAttempt: 99 }, { tries: 1 });
    const worker = testWorker({ concurrency: 2, stopWhenEmpty: true });
    await worker.run();

    expect((await attemptLog(retried.id)).map((entry) => entry.attempt)).toEqual([1, 2]);
    expect(abortReasons).toEqual(['JobTimeoutError', 'JobTimeoutError']);
    expect(worker.stats).toMatchObject({ completed: 1, retried: 1, failed: 1 });
    const row = await failedRow(exhausted.uuid);
    expect(row.attempts).toBe(1);
    expect(row.exception).toContain('job timed out after 300 ms');
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });

  it('a handler that ignores its timeout past the grace period makes the worker stop to be recycled', async () => {
    const { id, uuid } = await mq.dispatch(deaf, {});
    const worker = testWorker({ timeoutGrace: '300ms', stopWait: '100ms' });
    try {
      expect(await worker.run()).toBe('stuck-job');
      // Its handler still runs, so nothing was written for it: the row stays reserved by this worker
      // (attempt counted) until the process exits and its supervisor, or the lease sweep, returns it.
      expect(await mq.knex('jobs').where({ id }).first()).toMatchObject({ reserved_by: worker.id, attempts: 1 });
      expect(await failedRow(uuid)).toBeUndefined();
    } finally {
      releaseDeaf();
    }
  });
});

describe('queues and stopping', () => {
  it("drains the queues in the order listed: ['high', 'low'] runs every high job first", async () => {
    await mq.dispatchMany(remember, [1, 2, 3, 4].map((n) => ({ label: `low-${n}` })), { queue: 'low' });
    await mq.dispatchMany(remember, [1, 2, 3].map((n) => ({ label: `high-${n}` })), { queue: 'high' });
    await testWorker({ queues: ['high', 'low'], concurrency: 1, stopWhenEmpty: true }).run();
    expect(order).toEqual(['high-1', 'high-2', 'high-3', 'low-1', 'low-2', 'low-3', 'low-4']);
  });

  it('graceful stop lets a job that finishes in time complete, and puts the rest back with the attempt not counted', async () => {
    const finishing = await mq.dispatch(gated, {});
    const unfinished = await mq.dispatch(stubborn, {});
    const worker = testWorker({ concurrency: 2, stopWait: '500ms' });
    const running = worker.run();
    await waitFor('both jobs to start', async () => (await count(mq.knex, 'attempt_log')) === 2);

    const stopped = worker.stop();
    releaseGate();
    expect(await stopped).toBe('stopped');
    await running;

    expect(await count(mq.knex, 'jobs', { id: finishing.id })).toBe(0);
    expect(abortReasons).toEqual(['WorkerStopping']);
    const row = await mq.knex('jobs').where({ id: unfinished.id }).first();
    expect(row).toMatchObject({ attempts: 0, deferrals: 1, reserved_at: null, reserved_by: null, lease_until: null });
    expect(row.last_error).toMatch(/put back/);
    expect(worker.stats).toMatchObject({ completed: 1, deferred: 1, failed: 0 });
  });

  it('a deferral puts the job back for its delay without counting the attempt', async () => {
    const { id } = await mq.dispatch(deferring, {});
    const worker = testWorker();
    const deferred = new Promise((resolve) => worker.once('job:deferred', resolve));
    const running = worker.run();
    await deferred;
    await worker.stop();
    await running;

    const row = await mq.knex('jobs').where({ id }).first();
    expect(row).toMatchObject({ attempts: 0, deferrals: 1, reserved_at: null, last_error: 'upstream said 429' });
    expect(await millisBetween(mq.knex, row.created_at, row.available_at)).toBeGreaterThanOrEqual(30_000);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});

describe('claiming', () => {
  it('jobs that finish together free their slots for one claim, not one claim per slot', async () => {
    const claimSizes: number[] = [];
    const original = JobRows.prototype.claim;
    const spy = vi.spyOn(JobRows.prototype, 'claim').mockImplementation(async function (this: JobRows, ...args: Parameters<JobRows['claim']>) {
      const claimed = await original.apply(this, args);
      if (claimed.length > 0) claimSizes.push(args[1]);
      return claimed;
    });
    try {
      await mq.dispatchMany(inStep, Array.from({ length: 12 }, () => ({})));
      const worker = testWorker({ concurrency: 4 });
      let started = 0;
      worker.on('job:started', () => void started++);
      const running = worker.run();
      for (const wave of [4, 8, 12]) {
        await waitFor(`${wave} jobs to start`, () => started === wave);
        // Each finishes in its own callback of one event-loop phase, as timers that expire together do.
        for (const finish of inStepRunning.splice(0)) setImmediate(finish);
      }
      await waitFor('the queue to empty', async () => (await count(mq.knex, 'jobs')) === 0);
      await worker.stop();
      await running;
      // Resolving at the first freed slot claimed 1 job, then 3, and the waves stayed split.
      expect(claimSizes).toEqual([4, 4, 4]);
      expect(worker.stats.completed).toBe(12);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('the worker as a good citizen of its process', () => {
  it('an idle worker does not pile up listeners on its stop signal', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => void warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const polls = vi.spyOn(JobRows.prototype, 'anyDue');
      const worker = testWorker({ queues: ['idle'], sleep: '1ms' });
      const running = worker.run();
      // Well over the 10 listeners Node warns at: each empty poll sleeps on the stop signal.
      await waitFor('30 idle polls', () => polls.mock.calls.length >= 30);
      polls.mockRestore();
      await worker.stop();
      await running;
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.map((warning) => warning.name)).not.toContain('MaxListenersExceededWarning');
  });

  it('stopping with a job running leaves no timer behind: the process exits on its own', async () => {
    const result = await runNode(['test/fixtures/stop-with-running-job.mjs', db.url], { timeoutMs: 20_000 });
    expect(result.signal).toBeNull();
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ reason: 'stopped', stats: { completed: 1 } });
  });
});

describe('expired leases', () => {
  it('the sweep returns a dead worker’s job with its attempt counted, or fails it when no attempts are left', async () => {
    const rows = new JobRows(mq.knex, mq.tables);
    const retryable = await mq.dispatch('remember', { label: 'again' }, { tries: 3 });
    const exhausted = await mq.dispatch('remember', { label: 'last' }, { tries: 1 });
    const claimed = await rows.claim(['default'], 10, 'dead-worker', { maxAttempts: 1, timeoutMs: 60_000, leaseGraceMs: 1_000, leaseMaxMs: 300_000 });
    expect(claimed).toHaveLength(2);
    // A live lease is left alone.
    const worker = testWorker();
    expect(await worker.sweep()).toEqual({ released: 0, failed: 0, removed: 0 });

    await mq.knex('jobs').update({ lease_until: mq.knex.raw('NOW(3) - INTERVAL 1 SECOND') });
    expect(await worker.sweep()).toEqual({ released: 1, failed: 1, removed: 0 });
    expect(await mq.knex('jobs').where({ id: retryable.id }).first()).toMatchObject({ attempts: 1, reserved_at: null, reserved_by: null, lease_until: null });
    const failed = await failedRow(exhausted.uuid);
    expect(failed.attempts).toBe(1);
    expect(failed.exception).toMatch(/lease expired on attempt 1 of 1: worker dead-worker/);
  });
});

describe('deadlocks', () => {
  beforeAll(async () => {
    await mq.knex.raw('CREATE TABLE deadlock_pair (id INT PRIMARY KEY, v INT NOT NULL)');
    await mq.knex.raw('CREATE TABLE ballast (id INT PRIMARY KEY, v INT NOT NULL)');
    await mq.knex('ballast').insert(Array.from({ length: 200 }, (_, id) => ({ id, v: 0 })));
  });

  it('withDatabaseRetry retries the transaction that lost a real deadlock (1213) until it commits', async () => {
    await mq.knex('deadlock_pair').insert([
      { id: 1, v: 0 },
      { id: 2, v: 0 },
    ]);
    let holding = 0;
    let bothHold: () => void = () => undefined;
    const barrier = new Promise<void>((resolve) => (bothHold = resolve));
    const retriedErrnos: Array<number | undefined> = [];

    const crossing = (first: number, second: number) =>
      withDatabaseRetry(
        () =>
          mq.knex.transaction(async (trx) => {
            await trx('deadlock_pair').where({ id: first }).increment('v', 1);
            if (++holding === 2) bothHold();
            await barrier;
            await trx('deadlock_pair').where({ id: second }).increment('v', 1);
          }),
        { onRetry: (error) => retriedErrnos.push(errnoOf(error)) },
      );

    await Promise.all([crossing(1, 2), crossing(2, 1)]);
    expect(retriedErrnos).toEqual([ER.DEADLOCK]);
    // Both transactions committed once: each row was incremented by each of them.
    expect(await mq.knex('deadlock_pair').orderBy('id').select('id', 'v')).toEqual([
      { id: 1, v: 2 },
      { id: 2, v: 2 },
    ]);
  });

  it('a deadlock while moving a job to failed_jobs is retried, not a job failure of its own', async () => {
    const { id, uuid } = await mq.dispatch(permanent, {});
    const errors: Error[] = [];
    const worker = testWorker();
    worker.on('error', (error) => errors.push(error));
    const failedEvents: unknown[] = [];
    worker.on('job:failed', (job) => failedEvents.push(job));

    // This transaction is heavy (many undo records), so InnoDB picks the worker's as the deadlock victim.
    await mq.knex.transaction(async (trx) => {
      await trx('ballast').increment('v', 1);
      // Gap lock at the end of failed_jobs: the worker's INSERT … SELECT (holding a shared lock on the job row) waits here.
      await trx.raw('SELECT id FROM failed_jobs WHERE id > 0 FOR UPDATE');
      void worker.run();
      await waitFor('the worker to wait on failed_jobs', workerWaitsOnFailedJobs);
      // Closing the cycle: the job row is share-locked by the worker. One of the two must be rolled back.
      await trx.raw('SELECT id FROM jobs WHERE id = ? FOR UPDATE', [id]);
    });

    await waitFor('the job to reach failed_jobs', async () => (await count(mq.knex, 'failed_jobs')) === 1);
    await worker.stop();
    expect(failedEvents).toHaveLength(1);
    expect(errors).toEqual([]);
    expect(await count(mq.knex, 'jobs')).toBe(0);
    expect((await failedRow(uuid)).attempts).toBe(1);
    const retries = logLines.map((line) => JSON.parse(line) as { msg: string; err?: { errno?: number } }).filter((entry) => entry.msg === 'retrying fail');
    expect(retries.map((entry) => entry.err?.errno)).toEqual([ER.DEADLOCK]);
  });
});

/** The worker's INSERT into failed_jobs is under way (blocked: it would finish at once otherwise); only this file's database counts. */
async function workerWaitsOnFailedJobs(): Promise<boolean> {
  const [rows] = (await mq.knex.raw(`SELECT COUNT(*) AS n FROM information_schema.processlist WHERE db = ? AND info LIKE 'INSERT INTO \`failed_jobs\`%'`, [db.name])) as [
    Array<{ n: number }>,
  ];
  return Number(rows[0]!.n) > 0;
}
