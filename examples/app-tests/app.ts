// A small app that queues its own work, written so its tests can swap the queue: `signUp` takes a
// `JobQueue`, which `createMailq(...)` satisfies in production and `fakeQueue()` in tests.
import { defineJob, PermanentError, type JobQueue } from 'mailq';
import { z } from 'zod';

/** Stands in for the app's mailer: what was sent, in order. */
export const outbox: Array<{ to: string; subject: string }> = [];

export const sendWelcome = defineJob({
  name: 'send-welcome',
  schema: z.object({ email: z.string().email(), name: z.string().default('there') }),
  tries: 3,
  backoff: [10, 60],
  timeout: '10s',
  async handle({ email, name }) {
    if (email.endsWith('@bounce.example')) throw new PermanentError(`mailbox ${email} does not exist`);
    outbox.push({ to: email, subject: `Welcome, ${name}!` });
  },
});

export const notifySales = defineJob({
  name: 'notify-sales',
  schema: z.object({ email: z.string(), plan: z.enum(['free', 'pro']) }),
  async handle({ email, plan }) {
    outbox.push({ to: 'sales@app.example', subject: `${email} signed up for ${plan}` });
  },
});

/** The app's sign-up: welcome every user, and tell sales about the paying ones. */
export async function signUp(queue: JobQueue, user: { email: string; name?: string; plan: 'free' | 'pro' }): Promise<void> {
  await queue.dispatch(sendWelcome, { email: user.email, name: user.name });
  if (user.plan === 'pro') await queue.dispatch(notifySales, { email: user.email, plan: user.plan }, { delay: '5m' });
}
