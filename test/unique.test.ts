import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createLogger, createMailq, defineJob, type Mailq } from '../src/index.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, sleep, waitFor } from './support/queue.js';

const syncMailbox = defineJob({
  name: 'sync-one',
  queue: 'unique-test',
  schema: z.object({ taxpayerId: z.string(), reason: z.string().optional() }),
  unique: ({ taxpayerId }) => taxpayerId,
  handle() {},
});

let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('unique');
  mq = createMailq({ databaseUrl: db.url, jobs: [syncMailbox], poolMax: 30, logger: createLogger({ level: 'silent' }) });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

async function jobRows(): Promise<Array<{ id: number; unique_key: string | null; payload: unknown }>> {
  return mq.knex(mq.tables.jobs).select('id', 'unique_key', 'payload').orderBy('id');
}

describe('unique jobs', () => {
  it('skips a second dispatch while the first is pending, and reports the job that holds the key', async () => {
    await mq.knex(mq.tables.jobs).delete();
    const first = await mq.dispatch(syncMailbox, { taxpayerId: 'T1' });
    const second = await mq.dispatch(syncMailbox, { taxpayerId: 'T1', reason: 'manual' });
    expect(first.skipped).toBe(false);
    expect(second).toMatchObject({ skipped: true, id: first.id, uuid: first.uuid });
    const rows = await jobRows();
    expect(rows).toHaveLength(1);
    expect(rows[0]!.unique_key).toBe('sync-one:T1');
  });

  it('leaves exactly one job when many connections dispatch the same key at once', async () => {
    await mq.knex(mq.tables.jobs).delete();
    // 25 separate pool connections race on one key, 10 rounds, plus bulk dispatches that overlap.
    const results = await Promise.all(Array.from({ length: 25 }, () => mq.dispatch(syncMailbox, { taxpayerId: 'RACE' })));
    const bulk = await Promise.all(
      Array.from({ length: 8 }, (_, n) => mq.dispatchMany(syncMailbox, Array.from({ length: 50 }, (_, i) => ({ taxpayerId: `B${(i + n * 10) % 80}` })))),
    );
    expect(results.filter((result) => !result.skipped)).toHaveLength(1);
    const winner = results.find((result) => !result.skipped)!;
    expect(results.every((result) => result.id === winner.id)).toBe(true);
    const rows = await jobRows();
    expect(rows.filter((row) => row.unique_key === 'sync-one:RACE')).toHaveLength(1);
    // 8 × 50 payloads over 80 distinct keys: every key once, and the counts say so.
    expect(rows.filter((row) => row.unique_key?.startsWith('sync-one:B'))).toHaveLength(80);
    expect(bulk.reduce((sum, result) => sum + result.dispatched, 0)).toBe(80);
    expect(bulk.reduce((sum, result) => sum + result.skipped, 0)).toBe(8 * 50 - 80);
  });

  it('counts duplicates inside one dispatchMany call as skipped', async () => {
    await mq.knex(mq.tables.jobs).delete();
    const result = await mq.dispatchMany(syncMailbox, [{ taxpayerId: 'A' }, { taxpayerId: 'B' }, { taxpayerId: 'A' }]);
    expect(result).toMatchObject({ dispatched: 2, skipped: 1 });
    expect(await jobRows()).toHaveLength(2);
  });

  it('frees the key when the job completes, and when it fails', async () => {
    await mq.knex(mq.tables.jobs).delete();
    const flaky = defineJob({
      name: 'unique-flaky',
      queue: 'unique-run',
      unique: (payload: { n: number }) => String(payload.n),
      handle(payload: { n: number }) {
        if (payload.n === 2) throw new Error('boom');
      },
    });
    await mq.dispatchMany(flaky, [{ n: 1 }, { n: 2 }]);
    expect((await mq.dispatch(flaky, { n: 1 })).skipped).toBe(true);
    await mq.worker({ queues: ['unique-run'], jobs: [flaky], stopWhenEmpty: true, sleep: '10ms' }).run();
    expect(await mq.knex(mq.tables.jobs).where('queue', 'unique-run').count({ n: '*' })).toEqual([{ n: 0 }]);
    expect(await mq.failed.count('unique-run')).toBe(1);
    const again = await mq.dispatchMany(flaky, [{ n: 1 }, { n: 2 }]);
    expect(again).toMatchObject({ dispatched: 2, skipped: 0 });
  });

  it('a retried failed job comes back holding its key; one whose key a pending job holds leaves failed_jobs as already queued', async () => {
    await mq.knex(mq.tables.jobs).delete();
    await mq.knex(mq.tables.failedJobs).delete();
    const failing = defineJob({
      name: 'unique-failing',
      queue: 'unique-retry',
      unique: (payload: { n: number }) => String(payload.n),
      handle() {
        throw new Error('upstream down');
      },
    });
    await mq.dispatchMany(failing, [{ n: 1 }, { n: 2 }]);
    await mq.worker({ queues: ['unique-retry'], jobs: [failing], stopWhenEmpty: true, sleep: '10ms' }).run();
    const failed = await mq.knex(mq.tables.failedJobs).select('id', 'uuid', 'unique_key').orderBy('id');
    expect(failed.map((row) => row.unique_key)).toEqual(['unique-failing:1', 'unique-failing:2']);
    expect((await mq.failed.show(Number(failed[0]!.id))).uniqueKey).toBe('unique-failing:1');

    // Meanwhile someone dispatched n=2 again: its key is taken when the operator retries everything.
    const fresh = await mq.dispatch(failing, { n: 2 });
    const result = await mq.failed.retry('all');
    expect(result).toEqual({ retried: 1, missing: [], alreadyQueued: [{ id: Number(failed[1]!.id), heldBy: fresh.id }] });
    expect(await mq.failed.count('unique-retry')).toBe(0);
    const rows = await mq.knex(mq.tables.jobs).where('queue', 'unique-retry').select('id', 'uuid', 'unique_key', 'attempts').orderBy('unique_key');
    expect(rows).toEqual([
      { id: expect.any(Number), uuid: failed[0]!.uuid, unique_key: 'unique-failing:1', attempts: 0 },
      { id: fresh.id, uuid: fresh.uuid, unique_key: 'unique-failing:2', attempts: 0 },
    ]);
    // The retried job holds its key again: a new dispatch of n=1 is a duplicate.
    expect(await mq.dispatch(failing, { n: 1 })).toMatchObject({ skipped: true, uuid: failed[0]!.uuid });
  });

  it('takes the key from the dispatch option, and `unique: false` dispatches without one', async () => {
    await mq.knex(mq.tables.jobs).delete();
    expect((await mq.dispatch('adhoc', { a: 1 }, { unique: 'nightly' })).skipped).toBe(false);
    expect((await mq.dispatch('adhoc', { a: 2 }, { unique: 'nightly' })).skipped).toBe(true);
    expect((await mq.dispatch(syncMailbox, { taxpayerId: 'T9' }, { unique: false })).skipped).toBe(false);
    expect((await mq.dispatch(syncMailbox, { taxpayerId: 'T9' }, { unique: false })).skipped).toBe(false);
    const rows = await jobRows();
    expect(rows.map((row) => row.unique_key)).toEqual(['adhoc:nightly', null, null]);
  });

  it('writes a skipped dispatch inside a caller transaction that rolls back as nothing at all', async () => {
    await mq.knex(mq.tables.jobs).delete();
    await mq.knex
      .transaction(async (trx) => {
        const job = await mq.dispatch(syncMailbox, { taxpayerId: 'TX' }, { transaction: trx });
        expect(job.skipped).toBe(false);
        throw new Error('rollback');
      })
      .catch(() => undefined);
    expect(await jobRows()).toHaveLength(0);
    expect((await mq.dispatch(syncMailbox, { taxpayerId: 'TX' })).skipped).toBe(false);
  });

  it('rejects an empty key with a clear error and writes nothing', async () => {
    await mq.knex(mq.tables.jobs).delete();
    await expect(mq.dispatch(syncMailbox, { taxpayerId: '' })).rejects.toThrow("unique key for job 'sync-one' must be a non-empty string");
    expect(await jobRows()).toHaveLength(0);
  });
});

describe('what an open unique dispatch locks', () => {
  it('only its own keys: a worker still claims unrelated jobs, and a dispatch of other keys does not wait', async () => {
    await mq.knex(mq.tables.jobs).delete();
    const unrelated = defineJob({ name: 'unrelated', queue: 'unique-unrelated', handle() {} });
    // A small table, as on a quiet queue: where a full scan is the cheapest plan for a list of keys.
    await mq.dispatchMany(unrelated, Array.from({ length: 5 }, (_, n) => ({ n })));
    const held = await mq.dispatch(syncMailbox, { taxpayerId: 'M-HELD' });

    // Session A: an app transaction dispatches keys L00, L02 … L38 plus one that is taken, and stays open.
    const trx = await mq.knex.transaction();
    try {
      const keys = Array.from({ length: 20 }, (_, n) => `L${String(n * 2).padStart(2, '0')}`);
      const result = await mq.dispatchMany(syncMailbox, [...keys, 'M-HELD'].map((taxpayerId) => ({ taxpayerId })), { transaction: trx });
      expect(result).toMatchObject({ dispatched: 20, skipped: 1 });

      // Meanwhile a worker claims and runs the unrelated jobs.
      const worker = mq.worker({ queues: ['unique-unrelated'], jobs: [unrelated], sleep: '10ms' });
      const running = worker.run();
      try {
        await waitFor('the worker to run the 5 unrelated jobs', async () => (await count(mq.knex, mq.tables.jobs, { queue: 'unique-unrelated' })) === 0, 5_000);
      } finally {
        await worker.stop();
        await running;
      }

      // And another dispatcher's keys, between A's keys and after all of them, go in at once. (Not
      // a key just below M-HELD: inserting a duplicate locks the gap below the key it met, see README.)
      const startedAt = Date.now();
      const other = mq.dispatchMany(syncMailbox, ['L01', 'L21', 'N1'].map((taxpayerId) => ({ taxpayerId })));
      const outcome = await Promise.race([other, sleep(3_000).then(() => 'still waiting after 3 s' as const)]);
      expect(outcome).toMatchObject({ dispatched: 3, skipped: 0 });
      expect(Date.now() - startedAt).toBeLessThan(3_000);
      await trx.commit();
      await other;
    } finally {
      if (!trx.isCompleted()) await trx.rollback();
    }
    const rows = await jobRows();
    expect(rows.map((row) => row.unique_key).filter((key) => key?.startsWith('sync-one:L'))).toHaveLength(22);
    expect(rows.find((row) => row.unique_key === 'sync-one:M-HELD')?.id).toBe(held.id);
  });
});
