// The tests an app writes for code that queues jobs, with `mailq/testing` (copy and adapt).
//
//   npx vitest run                                        # fake queue and inline runs: no database
//   MAILQ_DATABASE_URL=mysql://… npx vitest run           # and once through a real queue with drain()
import { createMailq, InvalidJobError } from 'mailq';
import { drain, fakeQueue, runInline } from 'mailq/testing';
import { beforeEach, describe, expect, it } from 'vitest';
import { notifySales, outbox, sendWelcome, signUp } from './app.js';

beforeEach(() => {
  outbox.length = 0;
});

describe('sign-up queues the right jobs (fake queue)', () => {
  it('welcomes every user and tells sales about paying ones, five minutes later', async () => {
    const queue = fakeQueue();
    await signUp(queue, { email: 'ana@example.com', plan: 'pro' });
    queue.assertDispatched(sendWelcome, (payload) => payload.email === 'ana@example.com' && payload.name === 'there');
    queue.assertDispatchedTimes(notifySales, 1, (_payload, job) => job.delayMs === 5 * 60_000);
    expect(outbox).toEqual([]); // recorded, not run
  });

  it('does not bother sales for a free plan', async () => {
    const queue = fakeQueue();
    await signUp(queue, { email: 'bo@example.com', plan: 'free' });
    queue.assertNotDispatched(notifySales);
    expect(queue.count()).toBe(1);
  });

  it('refuses a payload the job\'s schema refuses, as the real queue does', async () => {
    const queue = fakeQueue();
    await expect(signUp(queue, { email: 'not an email', plan: 'free' })).rejects.toThrow(InvalidJobError);
    queue.assertNothingDispatched();
  });

  it('can run what was queued, as a worker would', async () => {
    const queue = fakeQueue();
    await signUp(queue, { email: 'cy@example.com', name: 'Cy', plan: 'pro' });
    const runs = await queue.runAll();
    expect(runs.map((run) => run.status)).toEqual(['completed', 'completed']);
    expect(outbox.map((mail) => mail.subject)).toEqual(['Welcome, Cy!', 'cy@example.com signed up for pro']);
  });
});

describe('the jobs themselves (inline)', () => {
  it('sends the welcome mail', async () => {
    const run = await runInline(sendWelcome, { email: 'di@example.com', name: 'Di' });
    expect(run).toMatchObject({ status: 'completed', attempts: 1 });
    expect(outbox).toEqual([{ to: 'di@example.com', subject: 'Welcome, Di!' }]);
  });

  it('gives up at once on a mailbox that does not exist: no retries burnt', async () => {
    const run = await runInline(sendWelcome, { email: 'gone@bounce.example' });
    expect(run).toMatchObject({ status: 'failed', attempts: 1, permanent: true });
    expect(run.error?.message).toContain('does not exist');
  });
});

describe.skipIf(!process.env.MAILQ_DATABASE_URL)('through a real queue (drain)', () => {
  it('runs what sign-up queued on a real worker', async () => {
    const mq = createMailq({ databaseUrl: process.env.MAILQ_DATABASE_URL, tablePrefix: 'app_tests_', jobs: [sendWelcome, notifySales] });
    try {
      await mq.migrate();
      await signUp(mq, { email: 'ed@example.com', plan: 'pro' });
      // The welcome runs now; notify-sales waits its five minutes.
      expect(await drain(mq)).toMatchObject({ completed: 1, failed: 0, waiting: 1 });
      expect(outbox).toEqual([{ to: 'ed@example.com', subject: 'Welcome, there!' }]);
    } finally {
      await mq.rollback({ all: true });
      await mq.close();
    }
  });
});
