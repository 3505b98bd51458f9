import { Counter, Histogram, type Registry } from 'prom-client';
import type { ClaimedJob } from '../worker/claimed-job.js';
import type { Worker } from '../worker/worker.js';

/** Run-time buckets in seconds: from a no-op job to a TWS sync past its 120 s timeout. */
export const JOB_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * The worker puts a job back as `rate limit '<key>': waiting for a token` when it claimed it
 * without a token (test/metrics.test.ts fails if that wording changes).
 */
const TOKEN_WAIT = /^rate limit '(.+)': waiting for a token$/;

/**
 * Counts what workers of this process do, from their public events: jobs completed, failed,
 * retried and deferred by queue and job, run time by job, waits for a rate-limit token.
 * Returns a function that stops listening.
 *
 * @example
 * const registry = new Registry();
 * const worker = mq.worker({ queues: ['mailbox-sync'] });
 * instrumentWorker(worker, registry);
 * await serveMetrics(registry, { port: 9464 });
 */
export function instrumentWorker(worker: Worker, registry: Registry): () => void {
  const metrics = workerMetrics(registry);
  const startedAt = new Map<number, number>();
  const labels = (job: ClaimedJob) => ({ queue: job.queue, job: job.name });
  const ended = (job: ClaimedJob, outcome: string, elapsedMs?: number) => {
    const started = startedAt.get(job.id);
    startedAt.delete(job.id);
    const ms = elapsedMs ?? (started === undefined ? undefined : performance.now() - started);
    if (ms !== undefined) metrics.duration.observe({ job: job.name, outcome }, ms / 1000);
  };
  const listeners = {
    'job:started': (job: ClaimedJob) => void startedAt.set(job.id, performance.now()),
    'job:completed': (job: ClaimedJob, elapsedMs: number) => {
      metrics.completed.inc(labels(job));
      ended(job, 'completed', elapsedMs);
    },
    'job:failed': (job: ClaimedJob) => {
      metrics.failed.inc(labels(job));
      ended(job, 'failed');
    },
    'job:retrying': (job: ClaimedJob) => {
      metrics.retried.inc(labels(job));
      ended(job, 'retried');
    },
    'job:deferred': (job: ClaimedJob, _delayMs: number, reason: string) => {
      metrics.deferred.inc(labels(job));
      startedAt.delete(job.id);
      const key = TOKEN_WAIT.exec(reason)?.[1];
      if (key !== undefined) metrics.rateLimitWaits.inc({ key });
    },
  } as const;
  for (const [event, listener] of Object.entries(listeners)) worker.on(event as keyof typeof listeners, listener as never);
  return () => {
    for (const [event, listener] of Object.entries(listeners)) worker.off(event as keyof typeof listeners, listener as never);
  };
}

type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
const perRegistry = new WeakMap<Registry, WorkerMetrics>();

/** One set per registry, shared by every worker instrumented into it. */
function workerMetrics(registry: Registry): WorkerMetrics {
  let metrics = perRegistry.get(registry);
  if (!metrics) perRegistry.set(registry, (metrics = createWorkerMetrics(registry)));
  return metrics;
}

function createWorkerMetrics(registry: Registry) {
  const counter = (name: string, help: string) => new Counter<'queue' | 'job'>({ name, help, labelNames: ['queue', 'job'], registers: [registry] });
  return {
    completed: counter('mailq_jobs_completed_total', 'Jobs this process completed'),
    failed: counter('mailq_jobs_failed_total', 'Jobs this process moved to failed_jobs'),
    retried: counter('mailq_jobs_retried_total', 'Failed attempts this process scheduled to retry'),
    deferred: counter('mailq_jobs_deferred_total', 'Jobs this process put back without spending an attempt (rate limit, 429)'),
    rateLimitWaits: new Counter<'key'>({
      name: 'mailq_rate_limit_waits_total',
      help: 'Jobs this process claimed and put back to wait for a rate-limit token',
      labelNames: ['key'],
      registers: [registry],
    }),
    duration: new Histogram<'job' | 'outcome'>({
      name: 'mailq_job_duration_seconds',
      help: 'Run time of one attempt, by job and outcome (completed, failed, retried)',
      labelNames: ['job', 'outcome'],
      buckets: JOB_DURATION_BUCKETS,
      registers: [registry],
    }),
  };
}
