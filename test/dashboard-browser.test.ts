import { mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMailq, defineJob, PermanentError, startDashboard, type Dashboard, type Mailq } from '../src/index.js';
import { resolveRateLimit } from '../src/ratelimit/rate-limit.js';
import { createLogger } from '../src/logger.js';
import { browserMissing, launchChromium } from './support/browser.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, ROOT, sleep, waitFor } from './support/queue.js';

const skipped = browserMissing();
if (skipped) console.warn(`dashboard browser test skipped: ${skipped}`);

/** The page's screenshot, for a person to look at after the run (not committed). */
const SCREENSHOT = path.join(ROOT, 'test', 'artifacts', 'dashboard-e2e.png');

let healed = false;
const sync = defineJob<{ taxpayer: number }>({
  name: 'sync-taxpayer',
  queue: 'nightly',
  tries: 1,
  handle: ({ taxpayer }) => {
    if (!healed) throw new PermanentError(`TWS answered 404 for taxpayer ${taxpayer}`);
  },
});
const mail = defineJob<{ n: number }>({ name: 'send-mail', queue: 'web', handle: () => undefined });

let db: TestDatabase;
let mq: Mailq;
let dashboard: Dashboard;
let browser: Browser;
let page: Page;

const row = (queue: string) => page.locator(`[data-testid="queues"] tr[data-queue="${queue}"]`);
const cell = (queue: string, field: string) => row(queue).locator(`td[data-field="${field}"]`);

describe.skipIf(skipped)('the dashboard in headless Chromium', () => {
  beforeAll(async () => {
    db = await createTestDatabase('dashboard browser');
    mq = createMailq({ databaseUrl: db.url, jobs: [sync, mail], logger: createLogger({ level: 'silent' }) });
    await mq.migrate();
    await mq.batch(sync, [{ taxpayer: 11 }, { taxpayer: 12 }, { taxpayer: 13 }], { name: 'nightly mailbox sync' });
    await mq.worker({ queues: ['nightly'], stopWhenEmpty: true, heartbeat: 0 }).run();
    await mq.dispatchMany(mail, [1, 2, 3, 4].map((n) => ({ n })));
    await mq.dispatch(mail, { n: 5 }, { delay: '1h' });
    await mq.rateLimits.acquire(resolveRateLimit({ key: 'tws-api', limit: 10, per: '1m' }), 3);
    dashboard = await startDashboard(mq, { port: 0, refreshMs: 250 });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('dialog', (dialog) => void dialog.accept());
    await page.goto(dashboard.openUrl);
    await row('web').waitFor();
  });

  afterAll(async () => {
    await browser?.close();
    await dashboard?.close();
    await mq?.close();
    await db?.drop();
  });

  it('shows the counts the tables hold, the batch, the rate limit; and saves a screenshot', async () => {
    const pending = await count(mq.knex, mq.tables.jobs, { queue: 'web', reserved_at: null });
    expect(await cell('web', 'pending').textContent()).toBe(String(pending - 1)); // one of them is delayed
    expect(await cell('web', 'delayed').textContent()).toBe('1');
    expect(await cell('nightly', 'failed').textContent()).toBe(String(await count(mq.knex, mq.tables.failedJobs, { queue: 'nightly' })));
    await expect.poll(() => page.locator('[data-testid="failed"] tbody tr[data-id]').count()).toBe(3);
    expect(await page.locator('[data-testid="batches"]').textContent()).toContain('nightly mailbox sync');
    expect(await page.locator('[data-testid="batches"]').textContent()).toContain('3 / 3 · 3 failed');
    expect(await page.locator('[data-testid="rate-limits"]').textContent()).toContain('3 / 10 per');
    await mkdir(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  });

  it("shows one failed job's payload and exception; retrying it moves it back to jobs, and a worker finishes it", async () => {
    const [failed] = await mq.failed.list({ queue: 'nightly', limit: 1 });
    await page.locator(`[data-testid="failed"] tr[data-id="${failed!.id}"] [data-testid="show"]`).click();
    await expect.poll(() => page.locator('[data-testid="detail-payload"]').textContent()).toContain(`"taxpayer": ${(failed!.payload as { taxpayer: number }).taxpayer}`);
    expect(await page.locator('[data-testid="detail-exception"]').textContent()).toContain('TWS answered 404');
    await page.locator('[data-testid="detail-retry"]').click();
    await waitFor('the job back in jobs', async () => (await count(mq.knex, mq.tables.jobs, { uuid: failed!.uuid })) === 1);
    expect(await count(mq.knex, mq.tables.failedJobs, { uuid: failed!.uuid })).toBe(0);
    await expect.poll(() => page.locator('[data-testid="failed"] tbody tr[data-id]').count()).toBe(2);
    healed = true;
    await mq.worker({ queues: ['nightly'], stopWhenEmpty: true, heartbeat: 0 }).run();
    expect(await count(mq.knex, mq.tables.jobs, { uuid: failed!.uuid })).toBe(0);
    expect(await count(mq.knex, mq.tables.failedJobs, { uuid: failed!.uuid })).toBe(0);
  });

  it('pausing a queue from the page stops claims; resuming lets the worker drain it', async () => {
    await row('web').locator('[data-testid="pause"]').click();
    await row('web').locator('[data-testid="paused-badge"]').waitFor();
    expect((await mq.controls.read()).isPaused('web')).toBe(true);
    const worker = mq.worker({ queues: ['web'], heartbeat: '100ms', sleep: '20ms' });
    let started = 0;
    worker.on('job:started', () => started++);
    const running = worker.run();
    try {
      await sleep(1000);
      expect(started).toBe(0);
      expect(await count(mq.knex, mq.tables.jobs, { queue: 'web' })).toBe(5);
      await row('web').locator('[data-testid="resume"]').click();
      await waitFor('the due jobs drained', async () => (await count(mq.knex, mq.tables.jobs, { queue: 'web' })) === 1);
      expect(started).toBe(4);
    } finally {
      await worker.stop();
      await running;
    }
  });

  it('selecting failed jobs and forgetting them deletes exactly those', async () => {
    const ids = (await mq.failed.list({ queue: 'nightly' })).map((job) => job.id);
    expect(ids).toHaveLength(2);
    await expect.poll(() => page.locator('[data-testid="failed"] tbody tr[data-id]').count()).toBe(2);
    await page.locator(`[data-testid="failed"] tr[data-id="${ids[0]}"] input[type="checkbox"]`).check();
    await page.locator('[data-testid="forget-selected"]').click();
    await waitFor('one failed job forgotten', async () => (await count(mq.knex, mq.tables.failedJobs)) === 1);
    expect((await mq.failed.list()).map((job) => job.id)).toEqual([ids[1]]);
    await expect.poll(() => page.locator('[data-testid="failed-total"]').textContent()).toBe('(1)');
  });

  it('refuses a cross-site POST (a form on another origin)', async () => {
    const evil = await serveHtml(
      `<form id="f" method="POST" action="${dashboard.url}/api/queues/pause" enctype="text/plain"><input name='{"queue":"web","x":"' value='"}'></form><script>document.getElementById('f').submit()</script>`,
    );
    try {
      const answer = page.waitForResponse((response) => response.url().endsWith('/api/queues/pause'));
      await page.goto(evil.url);
      expect((await answer).status()).toBe(403);
      expect((await mq.controls.read()).isPaused('web')).toBe(false);
    } finally {
      await new Promise((resolve) => evil.server.close(resolve));
      await page.goto(dashboard.openUrl);
    }
  });

  it('bound beyond localhost, refuses the page without the token and serves it with', async () => {
    const token = 'browser-test-token-0123456789';
    const open = await startDashboard(mq, { host: '0.0.0.0', port: 0, token, refreshMs: 250 });
    try {
      const base = `http://127.0.0.1:${open.port}`;
      const refused = await page.goto(`${base}/`);
      expect(refused!.status()).toBe(401);
      expect(await page.textContent('body')).toContain('a token is needed');
      await page.goto(`${base}/?token=${token}`);
      expect(page.url()).toBe(`${base}/`);
      await row('web').waitFor();
      expect(await cell('web', 'delayed').textContent()).toBe('1');
    } finally {
      await open.close();
    }
  });
});

async function serveHtml(html: string): Promise<{ url: string; server: Server }> {
  const server = createServer((_request, response) => response.writeHead(200, { 'content-type': 'text/html' }).end(html));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  // Another origin than the dashboard's: localhost vs 127.0.0.1 and another port.
  return { url: `http://localhost:${(server.address() as { port: number }).port}/`, server };
}
