import { z } from 'zod';
import { PermanentError } from '../../src/errors.js';
import { defineJob } from '../../src/job.js';

/**
 * The jobs the write-path suites dispatch (killed connections, retried writes): a plain job, one
 * with a unique key per payload, and one that always fails for good (to fill failed_jobs for retry).
 */
export const note = defineJob({ name: 'note', schema: z.object({ n: z.number() }), handle: () => undefined });
export const keyed = defineJob({ name: 'keyed', schema: z.object({ n: z.number() }), unique: ({ n }) => `k${n}`, handle: () => undefined });
export const doomed = defineJob({
  name: 'doomed',
  schema: z.object({ n: z.number() }),
  handle({ n }) {
    throw new PermanentError(`cannot process ${n}`);
  },
});
