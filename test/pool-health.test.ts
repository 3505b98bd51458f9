import mysql from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineJob, InvalidJobError, type Mailq } from '../src/index.js';
import { ER, errnoOf } from '../src/db/errors.js';
import { STALLED_CONNECTION } from '../src/db/stall-check.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, openQueue, waitFor } from './support/queue.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';

/**
 * Pooled connections that died while the pool held them: the server closed one after refusing a
 * statement, killed idle ones, or the path to idle ones went dark. None of it is mocked: a real
 * oversize packet, a real KILL CONNECTION, a real proxy that stops forwarding.
 */

interface Run {
  n: number;
  attempt: number;
  end: string;
}
const runs: Run[] = [];
const note = defineJob({
  name: 'note',
  schema: z.object({ n: z.number().int(), blob: z.string().optional() }),
  tries: 5,
  handle({ n }, { job }) {
    runs.push({ n, attempt: job.attempt, end: 'done' });
  },
});
/** Runs `ms` (or until its signal fires): long enough to hold a lease across a stall. */
const slow = defineJob({
  name: 'slow',
  schema: z.object({ n: z.number().int(), ms: z.number().int() }),
  tries: 5,
  timeout: '4s',
  async handle({ n, ms }, { job, signal }) {
    const end = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('done'), ms);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve((signal.reason as Error | undefined)?.name ?? 'aborted');
      });
    });
    runs.push({ n, attempt: job.attempt, end });
  },
});

let db: TestDatabase;
let admin: mysql.Connection;
let mq: Mailq | undefined;
let proxy: TcpProxy | undefined;

beforeAll(async () => {
  db = await createTestDatabase('pool_health');
  const migrator = openQueue(db.url);
  await migrator.migrate();
  await migrator.close();
  admin = await mysql.createConnection({ uri: db.url });
});

afterEach(async () => {
  proxy?.forward();
  await mq?.close();
  mq = undefined;
  await proxy?.close();
  proxy = undefined;
  runs.length = 0;
  await admin.query('DELETE FROM jobs');
});

afterAll(async () => {
  await admin?.end();
  await db?.drop();
});

/** How a call ended: its error, or undefined when it succeeded. */
async function failureOf(call: Promise<unknown>): Promise<unknown> {
  try {
    await call;
    return undefined;
  } catch (error) {
    return error;
  }
}

/** Opens `n` connections in mailq's pool at once and returns them to it, idle. */
async function warmPool(queue: Mailq, n: number): Promise<void> {
  await Promise.all(Array.from({ length: n }, () => queue.knex.raw('SELECT SLEEP(0.05)')));
}

/** The sessions of this test's database that sit idle on the server, except the admin's own. */
async function idleSessions(): Promise<number[]> {
  const [rows] = (await admin.query("SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND COMMAND = 'Sleep' AND ID <> CONNECTION_ID()", [db.name])) as unknown as [
    Array<{ id: number }>,
  ];
  return rows.map((row) => Number(row.id));
}

async function reservedJobs(): Promise<number> {
  const [[row]] = (await admin.query('SELECT COUNT(*) AS n FROM jobs WHERE reserved_by IS NOT NULL')) as unknown as [[{ n: number }]];
  return Number(row.n);
}

/** A payload too large for the server is a bad payload (InvalidJobError), the server's 1153 its cause. */
function expectTooLarge(failure: unknown): void {
  expect(failure).toBeInstanceOf(InvalidJobError);
  expect(errnoOf((failure as Error).cause)).toBe(ER.PACKET_TOO_LARGE);
}

describe('a statement over max_allowed_packet', () => {
  it('fails alone, with the server’s error; the next statements, at once and on the same queue, succeed', async () => {
    mq = openQueue(db.url, { jobs: [note] });
    const [[{ packet }]] = (await mq.knex.raw('SELECT @@max_allowed_packet AS packet')) as [[{ packet: number }]];
    const blob = 'x'.repeat(Number(packet) + 1024);
    for (let round = 0; round < 3; round++) {
      // The server answers 1153 and closes that connection: the pool must not hand it out again.
      expectTooLarge(await failureOf(mq.dispatch(note, { n: -1, blob })));
      for (let n = 0; n < 5; n++) expect(await failureOf(mq.dispatch(note, { n: round * 10 + n }))).toBeUndefined();
      expect(await failureOf(mq.knex.raw('SELECT 1'))).toBeUndefined();
    }
    expect(await count(mq.knex, 'jobs')).toBe(15);
    expect(await count(mq.knex, 'jobs', { name: 'note' })).toBe(15);
  });

  it('in dispatchMany too: the call fails with the server’s error, writes nothing, and the next calls succeed', async () => {
    mq = openQueue(db.url, { jobs: [note] });
    const [[{ packet }]] = (await mq.knex.raw('SELECT @@max_allowed_packet AS packet')) as [[{ packet: number }]];
    const blob = 'x'.repeat(Number(packet) + 1024);
    for (let round = 0; round < 2; round++) {
      // The first chunk is small and goes in; the second is over the limit: the transaction leaves nothing.
      expectTooLarge(await failureOf(mq.dispatchMany(note, [{ n: 1 }, { n: 2, blob }])));
      expect(await failureOf(mq.dispatchMany(note, [{ n: 3 }, { n: 4 }]))).toBeUndefined();
      expect(await failureOf(mq.dispatch(note, { n: 5 }))).toBeUndefined();
    }
    expect(await count(mq.knex, 'jobs')).toBe(6);
  });
});

describe('idle connections the server killed', () => {
  it('are replaced unseen: no statement fails and no job is charged an extra attempt', async () => {
    mq = openQueue(db.url, { jobs: [note] });
    await warmPool(mq, 10);
    const killed = await idleSessions();
    expect(killed.length).toBeGreaterThanOrEqual(10);
    for (const id of killed) await admin.query('KILL CONNECTION ?', [id]);
    await waitFor('the killed sessions to be gone', async () => (await idleSessions()).every((id) => !killed.includes(id)));

    for (let n = 0; n < 20; n++) expect(await failureOf(mq.dispatch(note, { n }))).toBeUndefined();
    await mq.worker({ concurrency: 4, stopWhenEmpty: true, sweepInterval: 0, heartbeat: 0 }).run();
    expect(runs.map((run) => run.n).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, n) => n));
    expect(runs.every((run) => run.attempt === 1)).toBe(true);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});

describe('idle connections whose path went dark', () => {
  const STALL_CHECK_MS = 1_000;

  function openThroughProxy(): Mailq {
    const url = new URL(proxy!.urlThrough(db.url));
    url.searchParams.set('stallCheck', `${STALL_CHECK_MS}ms`);
    url.searchParams.set('connectTimeout', '1s');
    mq = openQueue(url.toString(), { jobs: [note, slow] });
    return mq;
  }

  it('are dropped once one connection is found dead: the next statements get fresh connections at once', async () => {
    proxy = await startTcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 3306) });
    const queue = openThroughProxy();
    await warmPool(queue, 10);
    // Every connection open now goes dark for good; new ones reach the server.
    proxy.stall('open');

    // The first statement meets a dark connection: nothing tells it apart before the stall check.
    const first = await failureOf(queue.knex.raw('SELECT 1'));
    expect((first as { code?: string }).code).toBe(STALLED_CONNECTION);
    // The other nine are no better, and must not each cost a stall check of their own.
    for (let n = 0; n < 9; n++) {
      const startedAt = Date.now();
      expect(await failureOf(queue.knex.raw('SELECT 1'))).toBeUndefined();
      expect(Date.now() - startedAt).toBeLessThan(STALL_CHECK_MS);
    }
  });

  it('cost a worker no lease: each running job finishes once, on its first attempt', async () => {
    proxy = await startTcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 3306) });
    const queue = openThroughProxy();
    const JOBS = 8;
    await queue.dispatchMany(slow, Array.from({ length: JOBS }, (_, n) => ({ n, ms: 2_500 })));
    await warmPool(queue, 10);
    // Lease = 4 s timeout + 1 s grace, renewed every 1.25 s: a few stale connections in a row outlast it.
    const worker = queue.worker({ concurrency: JOBS, stopWhenEmpty: true, sweepInterval: '1s', heartbeat: '1s', leaseGrace: '1s', sleep: '50ms' });
    const running = worker.run();
    await waitFor('every job to run', async () => (await reservedJobs()) === JOBS);
    proxy.stall('open');
    await running;

    expect(runs.map((run) => run.n).sort((a, b) => a - b)).toEqual(Array.from({ length: JOBS }, (_, n) => n));
    expect(runs.every((run) => run.attempt === 1 && run.end === 'done')).toBe(true);
    const [[left]] = (await admin.query('SELECT (SELECT COUNT(*) FROM jobs) AS jobs, (SELECT COUNT(*) FROM failed_jobs) AS failed')) as unknown as [[{ jobs: number; failed: number }]];
    expect(left).toEqual({ jobs: 0, failed: 0 });
  }, 60_000);
});
