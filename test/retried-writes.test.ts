import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { doomed, keyed, note } from './support/write-jobs.js';
import { openLockWaitQueue, type LockWaitQueue } from './support/lock-wait.js';
import { count } from './support/queue.js';

/**
 * Every write the library retries on a lock conflict, retried for real: another connection holds
 * row locks until one of the call's statements has waited out the queue's lock wait (1 s, per
 * session) and failed with 1205; then the call retries and succeeds. What it reports must be
 * what the tables hold.
 */

const LOCK_WAIT_SECONDS = 1;


let db: TestDatabase;
let queue: LockWaitQueue;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('retried-writes');
  queue = openLockWaitQueue(db.url, LOCK_WAIT_SECONDS, { jobs: [note, keyed, doomed] });
  mq = queue.mq;
  await mq.migrate();
});

afterAll(async () => {
  await queue?.close();
  await db?.drop();
});

beforeEach(async () => {
  for (const table of ['jobs', 'failed_jobs', 'job_batches']) await mq.knex(table).delete();
});

function underLockWait<T>(table: string, call: () => Promise<T>): Promise<T> {
  return queue.underLockWait(table, call);
}

function payloads(n: number): Array<{ n: number }> {
  return Array.from({ length: n }, (_, index) => ({ n: index }));
}

async function payloadNumbers(): Promise<number[]> {
  const rows = (await mq.knex('jobs').select('payload')) as Array<{ payload: string | { n: number } }>;
  return rows.map((row) => (typeof row.payload === 'string' ? (JSON.parse(row.payload) as { n: number }) : row.payload).n).sort((a, b) => a - b);
}

describe('dispatchMany', () => {
  it('rows without unique keys: after a lock-wait retry, reports 1,000 and jobs holds those 1,000', async () => {
    const result = await underLockWait('jobs', () => mq.dispatchMany(note, payloads(1_000)));
    expect(result).toEqual({ dispatched: 1_000, skipped: 0, queue: 'default' });
    expect(await count(mq.knex, 'jobs')).toBe(1_000);
    expect(await payloadNumbers()).toEqual(payloads(1_000).map((payload) => payload.n));
  });

  it('rows with unique keys: a key taken before the call is skipped, the rest land, counts match the table', async () => {
    const taken = await mq.dispatch(keyed, { n: 3 });
    const result = await underLockWait('jobs', () => mq.dispatchMany(keyed, payloads(200)));
    expect(result).toEqual({ dispatched: 199, skipped: 1, queue: 'default' });
    expect(await count(mq.knex, 'jobs')).toBe(200);
    expect(await mq.knex('jobs').where({ unique_key: 'keyed:k3' }).pluck('id')).toEqual([taken.id]);
  });
});

describe('dispatch', () => {
  it('without a unique key: the id it reports is the one row in jobs', async () => {
    const job = await underLockWait('jobs', () => mq.dispatch(note, { n: 7 }));
    expect(job.skipped).toBe(false);
    expect(await mq.knex('jobs').select('id', 'uuid')).toEqual([{ id: job.id, uuid: job.uuid }]);
  });

  it('with a unique key: inserted once; a second dispatch of the key is skipped and names the holder', async () => {
    const first = await underLockWait('jobs', () => mq.dispatch(keyed, { n: 1 }));
    expect(first.skipped).toBe(false);
    expect(await mq.knex('jobs').select('id', 'uuid')).toEqual([{ id: first.id, uuid: first.uuid }]);

    const again = await underLockWait('jobs', () => mq.dispatch(keyed, { n: 1 }));
    expect(again).toEqual({ id: first.id, uuid: first.uuid, queue: 'default', skipped: true });
    expect(await count(mq.knex, 'jobs')).toBe(1);
  });
});

describe('batch', () => {
  it('one batch row whose counts are the jobs in the table', async () => {
    const created = await underLockWait('jobs', () => mq.batch(note, payloads(300), { name: 'locked', chunkSize: 100 }));
    expect(created).toMatchObject({ total: 300, skipped: 0 });
    expect(await mq.knex('job_batches').select('id', 'total_jobs', 'pending_jobs')).toEqual([{ id: created.id, total_jobs: 300, pending_jobs: 300 }]);
    expect(await count(mq.knex, 'jobs', { batch_id: created.id })).toBe(300);
    expect(await payloadNumbers()).toEqual(payloads(300).map((payload) => payload.n));
  });

  it('with unique keys: a taken key is skipped and not counted in the batch', async () => {
    await mq.dispatch(keyed, { n: 0 });
    const created = await underLockWait('jobs', () => mq.batch(keyed, payloads(50)));
    expect(created).toMatchObject({ total: 49, skipped: 1 });
    expect(await mq.knex('job_batches').select('total_jobs', 'pending_jobs')).toEqual([{ total_jobs: 49, pending_jobs: 49 }]);
    expect(await count(mq.knex, 'jobs', { batch_id: created.id })).toBe(49);
  });
});

/** Lets a real worker fail every waiting job; returns the failed ids. */
async function failAll(): Promise<number[]> {
  await mq.worker({ queues: ['default'], concurrency: 8, stopWhenEmpty: true, sweepInterval: 0 }).run();
  return (await mq.knex('failed_jobs').orderBy('id').pluck('id')).map(Number);
}

describe('failed jobs', () => {
  it('retry by id: each failed job is moved back once, and the call says how many', async () => {
    await mq.dispatchMany(doomed, payloads(20));
    const ids = await failAll();
    expect(ids).toHaveLength(20);
    const result = await underLockWait('jobs', () => mq.failed.retry(ids));
    expect(result).toEqual({ retried: 20, missing: [], alreadyQueued: [] });
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    expect(await payloadNumbers()).toEqual(payloads(20).map((payload) => payload.n));
  });

  it('retry all of a batch: the batch counts its jobs pending again exactly once', async () => {
    // One job on a queue no worker here serves keeps the batch open, so the retry reopens its failures.
    const entries = [...payloads(10).map((payload) => ({ job: doomed, payload })), { job: note, payload: { n: 99 }, options: { queue: 'later' } }];
    const batch = await mq.batch(entries);
    await failAll();
    expect(await mq.batches.find(batch.id)).toMatchObject({ pending: 1, failed: 10, state: 'running' });
    const result = await underLockWait('jobs', () => mq.failed.retry('all', { batchId: batch.id }));
    expect(result.retried).toBe(10);
    expect(await count(mq.knex, 'jobs', { batch_id: batch.id })).toBe(11);
    expect(await mq.batches.find(batch.id)).toMatchObject({ total: 11, pending: 11, failed: 0, failedJobIds: [] });
  });

  it('forget: the count it reports is the rows it deleted', async () => {
    await mq.dispatchMany(doomed, payloads(5));
    const ids = await failAll();
    const forgotten = await underLockWait('failed_jobs', () => mq.failed.forget([ids[0]!, ids[1]!, 999_999]));
    expect(forgotten).toBe(2);
    expect((await mq.knex('failed_jobs').orderBy('id').pluck('id')).map(Number)).toEqual(ids.slice(2));
  });

  it('flush: the count it reports is the rows it deleted', async () => {
    await mq.dispatchMany(doomed, payloads(5));
    await failAll();
    const flushed = await underLockWait('failed_jobs', () => mq.failed.flush());
    expect(flushed).toBe(5);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});

describe('clear', () => {
  it('removes the waiting jobs, in and out of batches, and reports exactly those', async () => {
    await mq.dispatchMany(note, payloads(40));
    const batch = await mq.batch(note, payloads(10));
    const [cleared] = await underLockWait('jobs', () => mq.clear(['default']));
    expect(cleared).toEqual({ queue: 'default', removed: 50, cancelledBatches: [batch.id] });
    expect(await count(mq.knex, 'jobs')).toBe(0);
    expect(await mq.batches.find(batch.id)).toMatchObject({ pending: 0, state: 'cancelled' });
  });
});
