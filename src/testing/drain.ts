import type { JobDefinition } from '../job.js';
import type { Mailq } from '../mailq.js';
import { parseDuration, type Duration } from '../duration.js';
import type { WorkerOptions, WorkerStats } from '../worker/worker.js';

export interface DrainOptions extends Omit<WorkerOptions, 'stopWhenEmpty' | 'once'> {
  /** Jobs this worker knows besides those `mq` was created with. */
  jobs?: JobDefinition[];
  /** Give up (stop the worker, throw) after this long. Default 30 s. */
  timeout?: Duration;
}

export interface DrainResult extends WorkerStats {
  /** Jobs still in the queues afterwards: delayed ones (a `delay`, a retry's backoff) a worker would run later. */
  waiting: number;
}

/**
 * Runs a real worker on `mq` until no job is due and none is running, for integration tests: the
 * jobs run as in production (claims, retries, failed_jobs), against the test's database. Jobs that
 * wait for later (a delay, a backoff) are left and counted in `waiting`. Queues default to those of
 * the jobs `mq` knows, and `default`.
 *
 * @example
 * await signUp(mq, { email: 'ana@example.com' });
 * const { completed, failed } = await drain(mq);
 */
export async function drain(mq: Mailq, options: DrainOptions = {}): Promise<DrainResult> {
  const { timeout = 30_000, ...workerOptions } = options;
  const queues = workerOptions.queues ?? queuesOf(mq);
  const worker = mq.worker({ sleep: '10ms', sweepInterval: 0, heartbeat: 0, ...workerOptions, queues, stopWhenEmpty: true });
  const timeoutMs = parseDuration(timeout);
  const timer = setTimeout(() => void worker.stop(), timeoutMs);
  let reason: string;
  try {
    reason = await worker.run();
  } finally {
    clearTimeout(timer);
  }
  if (reason !== 'empty') throw new Error(`drain: the worker stopped (${reason}) before the queues ${queues.join(', ')} were empty${reason === 'stopped' ? ` within ${timeoutMs} ms` : ''}`);
  const [row] = (await mq.knex(mq.tables.jobs).whereIn('queue', queues).count({ waiting: '*' })) as Array<{ waiting: number | string }>;
  return { ...worker.stats, waiting: Number(row?.waiting ?? 0) };
}

function queuesOf(mq: Mailq): string[] {
  const queues = new Set(['default']);
  for (const name of mq.registry.names()) queues.add(mq.registry.get(name)!.queue ?? 'default');
  return [...queues];
}
