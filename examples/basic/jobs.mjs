// An app's own jobs: `mailq work` loads this module because mailq.config.mjs names it.
import { defineJob, PermanentError } from 'mailq';
import { z } from 'zod';

export const sendWelcomeEmail = defineJob({
  name: 'send-welcome-email',
  queue: 'emails',
  schema: z.object({ userId: z.number().int().positive(), email: z.string().email() }),
  tries: 3,
  backoff: [1, 5],
  timeout: '10s',
  async handle({ userId, email }, { signal, job }) {
    if (email.endsWith('@invalid.example')) throw new PermanentError(`mailbox ${email} does not exist`);
    // A real app would call its mail provider here, passing `signal` so a timeout aborts the request.
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, 20);
      signal.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
    });
    if (job.attempt === 1 && userId % 50 === 0) throw new Error('mail provider answered 503 (transient)');
  },
});
