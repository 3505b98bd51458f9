import { spawn } from 'node:child_process';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger, createMailq, defineJob, resolveRateLimit, type Mailq } from '../src/index.js';
import { startFakeTws } from '../src/mailbox/fake-tws.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

const silent = createLogger({ level: 'silent' });
let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('ratelimit');
  mq = createMailq({ databaseUrl: db.url, logger: silent, poolMax: 25 });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex(mq.tables.jobs).delete();
  await mq.knex(mq.tables.rateLimits).delete();
});

/** The most events in any window of `windowMs` (half-open: [t, t + windowMs)). */
function busiestWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  let start = 0;
  for (let end = 0; end < sorted.length; end++) {
    while (sorted[end]! - sorted[start]! >= windowMs) start++;
    most = Math.max(most, end - start + 1);
  }
  return most;
}

describe('the limiter', () => {
  it('never grants more than the limit to concurrent takers, and refunds and pauses', async () => {
    const limit = resolveRateLimit({ key: 'concurrent', limit: 20, per: '10s' });
    const results = await Promise.all(Array.from({ length: 40 }, () => mq.rateLimits.acquire(limit, 3)));
    expect(results.reduce((sum, result) => sum + result.granted, 0)).toBe(20);
    const starved = results.find((result) => result.granted === 0)!;
    // The next token frees one window after the first was taken: about 10.2 s away.
    expect(starved.nextInMs).toBeGreaterThan(9_000);
    expect(await mq.rateLimits.status(limit)).toMatchObject({ slots: 20, free: 0 });

    const lucky = results.find((result) => result.granted === 3)!;
    await mq.rateLimits.refund(limit, lucky.stampedAt!, 2);
    expect(await mq.rateLimits.status(limit)).toMatchObject({ free: 2 });

    await mq.rateLimits.pause(limit, '30s');
    const paused = await mq.rateLimits.status(limit);
    expect(paused.free).toBe(0);
    expect(paused.nextInMs).toBeGreaterThan(29_000);
    expect((await mq.rateLimits.acquire(limit, 1)).granted).toBe(0);
  });

  it('follows a changed limit: more slots when raised, fewer when lowered', async () => {
    const [low, high] = [resolveRateLimit({ key: 'resize', limit: 3, per: '1m' }), resolveRateLimit({ key: 'resize', limit: 7, per: '1m' })];
    expect((await mq.rateLimits.acquire(low, 10)).granted).toBe(3);
    const { RateLimiter } = await import('../src/ratelimit/limiter.js');
    // A fresh process (a redeploy) with a higher limit: four more tokens, never the used ones again.
    expect((await new RateLimiter(mq.knex, mq.tables).acquire(high, 10)).granted).toBe(4);
    await new RateLimiter(mq.knex, mq.tables).prepare(resolveRateLimit({ key: 'resize', limit: 2, per: '1m' }));
    expect(await mq.knex(mq.tables.rateLimits).where({ limit_key: 'resize' }).count({ n: '*' })).toEqual([{ n: 2 }]);
  });

  it('rejects a bad rate limit when the job is defined', () => {
    expect(() => defineJob({ name: 'bad', rateLimit: { key: 'k', limit: 0, per: '1m' }, handle() {} })).toThrow('defineJob(bad).rateLimit: limit must be an integer from 1 to 100000');
    expect(() => defineJob({ name: 'bad', rateLimit: { key: '', limit: 1, per: '1m' }, handle() {} })).toThrow('key must be a non-empty string');
  });
});

describe('workers under a rate limit', () => {
  it('puts a limited job claimed from another queue back as a deferral, without spending its attempt', async () => {
    const limited = defineJob({ name: 'limited', queue: 'limited', tries: 1, rateLimit: { key: 'stray', limit: 2, per: '1s', margin: 0 }, handle() {} });
    const limit = resolveRateLimit(limited.rateLimit!);
    expect((await mq.rateLimits.acquire(limit, 2)).granted).toBe(2);
    // Dispatched onto a queue the limit is not applied to: the worker must still respect it.
    await mq.dispatch(limited, {}, { queue: 'elsewhere' });
    const worker = mq.worker({ queues: ['elsewhere'], jobs: [limited], once: true, sleep: '10ms' });
    const deferred = new Promise<number>((resolve) => worker.once('job:deferred', (_job, delayMs) => resolve(delayMs)));
    const run = worker.run();
    expect(await deferred).toBeGreaterThan(0);
    const [row] = await mq.knex(mq.tables.jobs).select('attempts', 'deferrals', 'reserved_at', 'last_error');
    expect(row).toMatchObject({ attempts: 0, deferrals: 1, reserved_at: null, last_error: "rate limit 'stray': waiting for a token" });
    expect(await run).toBe('once');
    expect(await mq.knex(mq.tables.jobs).count({ n: '*' })).toEqual([{ n: 0 }]);
    expect(await mq.failed.count()).toBe(0);
  });

  it('a 429 pauses the key for everyone through ctx.rateLimit.pauseFor, and the job is deferred, not failed', async () => {
    let calls = 0;
    const polite = defineJob({
      name: 'polite',
      queue: 'polite',
      tries: 1,
      rateLimit: { key: 'upstream', limit: 50, per: '1m' },
      async handle(_payload, ctx) {
        calls++;
        if (calls === 1) {
          await ctx.rateLimit!.pauseFor('20s');
          ctx.defer('20s', 'upstream said 429');
        }
      },
    });
    await mq.dispatch(polite, {});
    const worker = mq.worker({ queues: ['polite'], jobs: [polite], once: true });
    await worker.run();
    const status = await mq.rateLimits.status(resolveRateLimit(polite.rateLimit!));
    expect(status).toMatchObject({ slots: 50, free: 0 });
    expect(status.nextInMs).toBeGreaterThan(15_000);
    expect(status.nextInMs).toBeLessThanOrEqual(20_000);
    const [row] = await mq.knex(mq.tables.jobs).select('attempts', 'deferrals', 'last_error');
    expect(row).toMatchObject({ attempts: 0, deferrals: 1, last_error: 'upstream said 429' });
  });

  it('stamps a job\'s token again when the job ends, so the window counts from its end', async () => {
    const slow = defineJob({
      name: 'slow',
      queue: 'slow',
      rateLimit: { key: 'restamp', limit: 1, per: '1s', margin: 0 },
      async handle() {
        await new Promise((resolve) => setTimeout(resolve, 600));
      },
    });
    await mq.dispatch(slow, {});
    await mq.worker({ queues: ['slow'], jobs: [slow], once: true }).run();
    // Stamped at the claim only, the slot would free ~400 ms from now; stamped at the end, ~1 s.
    expect((await mq.rateLimits.status(resolveRateLimit(slow.rateLimit!))).nextInMs).toBeGreaterThan(700);
  });

  it('3 worker processes never exceed 20 requests per 2 s at the fake TWS, and spend no attempt waiting', async () => {
    const rate = { limit: 20, perMs: 2_000 };
    // The fake enforces the same limit itself: a single request over it would be a 429.
    const tws = await startFakeTws({ rateLimit: rate });
    const jobs = 60;
    try {
      await mq.dispatchMany('call-tws', Array.from({ length: jobs }, (_, n) => ({ n })), { queue: 'tws', tries: 1 });
      // The default margin (2% of the window: 40 ms). A token is stamped again when its job ends, so a
      // cold process whose first request leaves 300 ms after its token still keeps the window.
      const env = { ...process.env, FAKE_TWS_URL: tws.url, RL_LIMIT: String(rate.limit), RL_PER: `${rate.perMs}ms`, MAILQ_LOG_LEVEL: 'warn' };
      // Claim-ahead on: a rate-limited queue must still be claimed only for slots free now.
      const args = ['bin/mailq.js', 'work', '--queue', 'tws', '--concurrency', '8', '--prefetch', '8', '--stop-when-empty', '--sleep', '20ms', '--jobs', 'test/fixtures/tws-rate-jobs.mjs', '--database-url', db.url];
      const exits = await Promise.all(Array.from({ length: 3 }, () => runProcess(args, env)));
      for (const exit of exits) expect(exit, exit.stderr).toMatchObject({ code: 0 });

      const stats = tws.stats();
      expect(stats.rateLimited).toBe(0);
      expect(stats.ok).toBe(jobs);
      expect(busiestWindow(stats.requestTimes, rate.perMs)).toBe(rate.limit);
      // Every payload ran once, on its first attempt: waiting never cost an attempt.
      expect(Object.keys(stats.perTaxpayer).sort()).toEqual(Array.from({ length: jobs }, (_, n) => `${n}-a1`).sort());
      expect(await mq.knex(mq.tables.jobs).count({ n: '*' })).toEqual([{ n: 0 }]);
      expect(await mq.failed.count()).toBe(0);
    } finally {
      await tws.close();
    }
  });
});

function runProcess(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}
