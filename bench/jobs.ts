import { z } from 'zod';
import { defineJob } from '../src/index.js';

/** Job ids each handler ran, per process: the parent checks that every job ran exactly once. */
export const handled: number[] = [];

/** The drain and dispatch job: validated like a real job, does nothing. */
export const noop = defineJob({
  name: 'bench-noop',
  schema: z.object({ n: z.number().int() }),
  handle(_payload, { job }) {
    handled.push(job.id);
  },
});

/** The I/O-bound job: waits 50 ms, as a handler awaiting an API would. */
export const SLEEP_MS = 50;
export const sleep50 = defineJob({
  name: 'bench-sleep',
  schema: z.object({ n: z.number().int() }),
  async handle(_payload, { job }) {
    await new Promise((resolve) => setTimeout(resolve, SLEEP_MS));
    handled.push(job.id);
  },
});
