import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSettings } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { createMailq, type Mailq } from '../src/mailq.js';
import { startFakeTws, type FakeTws } from '../src/mailbox/fake-tws.js';
import { dispatchMailboxSync } from '../src/mailbox/dispatch.js';
import { mailboxSyncJob, MAILBOX_SYNC_QUEUE, TWS_RATE_LIMIT_KEY } from '../src/mailbox/job.js';
import { mailboxJobOptions } from '../src/mailbox/from-settings.js';
import { migrateMailbox } from '../src/mailbox/schema.js';
import { mailboxTables } from '../src/mailbox/tables.js';
import { MailboxSync } from '../src/mailbox/sync.js';
import { resolveRateLimit } from '../src/ratelimit/rate-limit.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { seedTaxpayers } from './support/mailbox.js';

const TOKEN = 'tws-token-protect';
let db: TestDatabase;
const open: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  db = await createTestDatabase('mailbox-protect');
});

afterAll(async () => {
  for (const resource of open.reverse()) await resource.close();
  await db.drop();
});

async function setUp(prefix: string, tws: FakeTws, rate: { limit: number; per: string }) {
  const mq = createMailq({ databaseUrl: db.url, tablePrefix: prefix, logger: createLogger({ level: 'silent' }) });
  open.push(mq);
  await mq.migrate();
  await migrateMailbox(mq);
  const sync = new MailboxSync({ knex: mq.knex, tables: mailboxTables(mq), tws: { url: tws.url, token: TOKEN } });
  const job = mailboxSyncJob(sync, { tries: 1, rateLimit: { key: TWS_RATE_LIMIT_KEY, ...rate } });
  mq.registry.add(job);
  const ids = await seedTaxpayers(sync.store, 3);
  return { mq, job, ids, limit: resolveRateLimit(job.rateLimit!) };
}

async function fakeTws(options: Parameters<typeof startFakeTws>[0]): Promise<FakeTws> {
  const tws = await startFakeTws({ token: TOKEN, ...options });
  open.push(tws);
  return tws;
}

async function runOnce(mq: Mailq): Promise<void> {
  await mq.worker({ queues: [MAILBOX_SYNC_QUEUE], once: true, sleep: '10ms', sweepInterval: 0 }).run();
}

describe('the mailbox job under the TWS rate limit', () => {
  it('takes its limit from MAILQ_TWS_RATE_LIMIT (tws.rateLimit); off turns it off; a bad one is a config error', () => {
    const settings = (rateLimit?: string) => parseSettings({ databaseUrl: 'mysql://root@127.0.0.1/x', mailbox: {}, ...(rateLimit ? { tws: { rateLimit } } : {}) });
    expect(mailboxJobOptions(settings()).rateLimit).toEqual({ key: 'tws-api', limit: 100, per: '60000ms' });
    expect(mailboxJobOptions(settings('10/s')).rateLimit).toEqual({ key: 'tws-api', limit: 10, per: '1000ms' });
    expect(mailboxJobOptions(settings('off')).rateLimit).toBeUndefined();
    expect(() => settings('fast')).toThrow('invalid setting tws.rateLimit: Invalid rate "fast": expected <count>/<period>, like 100/min, 10/s or 60/1m (units: ms, s, m/min, h, d), or off');
  });

  it('takes one token when claimed and one per further page', async () => {
    // 120 messages in pages of 50: three requests.
    const tws = await fakeTws({ pageSize: 50, messagesPerTaxpayer: () => 120 });
    const { mq, ids, limit } = await setUp('pages_', tws, { limit: 100, per: '1m' });
    await mq.dispatch('sync-taxpayer-mailbox', { taxpayerId: ids[0]! });
    await runOnce(mq);
    expect(tws.stats().ok).toBe(3);
    expect(await mq.rateLimits.status(limit)).toMatchObject({ slots: 100, free: 97 });
  });

  it('a 429 pauses the key for every worker for Retry-After and defers the job without spending its attempt', async () => {
    const tws = await fakeTws({ rateLimit: { limit: 1, perMs: 8_000 } });
    const { mq, ids, limit } = await setUp('pause_', tws, { limit: 50, per: '1m' });
    // Someone else used TWS's only request of the window: ours gets a 429 with Retry-After: 8.
    await fetch(`${tws.url}/taxpayers/x/mailbox`, { headers: { authorization: `Bearer ${TOKEN}` } });
    await mq.dispatch('sync-taxpayer-mailbox', { taxpayerId: ids[0]! });
    await runOnce(mq);
    expect(tws.stats().rateLimited).toBe(1);
    const status = await mq.rateLimits.status(limit);
    expect(status.free).toBe(0);
    expect(status.nextInMs).toBeGreaterThan(6_000);
    expect(status.nextInMs).toBeLessThanOrEqual(8_000);
    const [row] = await mq.knex(mq.tables.jobs).select('attempts', 'deferrals');
    expect(row).toEqual({ attempts: 0, deferrals: 1 });
  });

  it('direct mode (sync-mailbox without --queue) takes a token per request too', async () => {
    const tws = await fakeTws({ pageSize: 50, messagesPerTaxpayer: () => 60 });
    const { mq, ids, limit } = await setUp('direct_', tws, { limit: 100, per: '1m' });
    const { main } = await import('../src/cli/main.js');
    const lines: string[] = [];
    const output = { isTTY: false, out: (text: string) => void lines.push(text), err: (text: string) => void lines.push(text) };
    const env = { MAILQ_TWS_URL: tws.url, MAILQ_TWS_TOKEN: TOKEN, MAILQ_TWS_RATE_LIMIT: '100/min' };
    Object.assign(process.env, env);
    try {
      expect(await main(['sync-mailbox', '--taxpayer', String(ids[0]), '--taxpayer', String(ids[1]), '--database-url', db.url, '--prefix', 'direct_'], output), lines.join('\n')).toBe(0);
    } finally {
      for (const name of Object.keys(env)) delete process.env[name];
    }
    // Two taxpayers of two pages each: four requests, four tokens.
    expect(tws.stats().ok).toBe(4);
    expect(await mq.rateLimits.status(limit)).toMatchObject({ slots: 100, free: 96 });
  });

  it('sync-mailbox --queue makes one batch, and skips taxpayers still pending', async () => {
    const tws = await fakeTws({});
    const { mq, ids } = await setUp('batch_', tws, { limit: 100, per: '1m' });
    await mq.dispatch('sync-taxpayer-mailbox', { taxpayerId: ids[1]! });
    const result = await dispatchMailboxSync(mq);
    expect(result).toMatchObject({ taxpayers: 3, dispatched: 2, skipped: 1 });
    expect(await mq.batches.find(result.batchId!)).toMatchObject({ total: 2, pending: 2, state: 'running' });
    await mq.worker({ queues: [MAILBOX_SYNC_QUEUE], concurrency: 4, stopWhenEmpty: true, sleep: '10ms', sweepInterval: 0 }).run();
    expect(await mq.batches.find(result.batchId!)).toMatchObject({ total: 2, pending: 0, failed: 0, state: 'finished' });
  });
});
