import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, defineJob, type Mailq, type Worker } from '../src/index.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { openQueue, sleep, waitFor } from './support/queue.js';

/**
 * Idle workers poll every `sleep`; a dispatch in the same process wakes those on its queue at once.
 * The workers here poll every 10 s, so a job run within a second was woken, not polled for.
 */
const POLL = '10s';
const WOKEN_WITHIN_MS = 1_000;

const ranAt = new Map<string, number>();
const note = defineJob({
  name: 'wake-note',
  queue: 'wake-a',
  handle(payload: { id: string }) {
    ranAt.set(payload.id, Date.now());
  },
});

let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('wake');
  mq = openQueue(db.url, { jobs: [note], logger: createLogger({ level: 'silent' }) });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

/** A worker on `queue` that has polled once, found nothing, and now sleeps for POLL. */
async function idleWorker(queue: string): Promise<{ worker: Worker; done: Promise<unknown> }> {
  const worker = mq.worker({ queues: [queue], sleep: POLL, heartbeat: 0, sweepInterval: 0 });
  const done = worker.run();
  await sleep(300);
  return { worker, done };
}

async function ranWithin(id: string, since: number): Promise<number> {
  await waitFor(`job ${id} to run`, () => ranAt.has(id), 5_000, 10);
  return ranAt.get(id)! - since;
}

describe('an idle worker in the same process', () => {
  it('runs a job from mq.dispatch at once', async () => {
    const { worker, done } = await idleWorker('wake-a');
    try {
      const since = Date.now();
      await mq.dispatch(note, { id: 'dispatched' });
      expect(await ranWithin('dispatched', since)).toBeLessThan(WOKEN_WITHIN_MS);
    } finally {
      await worker.stop();
      await done;
    }
  });

  it('runs a job from mq.batch at once, on whichever of the batch queues it listens to', async () => {
    const { worker, done } = await idleWorker('wake-b');
    try {
      const since = Date.now();
      await mq.batch([
        { job: note, payload: { id: 'batch-on-a' } },
        { job: note, payload: { id: 'batch-on-b' }, options: { queue: 'wake-b' } },
      ]);
      expect(await ranWithin('batch-on-b', since)).toBeLessThan(WOKEN_WITHIN_MS);
      expect(ranAt.has('batch-on-a')).toBe(false);
    } finally {
      await worker.stop();
      await done;
    }
  });

  it('runs a job from mq.batch in a caller transaction once that commits', async () => {
    const { worker, done } = await idleWorker('wake-a');
    try {
      const trx = await mq.knex.transaction();
      await mq.batch(note, [{ id: 'batch-in-trx' }], { transaction: trx });
      await sleep(300);
      const committedAt = Date.now();
      await trx.commit();
      expect(await ranWithin('batch-in-trx', committedAt)).toBeLessThan(WOKEN_WITHIN_MS);
    } finally {
      await worker.stop();
      await done;
    }
  });
});
