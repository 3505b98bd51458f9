/**
 * `mailq/testing`: what an app's own tests use. Run a job inline without a database, swap the queue
 * for a fake that records dispatches, or drain a real queue in an integration test.
 *
 * @example
 * import { fakeQueue, runInline, drain } from 'mailq/testing';
 *
 * const queue = fakeQueue();
 * await signUp(queue, { email: 'ana@example.com' });
 * queue.assertDispatched(sendWelcome, ({ email }) => email === 'ana@example.com');
 * expect(await runInline(sendWelcome, { email: 'ana@example.com' })).toMatchObject({ status: 'completed' });
 */
export { runInline, type InlineOptions, type InlineRun, type InlineAttempt } from './inline.js';
export { fakeQueue, type FakeQueue, type RecordedJob } from './fake-queue.js';
export { drain, type DrainOptions, type DrainResult } from './drain.js';
