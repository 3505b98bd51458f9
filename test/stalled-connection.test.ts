import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defineJob, type Mailq } from '../src/index.js';
import { isConnectionError } from '../src/db/errors.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { openQueue, waitFor } from './support/queue.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';

/**
 * A stalled connection (nothing comes back, nothing closes) is worse than a closed one: without a
 * bound, a statement on it waits forever and so does whoever sent it. Every stall here is real: the
 * proxy between mailq and the server stops forwarding.
 */
const STALL_CHECK = '500ms';
const CONNECT_TIMEOUT = '1s';

let db: TestDatabase;
let proxy: TcpProxy;
let mq: Mailq | undefined;

function openThroughProxy(options: Parameters<typeof openQueue>[1] = {}): Mailq {
  const url = new URL(proxy.urlThrough(db.url));
  url.searchParams.set('stallCheck', STALL_CHECK);
  url.searchParams.set('connectTimeout', CONNECT_TIMEOUT);
  mq = openQueue(url.toString(), options);
  return mq;
}

/** Resolves with how a statement ended and how long it took. */
async function timed(statement: Promise<unknown>): Promise<{ ms: number; error?: unknown; value?: unknown }> {
  const startedAt = Date.now();
  try {
    const value = await statement;
    return { ms: Date.now() - startedAt, value };
  } catch (error) {
    return { ms: Date.now() - startedAt, error };
  }
}

/** Fails the test instead of hanging it: the bug this file is about is a wait without end. */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms))]);
}

beforeAll(async () => {
  db = await createTestDatabase('stalled_connection');
  const admin = openQueue(db.url);
  await admin.migrate();
  await admin.close();
});

afterEach(async () => {
  proxy?.forward();
  await mq?.close();
  mq = undefined;
  await proxy?.close();
});

afterAll(async () => {
  await db?.drop();
});

describe('a stalled connection', () => {
  it('fails the statement on it soon after the stall check, and the next statement gets a fresh connection', async () => {
    proxy = await startTcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 3306) });
    const { knex } = openThroughProxy();
    await knex.raw('SELECT 1');
    proxy.stall('open');

    const stalled = await within(8_000, timed(knex.raw('SELECT 2')));
    expect(isConnectionError(stalled.error)).toBe(true);
    expect((stalled.error as { code?: string }).code).toBe('MAILQ_CONNECTION_STALLED');
    expect(stalled.ms).toBeGreaterThanOrEqual(400);
    expect(stalled.ms).toBeLessThan(3_000);

    const [rows] = (await within(8_000, knex.raw('SELECT 3 AS three'))) as [Array<{ three: number }>];
    expect(rows[0]!.three).toBe(3);
  });

  it('when the server cannot be reached at all, fails within the stall check plus the connect timeout, and works again once it can', async () => {
    proxy = await startTcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 3306) });
    const { knex } = openThroughProxy();
    await knex.raw('SELECT 1');
    proxy.stall();

    const stalled = await within(10_000, timed(knex.raw('SELECT 2')));
    expect(isConnectionError(stalled.error)).toBe(true);
    expect(stalled.ms).toBeLessThan(4_000);

    proxy.forward();
    const [rows] = (await within(8_000, knex.raw('SELECT 3 AS three'))) as [Array<{ three: number }>];
    expect(rows[0]!.three).toBe(3);
  });

  it('leaves alone a slow statement that the server is still running', async () => {
    proxy = await startTcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 3306) });
    const { knex } = openThroughProxy();
    const slow = await within(10_000, timed(knex.raw('SELECT SLEEP(2) AS slept')));
    expect(slow.error).toBeUndefined();
    expect(slow.ms).toBeGreaterThanOrEqual(1_900);
  });
});

describe('a worker whose connections go dark', () => {
  it('carries on over fresh connections and runs every job once', async () => {
    const JOBS = 200;
    const handled: number[] = [];
    const tick = defineJob({
      name: 'tick',
      async handle(_payload: unknown, { job }) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        handled.push(job.id);
      },
    });
    proxy = await startTcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 3306) });
    const queue = openThroughProxy({ jobs: [tick] });
    await queue.dispatchMany(tick, Array.from({ length: JOBS }, () => ({})));
    const worker = queue.worker({ concurrency: 4, sleep: '20ms', heartbeat: '500ms', timeout: '30s' });
    const running = worker.run();

    await waitFor('a quarter of the jobs', () => handled.length >= JOBS / 4);
    // Every connection the worker has open now goes dark for good; new ones reach the server.
    proxy.stall('open');
    const darkAt = Date.now();
    const doneAtStall = handled.length;
    await waitFor('a job finished after the stall', () => handled.length > doneAtStall + 4, 10_000);
    const resumedAfterMs = Date.now() - darkAt;
    await waitFor('the queue to empty', async () => Number((await queue.knex('jobs').count({ n: '*' }))[0]!.n) === 0, 20_000);
    await worker.stop();
    expect(await within(10_000, running)).toBe('stopped');

    expect(new Set(handled).size).toBe(JOBS);
    expect(Number((await queue.knex('failed_jobs').count({ n: '*' }))[0]!.n)).toBe(0);
    expect(resumedAfterMs).toBeLessThan(5_000);
    // Before the held set (issue #9), a lost claim's undo also put back finished jobs whose grouped
    // DELETE was on the stalled connection, and they ran again (204 runs of 200 jobs, 2 runs in 3).
    expect(handled.length).toBe(JOBS);
    console.log(`worker resumed ${resumedAfterMs} ms after its connections went dark`);
  }, 60_000);
});
