import { Writable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { defineJob } from '../src/job.js';
import { createLogger } from '../src/logger.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, openQueue, sleep } from './support/queue.js';

/**
 * `mq.close()` closes the pool only after every worker of this instance has finished, including
 * one already stopping: `worker.stop(); await mq.close()` must not pull the pool from under a
 * worker that is still draining.
 */

const slow = defineJob({
  name: 'slow',
  async handle() {
    await sleep(400);
  },
});

let db: TestDatabase;
/** Looks at the tables from outside the instance under test, which closes its own pool. */
let observer: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('close');
  observer = openQueue(db.url);
  await observer.migrate();
});

afterAll(async () => {
  await observer?.close();
  await db?.drop();
});

/** A queue whose warnings and errors are kept, to show that nothing went wrong out of sight. */
function openWatchedQueue(): { mq: Mailq; problems: string[] } {
  const problems: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      problems.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { mq: openQueue(db.url, { jobs: [slow], logger: createLogger({ level: 'warn', pretty: false, destination: sink }) }), problems };
}

it('worker.stop() then mq.close(): the running job finishes, its row is deleted, then the pool closes', async () => {
  const { mq, problems } = openWatchedQueue();
  await mq.dispatch(slow, {});
  const worker = mq.worker({ queues: ['default'], concurrency: 1, sleep: '10ms', sweepInterval: 0 });
  const started = new Promise((resolve) => worker.once('job:started', resolve));
  const running = worker.run();
  await started;

  void worker.stop();
  await mq.close();

  expect(await Promise.race([running, 'still running when close() returned'])).toBe('stopped');
  expect(worker.stats.completed).toBe(1);
  expect(await count(observer.knex, 'jobs')).toBe(0);
  expect(problems).toEqual([]);
});

it('a worker that has already finished does not hold close() up', async () => {
  const { mq, problems } = openWatchedQueue();
  await mq.worker({ queues: ['default'], stopWhenEmpty: true, sleep: '10ms', sweepInterval: 0 }).run();
  await expect(Promise.race([mq.close().then(() => 'closed'), sleep(5_000).then(() => 'close() still waiting')])).resolves.toBe('closed');
  expect(problems).toEqual([]);
});
