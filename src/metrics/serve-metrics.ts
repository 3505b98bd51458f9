import { Hono } from 'hono';
import type { Registry } from 'prom-client';
import { checkBinding, requireLoopbackHost, requireToken } from '../dashboard/access.js';
import { listen, type Listening } from '../http/listen.js';

export interface MetricsServerOptions {
  port: number;
  /** Default 127.0.0.1; any other address needs `token` (sent as `Authorization: Bearer`). */
  host?: string;
  token?: string;
}

/**
 * Serves a registry as `/metrics` in Prometheus text format: what `mailq work --metrics-port` runs
 * beside its worker.
 *
 * @example
 * const registry = new Registry();
 * instrumentWorker(worker, registry);
 * registerQueueMetrics(registry, mq);
 * const server = await serveMetrics(registry, { port: 9464 });
 */
export async function serveMetrics(registry: Registry, options: MetricsServerOptions): Promise<Listening> {
  const host = options.host ?? '127.0.0.1';
  checkBinding(host, options.token, 'metrics');
  const app = new Hono();
  app.use('*', requireLoopbackHost(host));
  app.use('*', requireToken(options.token));
  app.get('/metrics', async (context) => context.body(await registry.metrics(), 200, { 'content-type': registry.contentType }));
  app.notFound((context) => context.text('see /metrics', 404));
  return listen(app, host, options.port);
}
