import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { MailqError, PermanentError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, openQueue } from './support/queue.js';

const doomed = defineJob({
  name: 'doomed',
  schema: z.object({ n: z.number() }),
  tries: 4,
  handle({ n }) {
    throw new PermanentError(`cannot process ${n}\nsecond line of detail`);
  },
});

let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('failed');
  mq = openQueue(db.url, { jobs: [doomed], poolMax: 16 });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex('jobs').delete();
  await mq.knex('failed_jobs').delete();
});

/** Dispatches `n` doomed jobs on `queue` and lets a real worker fail them. Returns their failed ids, oldest first. */
async function failJobs(n: number, queue = 'default', options: { priority?: number } = {}): Promise<number[]> {
  const first = await mq.knex('failed_jobs').max({ id: 'id' });
  await mq.dispatchMany(doomed, Array.from({ length: n }, (_, index) => ({ n: index })), { queue, ...options });
  await mq.worker({ queues: [queue], concurrency: 8, stopWhenEmpty: true, sweepInterval: 0 }).run();
  const rows = await mq.knex('failed_jobs').where('id', '>', Number(first[0]?.id ?? 0)).orderBy('id').select('id');
  expect(rows).toHaveLength(n);
  return rows.map((row: { id: number }) => Number(row.id));
}

describe('list, show, count', () => {
  it('lists newest first with the first line of the exception as the reason; filters by queue; pages', async () => {
    const mail = await failJobs(3, 'mail');
    const other = await failJobs(2, 'other');

    const all = await mq.failed.list();
    expect(all.map((job) => job.id)).toEqual([...mail, ...other].reverse());
    expect(all[0]).toMatchObject({ name: 'doomed', queue: 'other', attempts: 1, maxAttempts: 4 });
    expect(all[0]!.reason).toMatch(/^PermanentError: cannot process \d$/);
    expect(all[0]!.failedAt).toBeInstanceOf(Date);

    expect((await mq.failed.list({ queue: 'mail' })).map((job) => job.id)).toEqual([...mail].reverse());
    const page = await mq.failed.list({ limit: 2 });
    expect(page.map((job) => job.id)).toEqual([other[1], other[0]]);
    expect((await mq.failed.list({ limit: 2, beforeId: page[1]!.id })).map((job) => job.id)).toEqual([mail[2], mail[1]]);

    expect(await mq.failed.count()).toBe(5);
    expect(await mq.failed.count('mail')).toBe(3);
  });

  it('shows one failed job with its payload and full exception; an unknown id is a clear error', async () => {
    const [id] = await failJobs(1);
    const job = await mq.failed.show(id!);
    expect(job.payload).toEqual({ n: 0 });
    expect(job.exception).toContain('second line of detail');
    expect(job.exception).toMatch(/\n\s+at /);
    await expect(mq.failed.show(987_654)).rejects.toThrow(MailqError);
    await expect(mq.failed.show(987_654)).rejects.toThrow('no failed job with id 987654');
  });
});

describe('retry', () => {
  it('moves the given ids back, attempts reset, identity and options kept; reports missing ids', async () => {
    const ids = await failJobs(3, 'mail', { priority: 7 });
    const before = await mq.knex('failed_jobs').whereIn('id', ids.slice(0, 2)).orderBy('id');

    expect(await mq.failed.retry([ids[0]!, ids[1]!, 999_999])).toEqual({ retried: 2, missing: [999_999], alreadyQueued: [] });
    expect((await mq.knex('failed_jobs').select('id')).map((row: { id: number }) => row.id)).toEqual([ids[2]]);
    const back = await mq.knex('jobs').orderBy('id');
    expect(back.map((row) => ({ uuid: row.uuid, queue: row.queue, priority: row.priority, max_attempts: row.max_attempts, attempts: row.attempts, reserved_at: row.reserved_at }))).toEqual(
      before.map((row) => ({ uuid: row.uuid, queue: 'mail', priority: 7, max_attempts: 4, attempts: 0, reserved_at: null })),
    );
  });

  it('all, or all of one queue', async () => {
    await failJobs(3, 'mail');
    await failJobs(2, 'other');
    expect(await mq.failed.retry('all', { queue: 'other' })).toEqual({ retried: 2, missing: [], alreadyQueued: [] });
    expect(await count(mq.knex, 'jobs', { queue: 'other' })).toBe(2);
    expect(await count(mq.knex, 'failed_jobs')).toBe(3);
    expect(await mq.failed.retry('all')).toEqual({ retried: 3, missing: [], alreadyQueued: [] });
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    expect(await count(mq.knex, 'jobs')).toBe(5);
  });

  it('is atomic: concurrent retries of the same ids move each job exactly once', async () => {
    const ids = await failJobs(240);
    const uuids = (await mq.knex('failed_jobs').select('uuid')).map((row: { uuid: string }) => row.uuid).sort();

    const callers = 6;
    const results = await Promise.all(Array.from({ length: callers }, (_, index) => mq.failed.retry(index % 2 ? [...ids].reverse() : ids)));

    expect(results.reduce((sum, result) => sum + result.retried, 0)).toBe(ids.length);
    // Each call accounts for every id it was given: moved by it, or no longer a failed job.
    for (const result of results) expect(result.retried + result.missing.length).toBe(ids.length);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    const back = (await mq.knex('jobs').select('uuid')).map((row: { uuid: string }) => row.uuid).sort();
    expect(back).toEqual(uuids);
  });

  it('is atomic for concurrent retry all as well', async () => {
    await failJobs(150);
    const results = await Promise.all([mq.failed.retry('all'), mq.failed.retry('all'), mq.failed.retry('all')]);
    expect(results.reduce((sum, result) => sum + result.retried, 0)).toBe(150);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    const [row] = await mq.knex('jobs').select(mq.knex.raw('COUNT(*) AS n, COUNT(DISTINCT uuid) AS uuids'));
    expect(row).toEqual({ n: 150, uuids: 150 });
  });
});

describe('forget and flush', () => {
  it('forget deletes the given ids and says how many existed', async () => {
    const ids = await failJobs(3);
    expect(await mq.failed.forget([ids[0]!, 123_456])).toBe(1);
    expect(await mq.failed.forget([])).toBe(0);
    expect((await mq.knex('failed_jobs').orderBy('id').select('id')).map((row: { id: number }) => row.id)).toEqual(ids.slice(1));
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });

  it('flush deletes all, or only those that failed more than N hours ago, or one queue', async () => {
    const old = await failJobs(2, 'mail');
    const recent = await failJobs(2, 'mail');
    const otherQueue = await failJobs(1, 'other');
    await mq.knex('failed_jobs').whereIn('id', [...old, ...otherQueue]).update({ failed_at: mq.knex.raw('NOW(3) - INTERVAL 3 HOUR') });

    expect(await mq.failed.flush({ hours: 2, queue: 'mail' })).toBe(2);
    expect((await mq.knex('failed_jobs').orderBy('id').select('id')).map((row: { id: number }) => row.id)).toEqual([...recent, ...otherQueue]);
    expect(await mq.failed.flush({ hours: 4 })).toBe(0);
    expect(await mq.failed.flush({ hours: 2 })).toBe(1);
    expect(await mq.failed.flush()).toBe(2);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});
