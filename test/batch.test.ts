import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createLogger, createMailq, defineJob, PermanentError, type BatchSummary, type Mailq } from '../src/index.js';
import { main } from '../src/cli/main.js';
import type { Output } from '../src/cli/output.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { waitFor } from './support/queue.js';

const QUEUE = 'batch-test';
const silent = createLogger({ level: 'silent' });

/** Every callback run, as the callback handlers saw it (workers of all instances share this process). */
const callbackRuns: Array<{ kind: string; batch: BatchSummary; note?: string }> = [];
let failOnce = new Set<number>();

const work = defineJob({
  name: 'batch-work',
  queue: QUEUE,
  schema: z.object({ n: z.number(), fail: z.boolean().default(false) }),
  handle({ n, fail }) {
    if (fail || failOnce.has(n)) throw new PermanentError(`job ${n} fails on purpose`);
  },
});

const batchSummary = z.object({ id: z.string(), name: z.string(), total: z.number(), failed: z.number(), failedJobIds: z.array(z.string()), cancelled: z.boolean() });
const callback = defineJob({
  name: 'batch-callback',
  queue: QUEUE,
  schema: z.object({ kind: z.string(), note: z.string().optional(), batch: batchSummary }),
  handle({ kind, note, batch }) {
    callbackRuns.push({ kind, batch, note });
  },
});

const jobs = [work, callback];
let db: TestDatabase;
let instances: Mailq[];
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('batch');
  // Three instances with their own pools: three workers competing like separate processes.
  instances = Array.from({ length: 3 }, () => createMailq({ databaseUrl: db.url, jobs, logger: silent, poolMax: 6 }));
  mq = instances[0]!;
  await mq.migrate();
});

afterAll(async () => {
  await Promise.all((instances ?? []).map((instance) => instance.close()));
  await db?.drop();
});

beforeEach(async () => {
  callbackRuns.length = 0;
  failOnce = new Set();
  await mq.knex(mq.tables.jobs).delete();
  await mq.knex(mq.tables.failedJobs).delete();
});

const callbacks = {
  then: { job: 'batch-callback', payload: { kind: 'then' } },
  catch: { job: 'batch-callback', payload: { kind: 'catch' } },
  finally: { job: 'batch-callback', payload: { kind: 'finally', note: 'always' } },
};

/**
 * Runs the three competing workers until no job is due. A worker's last completion flush may
 * insert a batch's callback jobs after it saw an empty queue, so go again until nothing is left.
 */
async function drain(queues = [QUEUE]): Promise<void> {
  for (;;) {
    await Promise.all(instances.map((instance) => instance.worker({ queues, concurrency: 4, stopWhenEmpty: true, sleep: '10ms' }).run()));
    const [due] = (await mq.knex.raw(`SELECT COUNT(*) AS n FROM ?? WHERE queue IN (${queues.map(() => '?').join(', ')}) AND available_at <= NOW(3)`, [mq.tables.jobs, ...queues])) as [Array<{ n: number }>];
    if (Number(due[0]!.n) === 0) return;
  }
}

async function batchRow(id: string) {
  return mq.knex(mq.tables.jobBatches).where({ id }).first();
}

function capture(): Output & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, isTTY: false, out: (text) => void lines.push(text), err: (text) => void errors.push(text) };
}

describe('batches', () => {
  it('counts 120 jobs over three workers and runs catch and finally exactly once with the right counts', async () => {
    const payloads = Array.from({ length: 120 }, (_, n) => ({ n, fail: n % 30 === 7 }));
    const created = await mq.batch(work, payloads, { name: 'nightly', ...callbacks });
    expect(created).toMatchObject({ name: 'nightly', total: 120, skipped: 0 });
    expect(await batchRow(created.id)).toMatchObject({ total_jobs: 120, pending_jobs: 120, failed_jobs: 0 });
    expect(await mq.knex(mq.tables.jobs).where({ batch_id: created.id }).count({ n: '*' })).toEqual([{ n: 120 }]);

    await drain();

    const batch = await mq.batches.find(created.id);
    expect(batch).toMatchObject({ total: 120, pending: 0, processed: 120, failed: 4, progress: 100, state: 'finished' });
    const failedUuids = (await mq.knex(mq.tables.failedJobs).where({ batch_id: created.id }).select('uuid')).map((row: { uuid: string }) => row.uuid);
    expect(failedUuids).toHaveLength(4);
    expect([...batch.failedJobIds].sort()).toEqual([...failedUuids].sort());
    expect(callbackRuns.map((run) => run.kind).sort()).toEqual(['catch', 'finally']);
    for (const run of callbackRuns) expect(run.batch).toMatchObject({ id: created.id, name: 'nightly', total: 120, failed: 4, cancelled: false });
    expect(callbackRuns.find((run) => run.kind === 'finally')!.note).toBe('always');
    expect(await mq.knex(mq.tables.jobs).count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  it('runs then and finally once when every job succeeds, across many batches finishing at once', async () => {
    const created = await Promise.all(Array.from({ length: 6 }, (_, b) => mq.batch(work, Array.from({ length: 25 }, (_, n) => ({ n: b * 100 + n })), { name: `b${b}`, ...callbacks })));
    await drain();
    for (const { id } of created) {
      expect(await mq.batches.find(id)).toMatchObject({ pending: 0, failed: 0, state: 'finished' });
      const runs = callbackRuns.filter((run) => run.batch.id === id).map((run) => run.kind).sort();
      expect(runs).toEqual(['finally', 'then']);
    }
    expect(callbackRuns).toHaveLength(12);
  });

  it('takes a mixed list of jobs, and an empty batch finishes at once', async () => {
    const mixed = await mq.batch([{ job: work, payload: { n: 1 } }, { job: 'batch-work', payload: { n: 2 }, options: { priority: 5 } }], { name: 'mixed' });
    expect(mixed.total).toBe(2);
    const empty = await mq.batch(work, [], { name: 'empty', ...callbacks });
    expect(await mq.batches.find(empty.id)).toMatchObject({ total: 0, state: 'finished' });
    await drain();
    expect(await mq.batches.find(mixed.id)).toMatchObject({ pending: 0, state: 'finished' });
    expect(callbackRuns.map((run) => `${run.batch.name}:${run.kind}`).sort()).toEqual(['empty:finally', 'empty:then']);
  });

  it('rejects a bad payload or callback before writing anything', async () => {
    await expect(mq.batch(work, [{ n: 1, fail: false }, { n: 'two' } as never])).rejects.toThrow("invalid payload for job 'batch-work' at index 1: n:");
    await expect(mq.batch(work, [{ n: 1, fail: false }], { then: { job: 'batch-callback', payload: { nokind: true } } })).rejects.toThrow('batch then callback: invalid payload');
    expect(await mq.knex(mq.tables.jobs).count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  it('counts a retried failed job as pending again, and then runs when the retry succeeds', async () => {
    const created = await mq.batch([{ job: work, payload: { n: 1 } }, { job: work, payload: { n: 2 }, options: { queue: 'batch-later' } }], callbacks);
    failOnce = new Set([1]);
    await drain();
    expect(await batchRow(created.id)).toMatchObject({ pending_jobs: 1, failed_jobs: 1 });
    expect(await mq.failed.retry('all')).toMatchObject({ retried: 1 });
    expect(await mq.batches.find(created.id)).toMatchObject({ pending: 2, failed: 0, failedJobIds: [] });
    failOnce = new Set();
    await drain([QUEUE, 'batch-later']);
    expect(await mq.batches.find(created.id)).toMatchObject({ pending: 0, failed: 0, state: 'finished' });
    expect(callbackRuns.map((run) => run.kind).sort()).toEqual(['finally', 'then']);
  });

  it('mailq retry all --batch <id> retries that batch\'s failed jobs only', async () => {
    const first = await mq.batch(work, [{ n: 1, fail: true }, { n: 2 }], { queue: 'batch-later' });
    const second = await mq.batch(work, [{ n: 3, fail: true }], { queue: 'batch-later' });
    await drain(['batch-later']);
    expect(await mq.failed.count('batch-later')).toBe(2);

    const output = capture();
    expect(await main(['retry', 'all', '--batch', first.id, '--database-url', db.url], output)).toBe(0);
    expect(output.lines).toEqual(['Retried 1 failed job.']);
    expect(await mq.knex(mq.tables.failedJobs).where({ queue: 'batch-later' }).pluck('batch_id')).toEqual([second.id]);
    expect(await mq.knex(mq.tables.jobs).where({ queue: 'batch-later' }).pluck('batch_id')).toEqual([first.id]);
    // The first batch finished when its jobs ended; a retry after that no longer changes its counts.
    expect(await mq.batches.find(first.id)).toMatchObject({ state: 'finished', failed: 1 });
  });

  it('cancel removes the waiting jobs, finishes the batch, and runs finally but not then', async () => {
    const created = await mq.batch(work, Array.from({ length: 10 }, (_, n) => ({ n, fail: false })), { ...callbacks, delay: '1h' });
    const { batch, removed } = await mq.batches.cancel(created.id);
    expect(removed).toBe(10);
    expect(batch).toMatchObject({ state: 'cancelled', pending: 0 });
    expect(batch.finishedAt).not.toBeNull();
    expect(await mq.knex(mq.tables.jobs).where({ batch_id: created.id }).count({ n: '*' })).toEqual([{ n: 0 }]);
    await drain();
    expect(callbackRuns.map((run) => run.kind)).toEqual(['finally']);
    expect(callbackRuns[0]!.batch.cancelled).toBe(true);
  });

  it('a running job of a cancelled batch that then fails is not retried: removed and counted done, as the cancel did with the rest', async () => {
    let attempts = 0;
    let fail: () => void = () => undefined;
    const stalling = defineJob({
      name: 'batch-stalling',
      queue: QUEUE,
      tries: 3,
      backoff: 0,
      async handle() {
        attempts++;
        await new Promise<void>((resolve) => (fail = resolve));
        throw new Error('upstream timed out');
      },
    });
    const created = await mq.batch(stalling, [{}, {}], { ...callbacks, delay: 0 });
    const worker = mq.worker({ queues: [QUEUE], jobs: [stalling], concurrency: 1, sleep: '10ms', sweepInterval: 0 });
    const running = worker.run();
    await waitFor('the first job to start', () => attempts === 1);

    // The waiting job goes at once; the running one finishes its attempt, which fails with tries left.
    expect((await mq.batches.cancel(created.id)).removed).toBe(1);
    fail();
    await waitFor('the batch to finish', async () => (await mq.batches.find(created.id)).finishedAt !== null);
    await waitFor('the finally callback to run', () => callbackRuns.length === 1);
    await worker.stop();
    await running;

    expect(attempts).toBe(1);
    expect(worker.stats).toMatchObject({ retried: 0, failed: 0 });
    expect(await mq.knex(mq.tables.jobs).where({ batch_id: created.id }).count({ n: '*' })).toEqual([{ n: 0 }]);
    expect(await mq.failed.count(QUEUE)).toBe(0);
    expect(await mq.batches.find(created.id)).toMatchObject({ state: 'cancelled', pending: 0, failed: 0 });
    expect(callbackRuns.map((run) => run.kind)).toEqual(['finally']);
  });

  it("a cancelled batch's job whose worker died is removed and counted done by the lease sweep, not queued again", async () => {
    const created = await mq.batch(work, [{ n: 1 }, { n: 2 }], { ...callbacks, tries: 3 });
    const [reservedId] = await mq.knex(mq.tables.jobs).where({ batch_id: created.id }).orderBy('id').limit(1).pluck('id');
    // A worker took it and died: its lease has run out.
    await mq.knex(mq.tables.jobs).where({ id: reservedId }).update({
      reserved_at: mq.knex.raw('NOW(3)'),
      reserved_by: 'dead-worker',
      attempts: 1,
      lease_until: mq.knex.raw('NOW(3) - INTERVAL 1 SECOND'),
    });
    expect((await mq.batches.cancel(created.id)).removed).toBe(1);
    expect(await mq.batches.find(created.id)).toMatchObject({ state: 'cancelled', pending: 1, finishedAt: null });

    const sweeper = mq.worker({ queues: ['nothing-here'], sweepInterval: 0 });
    expect(await sweeper.sweep()).toEqual({ released: 0, failed: 0, removed: 1 });
    expect(await mq.knex(mq.tables.jobs).where({ batch_id: created.id }).count({ n: '*' })).toEqual([{ n: 0 }]);
    expect(await mq.batches.find(created.id)).toMatchObject({ state: 'cancelled', pending: 0, failed: 0 });
    expect((await mq.batches.find(created.id)).finishedAt).not.toBeNull();
    await drain();
    expect(callbackRuns.map((run) => run.kind)).toEqual(['finally']);
  });

  it('mailq batches / batch / batch:cancel', async () => {
    const created = await mq.batch(work, Array.from({ length: 3 }, (_, n) => ({ n, fail: false })), { name: 'cli batch', delay: '1h' });
    const base = ['--database-url', db.url];

    const list = capture();
    expect(await main(['batches', '--json', ...base], list)).toBe(0);
    expect((JSON.parse(list.lines.join('\n')) as Array<{ id: string }>).map((batch) => batch.id)).toContain(created.id);

    const table = capture();
    expect(await main(['batches', '--running', ...base], table)).toBe(0);
    expect(table.lines.join('\n')).toMatch(new RegExp(`${created.id}.*cli batch.*running.*0/3 \\(0%\\)`));

    const show = capture();
    expect(await main(['batch', created.id, '--json', ...base], show)).toBe(0);
    expect(JSON.parse(show.lines.join('\n'))).toMatchObject({ id: created.id, total: 3, pending: 3, state: 'running' });

    const cancel = capture();
    expect(await main(['batch:cancel', created.id, ...base], cancel)).toBe(0);
    expect(cancel.lines.join('\n')).toBe(`Cancelled batch ${created.id}: removed 3 waiting jobs.`);

    const again = capture();
    expect(await main(['batch:cancel', created.id, ...base], again)).toBe(1);
    expect(again.errors[0]).toBe(`mailq: batch ${created.id} had already finished (cancelled); nothing to cancel`);

    const watched = capture();
    expect(await main(['batch', created.id, '--watch', ...base], watched)).toBe(0);
    expect(watched.lines.join('\n')).toMatch(/state\s*│\s*cancelled/);

    const bad = capture();
    expect(await main(['batch', 'nope', ...base], bad)).toBe(2);
    expect(bad.errors[0]).toBe("mailq: <id>: expected a uuid (see `mailq batches`), got 'nope'");
  });
});
