import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, createMailq, defineJob, PermanentError, startDashboard, type Dashboard, type Mailq } from '../src/index.js';
import { CSRF_HEADER, dashboardApp } from '../src/dashboard/server.js';
import { resolveRateLimit } from '../src/ratelimit/rate-limit.js';
import { createLogger } from '../src/logger.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, waitFor } from './support/queue.js';

/** Fails until `healed` is set: a failed job the page retries then succeeds. */
let healed = false;
const flaky = defineJob<{ n: number }>({
  name: 'flaky',
  queue: 'dash',
  tries: 1,
  handle: ({ n }) => {
    if (!healed) throw new PermanentError(n % 2 ? `TWS said 404: taxpayer 2010000${n} unknown` : `TWS said 403: token refused for 2010000${n}`);
  },
});
const ok = defineJob<{ n: number }>({ name: 'ok', queue: 'dash', handle: () => undefined });

let db: TestDatabase;
let mq: Mailq;
let dashboard: Dashboard;
let csrf: string;
let batchId: string;

/** The API's answers are JSON whose shape the assertions check. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ApiResponse = Omit<Response, 'json'> & { json(): Promise<any> };

async function get(path: string, init: RequestInit = {}): Promise<ApiResponse> {
  return fetch(`${dashboard.url}${path}`, init);
}

async function post(path: string, body: unknown, headers: Record<string, string> = { [CSRF_HEADER]: csrf }): Promise<ApiResponse> {
  return fetch(`${dashboard.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

beforeAll(async () => {
  db = await createTestDatabase('dashboard api');
  mq = createMailq({ databaseUrl: db.url, jobs: [flaky, ok], logger: createLogger({ level: 'silent' }) });
  await mq.migrate();
  // Six failures (four in a batch), three jobs left waiting, one delayed, a rate limit paused by a 429.
  batchId = (await mq.batch(flaky, [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 5 }], { name: 'nightly sync' })).id;
  await mq.dispatchMany(flaky, [{ n: 7 }, { n: 8 }]);
  await mq.worker({ queues: ['dash'], stopWhenEmpty: true, heartbeat: 0 }).run();
  await mq.dispatchMany(ok, [{ n: 1 }, { n: 2 }, { n: 3 }]);
  await mq.dispatch(ok, { n: 4 }, { delay: '1h' });
  const tws = resolveRateLimit({ key: 'tws-api', limit: 5, per: '1m' });
  await mq.rateLimits.acquire(tws, 2);
  await mq.rateLimits.pause(tws, '45s');
  dashboard = await startDashboard(mq, { port: 0 });
  csrf = /name="mailq-csrf" content="([^"]+)"/.exec(await (await get('/')).text())![1]!;
});

afterAll(async () => {
  await dashboard?.close();
  await mq?.close();
  await db?.drop();
});

describe('the JSON API reads through the library', () => {
  it('shows per-queue counts equal to the tables, batches with reasons, and rate limits', async () => {
    const overview = await (await get('/api/overview')).json();
    const dash = overview.queues.find((queue: { queue: string }) => queue.queue === 'dash');
    expect(dash).toMatchObject({ pending: 3, delayed: 1, reserved: 0, failed: 6, paused: false });
    expect(await count(mq.knex, mq.tables.jobs, { queue: 'dash' })).toBe(4);
    expect(await count(mq.knex, mq.tables.failedJobs, { queue: 'dash' })).toBe(6);
    expect(overview.minutes).toHaveLength(60);
    expect(overview.series.dash.failed).toHaveLength(60);
    const [batch] = overview.batches;
    expect(batch).toMatchObject({ id: batchId, name: 'nightly sync', total: 4, failed: 4, progress: 100, state: 'finished' });
    expect(batch.reasons).toEqual([
      { reason: 'PermanentError: TWS said 404: taxpayer # unknown', count: 3 },
      { reason: 'PermanentError: TWS said 403: token refused for #', count: 1 },
    ]);
    const [limit] = overview.rateLimits;
    expect(limit).toMatchObject({ key: 'tws-api', limit: 5, perMs: 60_000, used: 5 });
    expect(Date.parse(limit.pausedUntil)).toBeGreaterThan(Date.parse(overview.checkedAt) + 40_000);
  });

  it('lists failed jobs by queue or batch without payloads, and shows one with payload and exception', async () => {
    const all = await (await get('/api/failed?queue=dash')).json();
    expect(all.total).toBe(6);
    expect(all.jobs).toHaveLength(6);
    expect(all.jobs[0]).not.toHaveProperty('payload');
    const inBatch = await (await get(`/api/failed?batch=${batchId}`)).json();
    expect(inBatch.total).toBe(4);
    expect(inBatch.jobs.every((job: { batchId: string }) => job.batchId === batchId)).toBe(true);
    const one = await (await get(`/api/failed/${inBatch.jobs[0].id}`)).json();
    const row = await mq.knex(mq.tables.failedJobs).where({ id: inBatch.jobs[0].id }).first();
    expect(one.payload).toEqual(typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload);
    expect(one.exception).toBe(row.exception);
    expect(one.exception).toMatch(/TWS said 40[34]/);
    expect((await get('/api/failed/999999')).status).toBe(404);
  });

  it('retries one failed job back into jobs, and a worker then finishes it', async () => {
    const [job] = (await (await get('/api/failed?queue=dash&limit=1')).json()).jobs;
    const response = await post('/api/failed/retry', { ids: [job.id] });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ retried: 1, missing: [] });
    expect(await count(mq.knex, mq.tables.failedJobs, { id: job.id })).toBe(0);
    expect(await count(mq.knex, mq.tables.jobs, { uuid: job.uuid })).toBe(1);
    healed = true;
    await mq.worker({ queues: ['dash'], stopWhenEmpty: true, heartbeat: 0 }).run();
    healed = false;
    expect(await count(mq.knex, mq.tables.jobs, { uuid: job.uuid })).toBe(0);
    expect(await count(mq.knex, mq.tables.failedJobs, { uuid: job.uuid })).toBe(0);
  });

  it('forgets a selection, and all of a batch', async () => {
    const { jobs } = await (await get('/api/failed?queue=dash')).json();
    const outside = jobs.filter((job: { batchId: string | null }) => job.batchId === null).map((job: { id: number }) => job.id);
    expect(await (await post('/api/failed/forget', { ids: outside })).json()).toEqual({ forgotten: outside.length });
    const before = await count(mq.knex, mq.tables.failedJobs);
    const batchFailures = await count(mq.knex, mq.tables.failedJobs, { batch_id: batchId });
    expect(batchFailures).toBeGreaterThan(0);
    expect(await (await post('/api/failed/forget', { all: true, batch: batchId })).json()).toEqual({ forgotten: batchFailures });
    expect(await count(mq.knex, mq.tables.failedJobs)).toBe(before - batchFailures);
  });

  it('pauses and resumes a queue in queue_controls', async () => {
    expect((await post('/api/queues/pause', { queue: 'dash' })).status).toBe(200);
    expect((await mq.controls.read()).isPaused('dash')).toBe(true);
    expect((await (await get('/api/overview')).json()).queues.find((q: { queue: string }) => q.queue === 'dash').paused).toBe(true);
    expect((await post('/api/queues/resume', { queue: 'dash' })).status).toBe(200);
    expect((await mq.controls.read()).isPaused('dash')).toBe(false);
  });

  it('answers a malformed request with 400 and the reason, and a huge one with 413', async () => {
    const response = await post('/api/failed/retry', { ids: [1], all: true });
    expect(response.status).toBe(400);
    expect((await response.json()).error).toContain('either ids or all');
    const app = dashboardApp(mq, { host: '127.0.0.1', csrfToken: 'x'.repeat(24) });
    const huge = JSON.stringify({ ids: Array.from({ length: 100_000 }, (_, i) => i + 1) });
    const refused = await app.request('/api/failed/forget', { method: 'POST', headers: { host: '127.0.0.1', 'content-type': 'application/json', [CSRF_HEADER]: 'x'.repeat(24) }, body: huge });
    expect(refused.status).toBe(413);
  });
});

describe('who may use it', () => {
  it('refuses a POST without the anti-CSRF token, from another origin, or marked cross-site; and any other method', async () => {
    expect((await post('/api/queues/pause', { queue: 'dash' }, {})).status).toBe(403);
    expect((await post('/api/queues/pause', { queue: 'dash' }, { [CSRF_HEADER]: 'wrong' })).status).toBe(403);
    expect((await post('/api/queues/pause', { queue: 'dash' }, { [CSRF_HEADER]: csrf, origin: 'http://evil.example' })).status).toBe(403);
    expect((await post('/api/queues/pause', { queue: 'dash' }, { [CSRF_HEADER]: csrf, 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await fetch(`${dashboard.url}/api/queues/pause`, { method: 'PUT', headers: { [CSRF_HEADER]: csrf } })).status).toBe(405);
    expect((await mq.controls.read()).isPaused('dash')).toBe(false);
  });

  it('on loopback, refuses a Host name that is not loopback (DNS rebinding)', async () => {
    const app = dashboardApp(mq, { host: '127.0.0.1', csrfToken: 'x'.repeat(24) });
    expect((await app.request('/api/overview', { headers: { host: 'attacker.example:8080' } })).status).toBe(403);
    expect((await app.request('/api/overview', { headers: { host: 'localhost:8080' } })).status).toBe(200);
  });

  it('will not start beyond loopback without a token, nor with a short one', async () => {
    await expect(startDashboard(mq, { host: '0.0.0.0', port: 0 })).rejects.toThrow(ConfigError);
    await expect(startDashboard(mq, { host: '0.0.0.0', port: 0 })).rejects.toThrow(/without a token/);
    await expect(startDashboard(mq, { host: '127.0.0.1', port: 0, token: 'short' })).rejects.toThrow(/at least 16/);
  });

  it('beyond loopback, checks the token on every request: bearer, or the cookie /?token= sets', async () => {
    const token = 'a-long-enough-test-token-1234';
    const open = await startDashboard(mq, { host: '0.0.0.0', port: 0, token });
    try {
      const base = `http://127.0.0.1:${open.port}`;
      for (const path of ['/', '/api/overview', '/api/failed', '/metrics', '/ui/app.js']) expect((await fetch(`${base}${path}`)).status).toBe(401);
      expect((await fetch(`${base}/api/overview`, { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status).toBe(401);
      expect((await fetch(`${base}/api/overview`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
      const login = await fetch(`${base}/?token=${token}`, { redirect: 'manual' });
      expect(login.status).toBe(303);
      expect(login.headers.get('location')).toBe('/');
      const cookie = login.headers.get('set-cookie')!;
      expect(cookie).toMatch(/HttpOnly/i);
      expect(cookie).toMatch(/SameSite=Strict/i);
      expect((await fetch(`${base}/api/overview`, { headers: { cookie: cookie.split(';')[0]! } })).status).toBe(200);
      // The token gets in; it does not replace the anti-CSRF check on POSTs.
      const blind = await fetch(`${base}/api/queues/pause`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"queue":"dash"}' });
      expect(blind.status).toBe(403);
    } finally {
      await open.close();
    }
  });

  it('never serves the database URL, even when the database fails', async () => {
    const responses = await Promise.all(['/', '/api/overview', '/api/failed', '/metrics', '/ui/app.js'].map((path) => get(path).then((r) => r.text())));
    const failing = dashboardApp(
      { ...mq, monitor: { status: () => Promise.reject(new Error(`connect ECONNREFUSED ${db.url}`)), perMinute: mq.monitor.perMinute.bind(mq.monitor) }, failed: mq.failed, batches: mq.batches, rateLimits: mq.rateLimits, controls: mq.controls },
      { host: '127.0.0.1', csrfToken: 'x'.repeat(24) },
    );
    const error = await failing.request('/api/overview', { headers: { host: '127.0.0.1' } });
    expect(error.status).toBe(500);
    responses.push(await error.text());
    const { host, pathname } = new URL(db.url);
    for (const body of responses) {
      expect(body).not.toContain(db.url);
      expect(body).not.toContain('mysql://');
      expect(body).not.toContain(`${host}${pathname}`);
    }
  });

  it('sends a Content-Security-Policy that allows only its own scripts, and no framing', async () => {
    const csp = (await get('/')).headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
  });
});

it('serves the page files from the package and nothing else', async () => {
  expect((await get('/ui/app.js')).headers.get('content-type')).toContain('javascript');
  expect((await get('/ui/..%2Fserver.ts')).status).toBe(404);
  expect((await get('/ui/index.ts')).status).toBe(404);
  await waitFor('page', async () => (await (await get('/')).text()).includes('<script type="module" src="/ui/app.js">'));
});
