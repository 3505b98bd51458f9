import { afterAll, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { PermanentError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { holdRowLocks } from './support/lock-wait.js';
import { openQueue, sleep, waitFor } from './support/queue.js';

/**
 * `retry all` takes the list of failed jobs once, when it starts (Laravel does the same): a job
 * that fails again while it runs is a new failure for the next retry, not one this call chases.
 * Otherwise a job that always fails, with a worker running, is retried over and over.
 */

const FAILED = 1_500;

const hopeless = defineJob({
  name: 'hopeless',
  schema: z.object({ n: z.number() }),
  handle({ n }) {
    throw new PermanentError(`job ${n} always fails`);
  },
});

let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('retry-all');
  mq = openQueue(db.url, { jobs: [hopeless], poolMax: 12 });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

/** `n` failed jobs, written straight into failed_jobs (a worker failing 1,500 jobs would only cost time). */
async function seedFailedJobs(n: number): Promise<number[]> {
  await mq.dispatchMany(hopeless, Array.from({ length: n }, (_, index) => ({ n: index })));
  await mq.knex.raw(
    `INSERT INTO failed_jobs (uuid, queue, name, payload, attempts, max_attempts, created_at, exception)
     SELECT uuid, queue, name, payload, 1, max_attempts, created_at, 'seeded failure' FROM jobs ORDER BY id`,
  );
  await mq.knex('jobs').delete();
  return (await mq.knex('failed_jobs').orderBy('id').pluck('id')).map(Number);
}

async function failedIdsAfter(id: number): Promise<number[]> {
  return (await mq.knex('failed_jobs').where('id', '>', id).orderBy('id').pluck('id')).map(Number);
}

it('retries the jobs that were failed when it started, once each, while a worker fails them again', async () => {
  const ids = await seedFailedJobs(FAILED);
  const newestAtStart = ids[ids.length - 1]!;
  // Holds a later chunk until a job of the first has failed again: the race, made certain.
  const held = await holdRowLocks(db.url, 'failed_jobs', { where: 'id = ?', bindings: [ids[1_200]] });
  const worker = mq.worker({ queues: ['default'], concurrency: 10, sleep: '10ms', sweepInterval: 0 });
  const working = worker.run();
  try {
    const retrying = mq.failed.retry('all');
    await waitFor('a retried job to fail again', async () => (await failedIdsAfter(newestAtStart)).length > 0);
    const failedAgain = await failedIdsAfter(newestAtStart);
    await held.release();

    const result = await Promise.race([retrying, sleep(15_000).then(() => 'still retrying after 15 s')]);
    expect(result).toEqual({ retried: FAILED, missing: [], alreadyQueued: [] });
    // Failures newer than the call's start were left for the next retry.
    const stillFailed = new Set(await failedIdsAfter(newestAtStart));
    expect(failedAgain.filter((id) => !stillFailed.has(id))).toEqual([]);
    expect(await mq.knex('failed_jobs').where('id', '<=', newestAtStart).count({ n: '*' })).toEqual([{ n: 0 }]);
  } finally {
    await held.release();
    await worker.stop();
    await working;
  }
});
