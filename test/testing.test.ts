import { AssertionError } from 'node:assert';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createLogger, createMailq, defineJob, InvalidJobError, PermanentError, type Mailq } from '../src/index.js';
import { drain, fakeQueue, runInline } from '../src/testing/index.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

/** Fails its first `failures` runs, then succeeds; counts its runs. */
function flaky(failures: number) {
  const runs: number[] = [];
  const job = defineJob({
    name: `flaky-${failures}`,
    schema: z.object({ n: z.number(), label: z.string().default('none') }),
    tries: 3,
    backoff: [10, 60],
    handle({ n }, { job: { attempt } }) {
      runs.push(n);
      if (attempt <= failures) throw new Error(`attempt ${attempt} broke`);
      return n * 2;
    },
  });
  return { job, runs };
}

describe('runInline', () => {
  it('validates through the schema and JSON, retries up to the tries, and reports the backoff a worker would wait', async () => {
    const { job, runs } = flaky(2);
    const run = await runInline(job, { n: 7 });
    expect(run).toMatchObject({ status: 'completed', attempts: 3, permanent: false, retryDelaysMs: [10_000, 60_000] });
    expect(run.history.map((entry) => entry.outcome)).toEqual(['failed', 'failed', 'completed']);
    expect(runs).toEqual([7, 7, 7]);
  });

  it('fails after the last try with the last error; a dispatch option overrides the tries', async () => {
    const { job } = flaky(5);
    expect(await runInline(job, { n: 1 })).toMatchObject({ status: 'failed', attempts: 3, error: { message: 'attempt 3 broke' } });
    expect(await runInline(job, { n: 1 }, { tries: 1 })).toMatchObject({ status: 'failed', attempts: 1, retryDelaysMs: [] });
  });

  it('throws InvalidJobError for a payload the schema refuses, before running anything', async () => {
    const { job, runs } = flaky(0);
    // @ts-expect-error n must be a number
    await expect(runInline(job, { n: 'seven' })).rejects.toThrow(InvalidJobError);
    expect(runs).toEqual([]);
  });

  it('a PermanentError ends it at once; a timeout fails the attempt and aborts its signal', async () => {
    const permanent = defineJob({ name: 'permanent', tries: 5, handle: () => { throw new PermanentError('never'); } });
    expect(await runInline(permanent, {})).toMatchObject({ status: 'failed', attempts: 1, permanent: true });

    let aborted = false;
    const slow = defineJob({
      name: 'slow',
      timeout: '50ms',
      tries: 2,
      handle: (_payload, { signal }) => new Promise((resolve) => signal.addEventListener('abort', () => { aborted = true; resolve(undefined); })),
    });
    const run = await runInline(slow, {});
    expect(run).toMatchObject({ status: 'failed', attempts: 2, error: { name: 'JobTimeoutError' } });
    expect(aborted).toBe(true);
  });

  it('a deferral ends the run without counting an attempt; a rate-limited job gets a ctx.rateLimit that records pauses', async () => {
    const limited = defineJob({
      name: 'limited',
      rateLimit: { key: 'api', limit: 1, per: '1s' },
      async handle(_payload, context) {
        await context.rateLimit!.acquire();
        await context.rateLimit!.pauseFor('30s');
        context.defer('30s', 'upstream said 429');
      },
    });
    expect(await runInline(limited, {})).toMatchObject({ status: 'deferred', attempts: 0, deferral: { delayMs: 30_000, reason: 'upstream said 429' }, rateLimitPauses: [30_000] });
  });
});

describe('fakeQueue', () => {
  const greet = defineJob({ name: 'greet', schema: z.object({ to: z.string(), loud: z.boolean().default(false) }), queue: 'mail', unique: ({ to }) => to, handle() {} });

  it('records dispatches with what a worker would receive, and answers assertions', async () => {
    const queue = fakeQueue();
    expect(await queue.dispatch(greet, { to: 'ana' }, { delay: '1m' })).toMatchObject({ id: 1, queue: 'mail', skipped: false });
    await queue.dispatch('by-name', { x: 1 });
    expect(queue.jobs.map((job) => [job.name, job.payload, job.delayMs])).toEqual([['greet', { to: 'ana', loud: false }, 60_000], ['by-name', { x: 1 }, 0]]);
    queue.assertDispatched(greet, (payload) => payload.to === 'ana' && !payload.loud);
    queue.assertDispatchedTimes(greet, 1);
    queue.assertNotDispatched(greet, (payload) => payload.to === 'bo');
    expect(queue.count()).toBe(2);
    expect(queue.count('by-name')).toBe(1);
  });

  it('fails assertions with AssertionError, naming what was dispatched', async () => {
    const queue = fakeQueue();
    queue.assertNothingDispatched();
    expect(() => queue.assertDispatched(greet)).toThrow(new AssertionError({ message: "expected a 'greet' job to be dispatched (nothing was dispatched)" }));
    await queue.dispatch(greet, { to: 'ana' });
    expect(() => queue.assertNothingDispatched()).toThrow(/expected nothing to be dispatched, found 1 \(dispatched: greet \{"to":"ana","loud":false\}\)/);
    expect(() => queue.assertDispatchedTimes(greet, 2)).toThrow(AssertionError);
    expect(() => queue.assertNotDispatched(greet)).toThrow(AssertionError);
  });

  it('validates as the real queue does: a bad payload in dispatchMany records nothing; a taken unique key is skipped', async () => {
    const queue = fakeQueue();
    // @ts-expect-error to must be a string
    await expect(queue.dispatchMany(greet, [{ to: 'ana' }, { to: 3 }])).rejects.toThrow("invalid payload for job 'greet' at index 1: to:");
    queue.assertNothingDispatched();
    expect(await queue.dispatchMany(greet, [{ to: 'ana' }, { to: 'bo' }, { to: 'ana' }])).toEqual({ dispatched: 2, skipped: 1, queue: 'mail' });
    expect(await queue.dispatch(greet, { to: 'bo' })).toMatchObject({ id: 2, skipped: true });
  });

  it('records batches, and runs what was dispatched inline, jobs dispatched by those jobs included', async () => {
    const queue = fakeQueue();
    const seen: string[] = [];
    const leaf = defineJob({ name: 'leaf', schema: z.object({ n: z.number() }), handle: ({ n }) => void seen.push(`leaf ${n}`) });
    const fanOut = defineJob({ name: 'fan-out', async handle() { seen.push('fan-out'); await queue.dispatchMany(leaf, [{ n: 1 }, { n: 2 }]); } });
    const batch = await queue.batch(fanOut, [{}], { name: 'night' });
    expect(batch).toMatchObject({ name: 'night', total: 1, skipped: 0 });
    expect(queue.jobs[0]!.batchId).toBe(batch.id);
    const runs = await queue.runAll();
    expect(runs.map((run) => run.status)).toEqual(['completed', 'completed', 'completed']);
    expect(seen).toEqual(['fan-out', 'leaf 1', 'leaf 2']);
    queue.assertDispatchedTimes(leaf, 2);
    expect(await queue.runAll()).toEqual([]);
  });
});

describe('drain', () => {
  let db: TestDatabase;
  let mq: Mailq;
  const done: number[] = [];
  const work = defineJob({ name: 'work', schema: z.object({ n: z.number() }), tries: 2, backoff: [60], handle: ({ n }) => { if (n < 0) throw new Error('negative'); done.push(n); } });
  const elsewhere = defineJob({ name: 'elsewhere', queue: 'other', handle: () => void done.push(100) });

  beforeAll(async () => {
    db = await createTestDatabase('testing-drain');
    mq = createMailq({ databaseUrl: db.url, logger: createLogger({ level: 'silent' }), jobs: [work, elsewhere] });
    await mq.migrate();
  });

  afterAll(async () => {
    await mq?.close();
    await db?.drop();
  });

  it('runs a real worker over the queues of the known jobs until none is due; jobs waiting for later are counted', async () => {
    await mq.dispatchMany(work, [{ n: 1 }, { n: 2 }, { n: -1 }]);
    await mq.dispatch(elsewhere, {});
    await mq.dispatch(work, { n: 3 }, { delay: '1h' });
    const result = await drain(mq);
    expect(result).toMatchObject({ completed: 3, retried: 1, failed: 0, waiting: 2 });
    expect(done.sort((a, b) => a - b)).toEqual([1, 2, 100]);
  });

  it('throws when the queue is not drained in time', async () => {
    const stuck = defineJob({ name: 'stuck', queue: 'stuck', timeout: '10s', handle: (_payload, { signal }) => new Promise((resolve) => signal.addEventListener('abort', resolve)) });
    await mq.dispatch(stuck, {});
    await expect(drain(mq, { queues: ['stuck'], jobs: [stuck], timeout: '300ms', stopWait: '100ms' })).rejects.toThrow(/drain: the worker stopped \(stopped\) before the queues stuck were empty within 300 ms/);
  });
});
