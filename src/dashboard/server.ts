import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { secureHeaders } from 'hono/secure-headers';
import { Registry } from 'prom-client';
import { z } from 'zod';
import { MailqError } from '../errors.js';
import { listen, type Listening } from '../http/listen.js';
import type { Logger } from '../logger.js';
import { registerClusterCounters, registerQueueMetrics } from '../metrics/queue-metrics.js';
import { readAsset } from './assets.js';
import { checkBinding, CSRF_HEADER, newCsrfToken, requireCsrf, requireLoopbackHost, requireToken } from './access.js';
import { readOverview, type DashboardSources } from './read-model.js';
import { ShortCache } from './short-cache.js';
import type { FailureGroup } from '../failed/store.js';

export interface DashboardOptions {
  /** Default 127.0.0.1. Any other address needs `token`. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Required beyond loopback; checked on every request. */
  token?: string;
  /** How often the page refreshes itself. Default 2 s. */
  refreshMs?: number;
  logger?: Logger;
}

export interface Dashboard extends Listening {
  /** The address to open: with `?token=` when a token is set (the page then keeps it in a cookie). */
  openUrl: string;
}

/** What the dashboard needs of a Mailq: its stores and controls (a Mailq fits as it is). */
export interface DashboardMailq extends DashboardSources {
  controls: { pause(queues: readonly string[]): Promise<void>; resume(queues: readonly string[]): Promise<number> };
}

const selection = z
  .object({
    ids: z.array(z.number().int().positive()).max(10_000).optional(),
    all: z.literal(true).optional(),
    queue: z.string().min(1).max(191).optional(),
    batch: z.string().min(1).max(36).optional(),
  })
  .strict()
  .refine((body) => (body.ids !== undefined) !== (body.all === true), { message: 'give either ids or all: true' });
/** How long failure groups are reused between refreshes (a page's retry or forget clears them). */
const REASONS_TTL_MS = 10_000;
const queueBody = z.object({ queue: z.string().min(1).max(191) }).strict();

/**
 * The web dashboard and its JSON API: queues, throughput, workers, batches, failed jobs, rate
 * limits, and /metrics. Reads and acts only through the library.
 *
 * @example
 * const dashboard = await startDashboard(mq, { port: 8080 });
 * console.log(`dashboard on ${dashboard.openUrl}`);
 * process.on('SIGTERM', () => void dashboard.close());
 */
export async function startDashboard(mq: DashboardMailq, options: DashboardOptions = {}): Promise<Dashboard> {
  const host = options.host ?? '127.0.0.1';
  checkBinding(host, options.token);
  const app = dashboardApp(mq, { ...options, host, csrfToken: newCsrfToken() });
  const listening = await listen(app, host, options.port ?? 8080);
  const openUrl = options.token ? `${listening.url}/?token=${encodeURIComponent(options.token)}` : `${listening.url}/`;
  return { ...listening, openUrl };
}

/** The routes, apart from listening (tests call `app.request` on it). */
export function dashboardApp(mq: DashboardMailq, options: DashboardOptions & { host: string; csrfToken: string }): Hono {
  const app = new Hono();
  const registry = new Registry();
  registerQueueMetrics(registry, mq);
  registerClusterCounters(registry, mq);
  const reasons = new ShortCache<FailureGroup[]>(REASONS_TTL_MS);

  app.use(
    '*',
    secureHeaders({
      contentSecurityPolicy: { defaultSrc: ["'self'"], scriptSrc: ["'self'"], styleSrc: ["'self'"], imgSrc: ["'self'", 'data:'], frameAncestors: ["'none'"], formAction: ["'none'"] },
      referrerPolicy: 'no-referrer',
    }),
  );
  app.use('*', requireLoopbackHost(options.host));
  app.use('*', requireToken(options.token));
  app.use('*', requireCsrf(options.csrfToken));
  // The largest honest body is 10,000 ids; anything far bigger is refused before it is read.
  app.use('/api/*', bodyLimit({ maxSize: 256 * 1024, onError: (context) => context.json({ error: 'request body too large' }, 413) }));
  app.onError((error, context) => {
    if (error instanceof MailqError) return context.json({ error: error.message }, 400);
    // Whatever the database said stays in the log: an error page must not leak connection details.
    options.logger?.error({ err: error }, 'dashboard request failed');
    return context.json({ error: 'internal error (see the dashboard log)' }, 500);
  });

  app.get('/', (context) => {
    const page = readAsset('index.html')!;
    const body = page.body.replace('{{csrf}}', options.csrfToken).replace('{{refreshMs}}', String(options.refreshMs ?? 2000));
    return context.body(body, 200, { 'content-type': page.type, 'cache-control': 'no-store' });
  });
  app.get('/ui/:file', (context) => {
    const asset = readAsset(context.req.param('file'));
    return asset ? context.body(asset.body, 200, { 'content-type': asset.type }) : context.json({ error: 'not found' }, 404);
  });
  app.get('/metrics', async (context) => context.body(await registry.metrics(), 200, { 'content-type': registry.contentType }));

  app.get('/api/overview', async (context) => context.json(await readOverview(mq)));
  app.get('/api/failed', async (context) => {
    const filter = { queue: context.req.query('queue') || undefined, batchId: context.req.query('batch') || undefined };
    const beforeId = positiveInt(context.req.query('before'));
    const limit = Math.min(positiveInt(context.req.query('limit')) ?? 50, 500);
    const [jobs, total, groups] = await Promise.all([
      mq.failed.list({ ...filter, limit, beforeId }),
      mq.failed.count(filter),
      reasons.get(JSON.stringify(filter), () => mq.failed.reasons(filter)),
    ]);
    // The list carries reasons, not payloads and stacks: one job's details are a click away.
    return context.json({ total, reasons: groups, jobs: jobs.map(({ payload: _payload, exception: _exception, ...summary }) => summary) });
  });
  app.get('/api/failed/:id', async (context) => {
    const id = positiveInt(context.req.param('id'));
    if (id === undefined) return context.json({ error: 'not found' }, 404);
    try {
      return context.json(await mq.failed.show(id));
    } catch (error) {
      if (error instanceof MailqError) return context.json({ error: error.message }, 404);
      throw error;
    }
  });
  app.post('/api/failed/retry', async (context) => {
    const body = await parseBody(context, selection);
    const filter = { queue: body.queue, batchId: body.batch };
    const retried = await mq.failed.retry(body.all ? 'all' : body.ids!, filter);
    reasons.clear();
    return context.json(retried);
  });
  app.post('/api/failed/forget', async (context) => {
    const body = await parseBody(context, selection);
    const forgotten = body.all ? await mq.failed.flush({ queue: body.queue, batchId: body.batch }) : await mq.failed.forget(body.ids!);
    reasons.clear();
    return context.json({ forgotten });
  });
  app.post('/api/queues/pause', async (context) => {
    const { queue } = await parseBody(context, queueBody);
    await mq.controls.pause([queue]);
    return context.json({ queue, paused: true });
  });
  app.post('/api/queues/resume', async (context) => {
    const { queue } = await parseBody(context, queueBody);
    await mq.controls.resume([queue]);
    return context.json({ queue, paused: false });
  });
  app.notFound((context) => context.json({ error: 'not found' }, 404));
  return app;
}

/** A JSON body checked against its schema; anything else is a 400 with the reason. */
async function parseBody<T>(context: Context, schema: z.ZodType<T>): Promise<T> {
  if (!(context.req.header('content-type') ?? '').startsWith('application/json')) throw new MailqError('send JSON (content-type: application/json)');
  const parsed = schema.safeParse(await context.req.json().catch(() => undefined));
  if (!parsed.success) throw new MailqError(`bad request: ${parsed.error.issues.map((issue) => issue.message).join('; ')}`);
  return parsed.data;
}

function positiveInt(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,15}$/.test(value)) return undefined;
  const number = Number(value);
  return number > 0 ? number : undefined;
}

export { CSRF_HEADER };
