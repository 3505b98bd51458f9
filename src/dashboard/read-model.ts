import type { Batch } from '../batch/batch.js';
import type { BatchStore } from '../batch/store.js';
import type { FailedJobs, FailureGroup } from '../failed/store.js';
import type { Monitor, QueueHealth } from '../monitor/monitor.js';
import type { RateLimiter, RateLimitUsage } from '../ratelimit/limiter.js';
import type { MinuteCounts } from '../stats/stats-rows.js';
import type { WorkerRecord } from '../worker/worker-rows.js';

/** The parts of a Mailq the dashboard reads and operates through: no SQL of its own. */
export interface DashboardSources {
  monitor: Pick<Monitor, 'status' | 'perMinute'>;
  failed: Pick<FailedJobs, 'list' | 'count' | 'show' | 'reasons' | 'retry' | 'forget' | 'flush'>;
  batches: Pick<BatchStore, 'list'>;
  rateLimits: Pick<RateLimiter, 'list'>;
}

/** Completed and failed jobs of one queue per minute, one entry per minute of the chart. */
export interface QueueSeries {
  completed: number[];
  failed: number[];
}

export interface BatchView extends Batch {
  /** Failed jobs of the batch grouped by reason, most frequent first. */
  reasons: FailureGroup[];
}

/** Everything the page shows at one refresh. */
export interface DashboardOverview {
  checkedAt: Date;
  queues: QueueHealth[];
  /** The chart's minutes (their start, database clock), oldest first. */
  minutes: Date[];
  series: Record<string, QueueSeries>;
  workers: WorkerRecord[];
  supervisors: WorkerRecord[];
  batches: BatchView[];
  rateLimits: RateLimitUsage[];
}

export const CHART_MINUTES = 60;
const BATCHES_SHOWN = 10;
const REASONS_PER_BATCH = 5;

/** Reads what the page shows, in one round of parallel library calls. */
export async function readOverview(sources: DashboardSources): Promise<DashboardOverview> {
  const [status, perMinute, batches, rateLimits] = await Promise.all([
    sources.monitor.status(),
    sources.monitor.perMinute(CHART_MINUTES),
    sources.batches.list({ limit: BATCHES_SHOWN }),
    sources.rateLimits.list(),
  ]);
  const withReasons = await Promise.all(
    batches.map(async (batch): Promise<BatchView> => ({ ...batch, reasons: batch.failed > 0 ? await sources.failed.reasons({ batchId: batch.id }, REASONS_PER_BATCH) : [] })),
  );
  const minutes = chartMinutes(status.checkedAt, CHART_MINUTES);
  return {
    checkedAt: status.checkedAt,
    queues: status.queues,
    minutes,
    series: seriesByQueue(minutes, perMinute, status.queues.map((queue) => queue.queue)),
    workers: status.workers,
    supervisors: status.supervisors,
    batches: withReasons,
    rateLimits,
  };
}

/** The starts of the last `count` minutes up to the one `now` falls in. */
export function chartMinutes(now: Date, count: number): Date[] {
  const current = Math.floor(now.getTime() / 60_000) * 60_000;
  return Array.from({ length: count }, (_, index) => new Date(current - (count - 1 - index) * 60_000));
}

/** Spreads the rollup's rows over the chart's minutes; a minute with no row is zero. */
export function seriesByQueue(minutes: readonly Date[], rows: readonly MinuteCounts[], queues: readonly string[]): Record<string, QueueSeries> {
  const index = new Map(minutes.map((minute, position) => [minute.getTime(), position]));
  const series: Record<string, QueueSeries> = {};
  const of = (queue: string) => (series[queue] ??= { completed: minutes.map(() => 0), failed: minutes.map(() => 0) });
  for (const queue of queues) of(queue);
  for (const row of rows) {
    const position = index.get(row.minute.getTime());
    if (position === undefined) continue;
    of(row.queue).completed[position]! += row.completed;
    of(row.queue).failed[position]! += row.failed;
  }
  return series;
}
