/**
 * Claim-ahead (prefetch): a worker holds up to `prefetch` claimed jobs it has not started, in its held
 * set. They are renewed, put back unspent on stop and pause, never started once their lease is in
 * doubt, and never more than the rate limit's tokens.
 */
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import type { WorkerOptions } from '../src/worker/worker.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, openQueue, sleep, waitFor } from './support/queue.js';

let db: TestDatabase;
let mq: Mailq;
const started: number[] = [];
const releases: Array<() => void> = [];

/** Runs until the test lets it go (or its signal fires). */
const held = defineJob({
  name: 'held',
  async handle(_payload: unknown, { job, signal }) {
    started.push(job.id);
    await new Promise<void>((resolve) => {
      releases.push(resolve);
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
  },
});

let ran = 0;
const noop = defineJob({ name: 'noop', handle: () => void ran++ });

const quick = defineJob({
  name: 'quick',
  queue: 'limited',
  schema: z.object({ n: z.number() }),
  rateLimit: { key: 'claim-ahead', limit: 4, per: '1s', margin: 0 },
  handle(_payload, { job }) {
    started.push(job.id);
  },
});

function worker(options: WorkerOptions = {}) {
  return mq.worker({ sleep: '20ms', sweepInterval: 0, heartbeat: 0, ...options });
}

const reservedBy = (workerId: string) => count(mq.knex, 'jobs', { reserved_by: workerId });

beforeAll(async () => {
  db = await createTestDatabase('claim_ahead');
  mq = openQueue(db.url, { jobs: [held, quick, noop], poolMax: 12 });
  await mq.migrate();
});

afterAll(async () => {
  releases.forEach((release) => release());
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  releases.forEach((release) => release());
  releases.length = 0;
  started.length = 0;
  await mq.knex('jobs').delete();
  await mq.knex('failed_jobs').delete();
  await mq.knex(mq.tables.rateLimits).delete();
});

describe('jobs claimed ahead', () => {
  it('wait in the worker reserved and renewed; a stop puts them back with no attempt spent', async () => {
    await mq.dispatchMany(held, Array.from({ length: 8 }, () => ({})));
    const w = worker({ concurrency: 2, prefetch: 4, leaseGrace: '100ms', leaseMax: '600ms', timeout: '10s' });
    const running = w.run();
    await waitFor('two running and four waiting', async () => started.length === 2 && (await reservedBy(w.id)) === 6);
    // Past two whole leases: the waiting ones are renewed like the running ones, nobody may take them.
    await sleep(1_300);
    expect(await reservedBy(w.id)).toBe(6);
    expect(w.stats.buffered).toBe(4);

    const stopped = w.stop();
    await waitFor('the waiting jobs to go back', async () => (await count(mq.knex, 'jobs', { reserved_by: null, deferrals: 1 })) === 4);
    releases.forEach((release) => release());
    await stopped;
    // The two that ran finished; the four that waited are back, attempts untouched; two never claimed.
    expect(started).toHaveLength(2);
    expect(await count(mq.knex, 'jobs')).toBe(6);
    expect(await count(mq.knex, 'jobs', { attempts: 0, reserved_by: null })).toBe(6);
    expect(await count(mq.knex, 'jobs', { deferrals: 1 })).toBe(4);
  });

  it('go back when their queue is paused, while the running ones finish', async () => {
    await mq.dispatchMany(held, Array.from({ length: 6 }, () => ({})), { queue: 'pausable' });
    const w = mq.worker({ queues: ['pausable'], concurrency: 1, prefetch: 3, sleep: '20ms', sweepInterval: 0, heartbeat: '100ms' });
    const running = w.run();
    await waitFor('one running and three waiting', async () => started.length === 1 && (await reservedBy(w.id)) === 4);
    await mq.controls.pause(['pausable']);
    await waitFor('the waiting jobs to go back', async () => (await reservedBy(w.id)) === 1, 5_000);
    releases.forEach((release) => release());
    await waitFor('the running job to finish', async () => (await count(mq.knex, 'jobs')) === 5);
    await sleep(300);
    expect(started).toHaveLength(1);
    expect(await count(mq.knex, 'jobs', { attempts: 0, reserved_by: null })).toBe(5);
    expect(await count(mq.knex, 'jobs', { deferrals: 1 })).toBe(3);
    await mq.controls.resume(['pausable']);
    await w.stop();
    await running;
  });

  it('are never started once their lease is in doubt: a renewal the database cannot confirm lets them go unstarted', async () => {
    const first = await mq.dispatch(held, {});
    const second = await mq.dispatch(held, {});
    const w = worker({ concurrency: 1, prefetch: 1, leaseGrace: '100ms', leaseMax: '1s', timeout: '10s' });
    const lost: Array<[number, string]> = [];
    w.on('job:lease-lost', (job, error) => lost.push([job.id, error.message]));
    const running = w.run();
    await waitFor('one running, one waiting', async () => started.length === 1 && (await reservedBy(w.id)) === 2);

    // Another session locks the waiting job's row: every renewal (one UPDATE for all held jobs) now waits on it.
    const blocker = await mysql.createConnection({ uri: db.url });
    await blocker.query('START TRANSACTION');
    await blocker.query('SELECT id FROM jobs WHERE id = ? FOR UPDATE', [second.id]);
    try {
      await waitFor('both leases to be let go', () => lost.length === 2, 5_000);
      releases.forEach((release) => release());
      await sleep(300);
      // The running job was aborted and the waiting one never started: nothing runs on a doubtful lease.
      expect(started).toEqual([first.id]);
      expect(lost.map(([id]) => id).sort()).toEqual([first.id, second.id].sort());
      expect(lost[0]![1]).toMatch(/lease lost: the database did not confirm its lease/);
    } finally {
      await blocker.query('ROLLBACK');
      await blocker.end();
    }
    await w.stop();
    await running;
    // Nothing was written for them: still reserved by this worker until their leases expire and a sweep returns them.
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    expect(await mq.knex('jobs').whereIn('id', [first.id, second.id]).pluck('attempts')).toEqual([1, 1]);
  });

  it('on a rate-limited queue, never outnumber the tokens the worker holds', async () => {
    await mq.dispatchMany(quick, Array.from({ length: 12 }, (_, n) => ({ n })));
    const w = worker({ queues: ['limited'], concurrency: 2, prefetch: 20 });
    let most = 0;
    const sampling = (async () => {
      while (started.length < 12) {
        most = Math.max(most, await reservedBy(w.id));
        await sleep(5);
      }
    })();
    const running = w.run();
    await sampling;
    await w.stop();
    await running;
    // 4 tokens per second: 12 jobs take three windows, and no claim ever held more than the 4 tokens.
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(4);
    expect(started).toHaveLength(12);
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });

  it('a busy drain with renewals every 500 ms lets go of nothing: a job its own DELETE removed is not taken for lost', async () => {
    ran = 0;
    await mq.dispatchMany(noop, Array.from({ length: 3_000 }, () => ({})));
    // Short leases renew often, so renewals meet DELETEs in flight; not so short that a loaded machine's
    // slow round trip puts a lease in doubt for real (then letting go is right, and this test would flake).
    const w = worker({ concurrency: 10, prefetch: 40, leaseGrace: '100ms', leaseMax: '2s', timeout: '10s', stopWhenEmpty: true });
    const lost: number[] = [];
    w.on('job:lease-lost', (job) => lost.push(job.id));
    await w.run();
    expect(lost).toEqual([]);
    expect(ran).toBe(3_000);
    expect(w.stats.completed).toBe(3_000);
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });
});
