import { createServer } from 'node:net';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMailq, defineJob, instrumentWorker, PermanentError, registerClusterCounters, registerQueueMetrics, type Mailq } from '../src/index.js';
import { resolveRateLimit } from '../src/ratelimit/rate-limit.js';
import { createLogger } from '../src/logger.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { parsePrometheusText, valueOf } from './support/prometheus.js';
import { count, createSideEffectTables, FIXTURE_JOBS } from './support/queue.js';
import { killIfRunning, startCli, waitFor, type CliProcess } from './support/processes.js';

const attemptsSeen = new Map<number, number>();
const good = defineJob<{ n: number }>({ name: 'good', queue: 'm', handle: () => undefined });
const bad = defineJob<{ n: number }>({ name: 'bad', queue: 'm', handle: () => { throw new PermanentError('no such taxpayer'); } });
const retryOnce = defineJob<{ n: number }>({
  name: 'retry-once',
  queue: 'm',
  tries: 2,
  handle: ({ n }) => {
    attemptsSeen.set(n, (attemptsSeen.get(n) ?? 0) + 1);
    if (attemptsSeen.get(n) === 1) throw new Error('TWS 503');
  },
});
/** One token an hour; dispatched onto another queue, so each claimed job needs a token of its own. */
const limited = defineJob<{ n: number }>({ name: 'limited', queue: 'limited-home', rateLimit: { key: 'tight', limit: 1, per: '1h' }, handle: () => undefined });

let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('metrics');
  mq = createMailq({ databaseUrl: db.url, jobs: [good, bad, retryOnce, limited], logger: createLogger({ level: 'silent' }) });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

describe('the test parser', () => {
  it('accepts valid exposition text and rejects what Prometheus would reject', () => {
    const good = '# HELP x_total Things.\n# TYPE x_total counter\nx_total{a="1",b="q\\"uote"} 3\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 4.5\nh_count 2\n';
    const families = parsePrometheusText(good);
    expect(valueOf(families, 'x_total', { b: 'q"uote' })).toBe(3);
    expect(() => parsePrometheusText('x 1\n')).toThrow(/without a TYPE/);
    expect(() => parsePrometheusText('# TYPE x counter\nx{a=1} 1\n')).toThrow(/bad labels/);
    expect(() => parsePrometheusText('# TYPE x counter\nx one\n')).toThrow(/bad value/);
    expect(() => parsePrometheusText('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n')).toThrow(/cumulative/);
    expect(() => parsePrometheusText('# TYPE x counter\nx 1')).toThrow(/newline/);
  });
});

describe('/metrics counts the work done', () => {
  const workerRegistry = new Registry();
  const clusterRegistry = new Registry();

  beforeAll(async () => {
    registerQueueMetrics(workerRegistry, mq);
    // Work finished before the counters exist is not theirs: this minute's row already holds 3.
    await mq.knex(mq.tables.queueStats).insert({ queue: 'm', minute: mq.knex.raw("DATE_FORMAT(NOW(), '%Y-%m-%d %H:%i:00')"), completed: 3 });
    const { baselined } = registerClusterCounters(clusterRegistry, { monitor: { status: () => Promise.reject(new Error('unused')), perMinute: (...args) => mq.monitor.perMinute(...args) } });
    await baselined; // taken at registration: no scrape before the work
    await mq.dispatchMany(good, [1, 2, 3, 4, 5].map((n) => ({ n })));
    await mq.dispatchMany(bad, [{ n: 1 }, { n: 2 }]);
    await mq.dispatch(retryOnce, { n: 1 }, { backoff: [0] });
    await mq.dispatchMany(limited, [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: 'm' });
    const worker = mq.worker({ queues: ['m'], concurrency: 1, stopWhenEmpty: true, heartbeat: '200ms' });
    instrumentWorker(worker, workerRegistry);
    await worker.run();
  });

  it("a worker's counters and histogram match its jobs", async () => {
    const metrics = parsePrometheusText(await workerRegistry.metrics());
    expect(metrics.get('mailq_jobs_completed_total')!.type).toBe('counter');
    expect(valueOf(metrics, 'mailq_jobs_completed_total', { queue: 'm', job: 'good' })).toBe(5);
    expect(valueOf(metrics, 'mailq_jobs_completed_total', { queue: 'm', job: 'retry-once' })).toBe(1);
    expect(valueOf(metrics, 'mailq_jobs_completed_total', { queue: 'm', job: 'limited' })).toBe(1);
    expect(valueOf(metrics, 'mailq_jobs_failed_total', { job: 'bad' })).toBe(2);
    expect(valueOf(metrics, 'mailq_jobs_retried_total', { job: 'retry-once' })).toBe(1);
    expect(valueOf(metrics, 'mailq_jobs_deferred_total', { job: 'limited' })).toBe(2);
    expect(valueOf(metrics, 'mailq_rate_limit_waits_total', { key: 'tight' })).toBe(2);
    expect(metrics.get('mailq_job_duration_seconds')!.type).toBe('histogram');
    expect(valueOf(metrics, 'mailq_job_duration_seconds_count', { job: 'good', outcome: 'completed' })).toBe(5);
    expect(valueOf(metrics, 'mailq_job_duration_seconds_count', { job: 'bad', outcome: 'failed' })).toBe(2);
    expect(valueOf(metrics, 'mailq_job_duration_seconds_count', { job: 'retry-once', outcome: 'retried' })).toBe(1);
    // What the tables say: two failed, two limited jobs put back for an hour.
    expect(await count(mq.knex, mq.tables.failedJobs, { queue: 'm' })).toBe(2);
    expect(await count(mq.knex, mq.tables.jobs, { queue: 'm', name: 'limited' })).toBe(2);
  });

  it('the queue gauges match the tables', async () => {
    const metrics = parsePrometheusText(await workerRegistry.metrics());
    expect(valueOf(metrics, 'mailq_queue_jobs', { queue: 'm', state: 'failed' })).toBe(await count(mq.knex, mq.tables.failedJobs, { queue: 'm' }));
    expect(valueOf(metrics, 'mailq_queue_jobs', { queue: 'm', state: 'delayed' })).toBe(2);
    expect(valueOf(metrics, 'mailq_queue_jobs', { queue: 'm', state: 'pending' })).toBe(0);
    expect(valueOf(metrics, 'mailq_queue_oldest_wait_seconds', { queue: 'm' })).toBe(0);
    expect(valueOf(metrics, 'mailq_workers_alive')).toBe(0);
    expect(valueOf(metrics, 'mailq_rate_limit_limit', { key: 'tight' })).toBe(1);
    expect(valueOf(metrics, 'mailq_rate_limit_used', { key: 'tight' })).toBe(1);
    expect(valueOf(metrics, 'mailq_rate_limit_wait_seconds', { key: 'tight' })).toBeGreaterThan(3500);
    expect(valueOf(metrics, 'mailq_rate_limit_paused', { key: 'tight' })).toBe(0);
    await mq.rateLimits.pause(resolveRateLimit(limited.rateLimit!), '2h');
    await mq.controls.pause(['m']);
    const after = parsePrometheusText(await workerRegistry.metrics());
    expect(valueOf(after, 'mailq_rate_limit_paused', { key: 'tight' })).toBe(1);
    expect(valueOf(after, 'mailq_queue_paused', { queue: 'm' })).toBe(1);
    await mq.controls.resume(['m']);
  });

  it('the cluster counters (from the per-minute rollup) match the work done since they were registered', async () => {
    const metrics = parsePrometheusText(await clusterRegistry.metrics());
    expect(valueOf(metrics, 'mailq_jobs_completed_total', { queue: 'm' })).toBe(7);
    expect(valueOf(metrics, 'mailq_jobs_failed_total', { queue: 'm' })).toBe(2);
    expect(valueOf(metrics, 'mailq_jobs_retried_total', { queue: 'm' })).toBe(1);
    expect(valueOf(metrics, 'mailq_jobs_deferred_total', { queue: 'm' })).toBe(2);
    // A second scrape adds nothing new: the rows did not grow.
    const again = parsePrometheusText(await clusterRegistry.metrics());
    expect(valueOf(again, 'mailq_jobs_completed_total', { queue: 'm' })).toBe(7);
  });
});

describe('mailq work --metrics-port', () => {
  let cli: CliProcess | undefined;
  afterAll(() => killIfRunning(cli));

  it('serves one worker process’s counters and the queue’s gauges', async () => {
    await createSideEffectTables(mq.knex);
    await mq.dispatchMany('record', [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: 'scraped' });
    const port = await freePort();
    cli = startCli(['work', '--queue', 'scraped', '--jobs', FIXTURE_JOBS, '--metrics-port', String(port), '--sleep', '50ms'], { MAILQ_DATABASE_URL: db.url });
    const text = await waitFor('3 completed jobs on /metrics', async () => {
      const body = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).catch(() => '');
      return body && valueOf(parsePrometheusText(body), 'mailq_jobs_completed_total', { queue: 'scraped', job: 'record' }) === 3 ? body : undefined;
    });
    const metrics = parsePrometheusText(text);
    expect(valueOf(metrics, 'mailq_queue_jobs', { queue: 'scraped', state: 'pending' })).toBe(0);
    expect(await count(mq.knex, 'test_runs')).toBe(3);
    expect(text).not.toContain(db.url);
    cli.child.kill('SIGTERM');
    expect((await cli.exited).code).toBe(0);
  });

  it('refuses --metrics-port with several processes: one port serves one process', async () => {
    const refused = startCli(['work', '--queue', 'scraped', '--jobs', FIXTURE_JOBS, '--metrics-port', '9999', '--processes', '2'], { MAILQ_DATABASE_URL: db.url });
    expect((await refused.exited).code).toBe(2);
    expect(refused.output()).toContain('--metrics-port serves one worker process');
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
