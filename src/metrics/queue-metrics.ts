import { Counter, Gauge, type Registry } from 'prom-client';
import type { Monitor, StatusReport } from '../monitor/monitor.js';
import type { RateLimiter, RateLimitUsage } from '../ratelimit/limiter.js';
import { ROLLUP_LOOKBACK_MINUTES, RollupCounters } from './rollup-counters.js';

/** What the queue metrics read, through the library (a Mailq has both). */
export interface QueueMetricSources {
  monitor: Pick<Monitor, 'status' | 'perMinute'>;
  rateLimits: Pick<RateLimiter, 'list'>;
}

interface Snapshot {
  status: StatusReport;
  rateLimits: RateLimitUsage[];
}

/**
 * The queue as the tables show it, read once per scrape: depth by state, oldest wait, pause,
 * live workers, rate limits. Any process can serve these (the dashboard, a worker); they
 * describe the whole queue, not the process.
 *
 * @example
 * const registry = new Registry();
 * registerQueueMetrics(registry, mq);
 * const text = await registry.metrics();
 */
export function registerQueueMetrics(registry: Registry, sources: QueueMetricSources): void {
  const read = onePerScrape(async (): Promise<Snapshot> => {
    const [status, rateLimits] = await Promise.all([sources.monitor.status(), sources.rateLimits.list()]);
    return { status, rateLimits };
  });
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[], fill: (gauge: Gauge<L>, snapshot: Snapshot) => void) =>
    new Gauge<L>({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        const snapshot = await read();
        this.reset();
        fill(this, snapshot);
      },
    });

  gauge('mailq_queue_jobs', 'Jobs per queue and state: pending (due), delayed, running, failed', ['queue', 'state'], (g, { status }) => {
    for (const q of status.queues) {
      g.set({ queue: q.queue, state: 'pending' }, q.pending);
      g.set({ queue: q.queue, state: 'delayed' }, q.delayed);
      g.set({ queue: q.queue, state: 'running' }, q.reserved);
      g.set({ queue: q.queue, state: 'failed' }, q.failed);
    }
  });
  gauge('mailq_queue_oldest_wait_seconds', 'How long the oldest due job of the queue has waited (0 when none waits)', ['queue'], (g, { status }) => {
    for (const q of status.queues) g.set({ queue: q.queue }, q.oldestPendingSeconds ?? 0);
  });
  gauge('mailq_queue_paused', '1 when the queue is paused', ['queue'], (g, { status }) => {
    for (const q of status.queues) g.set({ queue: q.queue }, q.paused ? 1 : 0);
  });
  gauge('mailq_workers_alive', 'Worker processes (or in-process workers) whose heartbeat is current', [], (g, { status }) => {
    g.set(status.workers.filter((worker) => worker.alive).length);
  });
  gauge('mailq_workers_jobs_running', 'Jobs the live workers report running', [], (g, { status }) => {
    g.set(status.workers.filter((worker) => worker.alive).reduce((sum, worker) => sum + worker.running, 0));
  });
  gauge('mailq_rate_limit_used', 'Tokens used in the current window, per rate-limit key', ['key'], (g, { rateLimits }) => {
    for (const key of rateLimits) g.set({ key: key.key }, key.used);
  });
  gauge('mailq_rate_limit_limit', 'Tokens per window, per rate-limit key', ['key'], (g, { rateLimits }) => {
    for (const key of rateLimits) g.set({ key: key.key }, key.limit);
  });
  gauge('mailq_rate_limit_wait_seconds', 'Time until the key frees its next token (0: one is free)', ['key'], (g, { rateLimits }) => {
    for (const key of rateLimits) g.set({ key: key.key }, key.nextInMs / 1000);
  });
  gauge('mailq_rate_limit_paused', '1 while a 429 pauses the key for every worker', ['key'], (g, { rateLimits }) => {
    for (const key of rateLimits) g.set({ key: key.key }, key.pausedUntil ? 1 : 0);
  });
}

/**
 * Jobs completed, failed, retried and deferred on every host, as counters: from the per-minute
 * rollup that workers write at each heartbeat (so they trail the work by up to one heartbeat).
 * Counted from when they were registered (the process's start): `baselined` settles once that
 * first read is done. What the dashboard serves; a worker's own
 * `--metrics-port` counts its own jobs instead (instrumentWorker).
 *
 * @example
 * registerClusterCounters(registry, mq);
 */
export function registerClusterCounters(registry: Registry, sources: Pick<QueueMetricSources, 'monitor'>): { baselined: Promise<void> } {
  const rollup = new RollupCounters();
  const read = async () => rollup.advance(await sources.monitor.perMinute(ROLLUP_LOOKBACK_MINUTES));
  // The baseline is taken now, so work done before the first scrape counts too; failing, the first scrape takes it.
  const baseline = read().then(
    () => undefined,
    () => undefined,
  );
  const advance = onePerScrape(async () => {
    await baseline;
    return read();
  });
  const counter = (name: string, help: string, kind: 'completed' | 'failed' | 'retried' | 'deferred' | 'runtimeMs', scale = 1) =>
    new Counter<'queue'>({
      name,
      help,
      labelNames: ['queue'],
      registers: [registry],
      async collect() {
        const totals = await advance();
        this.reset();
        for (const [queue, total] of totals) this.inc({ queue }, total[kind] * scale);
      },
    });
  counter('mailq_jobs_completed_total', 'Jobs completed (all workers)', 'completed');
  counter('mailq_jobs_failed_total', 'Jobs moved to failed_jobs (all workers)', 'failed');
  counter('mailq_jobs_retried_total', 'Failed attempts retried later (all workers)', 'retried');
  counter('mailq_jobs_deferred_total', 'Jobs put back without spending an attempt: rate limit, 429, stop (all workers)', 'deferred');
  counter('mailq_job_runtime_seconds_total', 'Run time of completed jobs (all workers)', 'runtimeMs', 1 / 1000);
  return { baselined: baseline };
}

/**
 * prom-client starts collecting every metric of a scrape in the same turn: they share one read
 * instead of each querying the database. The read is forgotten as it settles, so the next scrape
 * reads afresh.
 */
function onePerScrape<T>(read: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= read().finally(() => {
      pending = undefined;
    });
    return pending;
  };
}
