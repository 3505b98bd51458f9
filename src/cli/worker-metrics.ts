import { Registry } from 'prom-client';
import { TOKEN_ENV } from '../dashboard/access.js';
import { MailqError } from '../errors.js';
import type { Listening } from '../http/listen.js';
import type { Mailq } from '../mailq.js';
import { registerQueueMetrics } from '../metrics/queue-metrics.js';
import { serveMetrics } from '../metrics/serve-metrics.js';
import { instrumentWorker } from '../metrics/worker-metrics.js';
import type { Worker } from '../worker/worker.js';
import type { CommandContext } from './context.js';

export interface WorkerMetricsFlags {
  'metrics-port'?: number;
  'metrics-host'?: string;
}

/** `mailq work --metrics-port`: this process's worker counts plus the queue's gauges on /metrics. Undefined without the flag. */
export async function serveWorkerMetrics(context: CommandContext, mq: Mailq, worker: Worker, flags: WorkerMetricsFlags): Promise<Listening | undefined> {
  const port = flags['metrics-port'];
  if (port === undefined) return undefined;
  const registry = new Registry();
  instrumentWorker(worker, registry);
  registerQueueMetrics(registry, mq);
  const server = await serveMetrics(registry, { port, host: flags['metrics-host'], token: process.env[TOKEN_ENV] || undefined });
  context.logger.info({ url: `${server.url}/metrics` }, 'serving metrics');
  return server;
}

/** One port serves one process: N supervised processes cannot share it. */
export function checkMetricsFlags(flags: WorkerMetricsFlags, supervised: boolean): void {
  const port = flags['metrics-port'];
  if (port === undefined) return;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new MailqError('--metrics-port must be a port number (1–65535)', { exitCode: 2 });
  if (supervised) {
    throw new MailqError('--metrics-port serves one worker process: run one `mailq work` per port, or scrape `mailq dashboard`’s /metrics for the whole queue', { exitCode: 2 });
  }
}
