import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseJsonColumn } from '../src/db/json.js';
import { InvalidJobError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, millisBetween, openQueue } from './support/queue.js';

const greet = defineJob({
  name: 'greet',
  schema: z.object({ to: z.string().min(1), times: z.number().int().positive().default(1) }),
  tries: 4,
  backoff: [5, '1m'],
  timeout: '90s',
  handle: () => undefined,
});

const ran: string[] = [];
const remember = defineJob({
  name: 'remember',
  schema: z.object({ label: z.string() }),
  handle: ({ label }) => void ran.push(label),
});

let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('dispatch');
  mq = openQueue(db.url, { jobs: [greet, remember] });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex('jobs').delete();
  ran.length = 0;
});

async function databaseNow(): Promise<string> {
  const [rows] = (await mq.knex.raw('SELECT NOW(3) AS now')) as [Array<{ now: Date }>];
  return (rows[0]!.now as Date).toISOString().replace('T', ' ').replace('Z', '');
}

describe('dispatch', () => {
  it('writes one row: validated payload, the job options, due now on the database clock', async () => {
    const before = await databaseNow();
    const job = await mq.dispatch(greet, { to: 'Ana' });
    const after = await databaseNow();

    const row = await mq.knex('jobs').where({ id: job.id }).first();
    expect(row).toMatchObject({ uuid: job.uuid, queue: 'default', name: 'greet', attempts: 0, deferrals: 0, max_attempts: 4, timeout_ms: 90_000, priority: 0, reserved_at: null });
    expect(parseJsonColumn(row.payload)).toEqual({ to: 'Ana', times: 1 });
    expect(parseJsonColumn(row.backoff)).toEqual([5000, 60_000]);
    expect(job.uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(await millisBetween(mq.knex, before, row.available_at)).toBeGreaterThanOrEqual(0);
    expect(await millisBetween(mq.knex, row.available_at, after)).toBeGreaterThanOrEqual(0);
  });

  it('rejects an invalid payload naming the field, and writes nothing', async () => {
    await expect(mq.dispatch(greet, { to: '' })).rejects.toThrow(InvalidJobError);
    await expect(mq.dispatch(greet, { to: 'Ana', times: -1 } as never)).rejects.toThrow(/invalid payload for job 'greet': times:/);
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });

  it('delay: available_at is at least NOW(3) + delay on the database clock', async () => {
    const before = await databaseNow();
    const { id } = await mq.dispatch(greet, { to: 'Bo' }, { delay: '90s', queue: 'later' });
    const after = await databaseNow();
    const row = await mq.knex('jobs').where({ id }).first();
    expect(row.queue).toBe('later');
    expect(await millisBetween(mq.knex, before, row.available_at)).toBeGreaterThanOrEqual(90_000);
    expect(await millisBetween(mq.knex, after, row.available_at)).toBeLessThanOrEqual(90_000);

    // A delay in seconds (a number) means the same.
    const plain = await mq.dispatch(greet, { to: 'Cy' }, { delay: 2 });
    const plainRow = await mq.knex('jobs').where({ id: plain.id }).first();
    expect(await millisBetween(mq.knex, after, plainRow.available_at)).toBeGreaterThanOrEqual(2_000);

    // A delayed job is not claimed before its time.
    const worker = mq.worker({ queues: ['later'], stopWhenEmpty: true, sweepInterval: 0 });
    expect(await worker.run()).toBe('empty');
    expect(await count(mq.knex, 'jobs', { queue: 'later' })).toBe(1);
  });

  it('priority: lower runs first, then first in first out', async () => {
    await mq.dispatch(remember, { label: 'p5-a' }, { priority: 5 });
    await mq.dispatch(remember, { label: 'p0-a' });
    await mq.dispatch(remember, { label: 'p-3' }, { priority: -3 });
    await mq.dispatch(remember, { label: 'p5-b' }, { priority: 5 });
    await mq.dispatch(remember, { label: 'p0-b' }, { priority: 0 });

    await mq.worker({ concurrency: 1, stopWhenEmpty: true, sweepInterval: 0 }).run();
    expect(ran).toEqual(['p-3', 'p0-a', 'p0-b', 'p5-a', 'p5-b']);
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });

  it("in the caller's transaction: a rollback leaves no row, a commit leaves one", async () => {
    await expect(
      mq.knex.transaction(async (trx) => {
        await mq.dispatch(greet, { to: 'rolled back' }, { transaction: trx });
        throw new Error('business write failed');
      }),
    ).rejects.toThrow('business write failed');
    expect(await count(mq.knex, 'jobs')).toBe(0);

    let seenOutside = -1;
    const job = await mq.knex.transaction(async (trx) => {
      const dispatched = await mq.dispatch(greet, { to: 'committed' }, { transaction: trx });
      seenOutside = await count(mq.knex, 'jobs');
      return dispatched;
    });
    expect(seenOutside).toBe(0);
    expect(await mq.knex('jobs').where({ id: job.id }).first()).toMatchObject({ uuid: job.uuid, name: 'greet' });
  });

  it("dispatchMany in the caller's transaction commits and rolls back with it", async () => {
    await expect(
      mq.knex.transaction(async (trx) => {
        await mq.dispatchMany(greet, [{ to: 'a' }, { to: 'b' }, { to: 'c' }], { transaction: trx, chunkSize: 2 });
        throw new Error('nope');
      }),
    ).rejects.toThrow('nope');
    expect(await count(mq.knex, 'jobs')).toBe(0);
    await mq.knex.transaction((trx) => mq.dispatchMany(greet, [{ to: 'a' }, { to: 'b' }, { to: 'c' }], { transaction: trx, chunkSize: 2 }));
    expect(await count(mq.knex, 'jobs')).toBe(3);
  });
});

describe('dispatchMany', () => {
  it('writes in chunks, reporting progress after each, every row once', async () => {
    const payloads = Array.from({ length: 2_500 }, (_, n) => ({ to: `user-${n}` }));
    const progress: Array<[number, number]> = [];
    const result = await mq.dispatchMany(greet, payloads, { chunkSize: 1_000, queue: 'bulk', priority: 2, onProgress: (written, total) => progress.push([written, total]) });

    expect(result).toEqual({ dispatched: 2_500, skipped: 0, queue: 'bulk' });
    expect(progress).toEqual([
      [1_000, 2_500],
      [2_000, 2_500],
      [2_500, 2_500],
    ]);
    const [rows] = (await mq.knex.raw(
      `SELECT COUNT(*) AS n, COUNT(DISTINCT uuid) AS uuids, COUNT(DISTINCT JSON_VALUE(payload, '$.to')) AS recipients,
              MIN(priority) AS minPriority, MAX(priority) AS maxPriority, MIN(max_attempts) AS tries
         FROM jobs WHERE queue = 'bulk'`,
    )) as [Array<Record<string, number>>];
    expect(rows[0]).toEqual({ n: 2_500, uuids: 2_500, recipients: 2_500, minPriority: 2, maxPriority: 2, tries: 4 });
  });

  it('one bad payload rejects the call with its index and reason, and writes NO row', async () => {
    const payloads: Array<{ to: string }> = Array.from({ length: 2_500 }, (_, n) => ({ to: `user-${n}` }));
    payloads[2_345] = { to: 42 } as never;
    let progressCalls = 0;
    const attempt = mq.dispatchMany(greet, payloads, { chunkSize: 1_000, onProgress: () => progressCalls++ });
    await expect(attempt).rejects.toThrow(InvalidJobError);
    await expect(attempt).rejects.toThrow(/invalid payload for job 'greet' at index 2345: to: /);
    expect(progressCalls).toBe(0);
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });

  it('splits a chunk by size so one INSERT never nears max_allowed_packet', async () => {
    // 40 payloads of ~300 KB: 12 MB in all, which one INSERT on MariaDB's default 16 MB packet would risk.
    const big = 'x'.repeat(300_000);
    const progress: number[] = [];
    await mq.dispatchMany(greet, Array.from({ length: 40 }, (_, n) => ({ to: `${n}${big}` })), { onProgress: (written) => progress.push(written) });
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.at(-1)).toBe(40);
    expect(await count(mq.knex, 'jobs')).toBe(40);
  });
});
