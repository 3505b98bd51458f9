import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { createMailq, type Mailq } from '../src/mailq.js';
import { parseJsonColumn } from '../src/db/json.js';
import { fakeMailboxMessages, startFakeTws, type FakeTws, type FakeTwsOptions } from '../src/mailbox/fake-tws.js';
import { dispatchMailboxSync } from '../src/mailbox/dispatch.js';
import { mailboxSyncJob, MAILBOX_SYNC_JOB, MAILBOX_SYNC_QUEUE, type MailboxSyncJobOptions } from '../src/mailbox/job.js';
import { MailboxSync } from '../src/mailbox/sync.js';
import { migrateMailbox } from '../src/mailbox/schema.js';
import { mailboxTables } from '../src/mailbox/tables.js';
import { createTwsClient, type TwsClient } from '../src/mailbox/tws.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { countRows, drain, seedTaxpayers, snapshot, taxIdOf, until } from './support/mailbox.js';

const TOKEN = 'tws-token-9f3a';
let db: TestDatabase;
const open: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  db = await createTestDatabase('mailbox-sync');
});

afterAll(async () => {
  for (const resource of open.reverse()) await resource.close();
  await db.drop();
});

interface Setup {
  mq: Mailq;
  tws: FakeTws;
  sync: MailboxSync;
  ids: number[];
}

/** Its own tables (a prefix per test), its own fake TWS, the job registered with the given options. */
async function setUp(prefix: string, taxpayers: number, fake: FakeTwsOptions, job: MailboxSyncJobOptions, client?: (tws: FakeTws) => TwsClient): Promise<Setup> {
  const mq = createMailq({ databaseUrl: db.url, tablePrefix: prefix, logger: createLogger({ level: 'silent' }) });
  open.push(mq);
  await mq.migrate();
  await migrateMailbox(mq);
  const tws = await startFakeTws({ token: TOKEN, ...fake });
  open.push(tws);
  const sync = new MailboxSync({ knex: mq.knex, tables: mailboxTables(mq), tws: client ? client(tws) : { url: tws.url, token: TOKEN } });
  mq.registry.add(mailboxSyncJob(sync, job));
  const ids = await seedTaxpayers(sync.store, taxpayers);
  return { mq, tws, sync, ids };
}

interface StoredMessage {
  tws_id: string;
  subject: string;
  sender: string;
  category: string;
  received_at: Date;
  is_read: number;
  body: string;
  attachments: unknown;
}

async function storedMessages(mq: Mailq, taxpayerId: number) {
  const rows = (await mq.knex(mailboxTables(mq).mailboxMessages).where({ taxpayer_id: taxpayerId }).orderBy('tws_id')) as StoredMessage[];
  return rows.map((row) => ({
    id: row.tws_id,
    subject: row.subject,
    sender: row.sender,
    category: row.category,
    receivedAt: row.received_at.toISOString(),
    read: Boolean(row.is_read),
    body: row.body,
    attachments: parseJsonColumn(row.attachments),
  }));
}

function expectedMessages(taxId: string, seed: number, messagesPerTaxpayer?: (id: string) => number) {
  return fakeMailboxMessages(taxId, { seed, messagesPerTaxpayer }).sort((a, b) => (a.id < b.id ? -1 : 1));
}

async function failedJobs(mq: Mailq) {
  const rows = (await mq.knex(mq.tables.failedJobs).select('payload', 'attempts', 'deferrals', 'exception').orderBy('id')) as Array<{ payload: unknown; attempts: number; deferrals: number; exception: string }>;
  return rows.map((row) => ({ taxpayerId: parseJsonColumn<{ taxpayerId: number }>(row.payload).taxpayerId, attempts: row.attempts, deferrals: row.deferrals, reason: row.exception.split('\n')[0]! }));
}

async function taxpayerRow(mq: Mailq, id: number) {
  return (await mq.knex(mailboxTables(mq).taxpayers).where({ id }).first()) as { last_sync_status: string | null; last_sync_error_code: string | null; last_sync_error: string | null; last_synced_at: Date | null };
}

describe('a full sync of 300 taxpayers through real workers, with transient TWS errors', () => {
  const seed = 7;
  const broken = [taxIdOf(17), taxIdOf(101), taxIdOf(202), taxIdOf(299)];
  const malformed = [taxIdOf(150)];
  let setup: Setup;

  beforeAll(async () => {
    setup = await setUp('full_', 300, { latencyMs: 2, errorRate: 0.1, brokenTaxpayers: broken, malformedTaxpayers: malformed, seed }, { tries: 5, backoff: '10ms' });
    const result = await dispatchMailboxSync(setup.mq);
    expect(result).toMatchObject({ taxpayers: 300, dispatched: 300, queue: MAILBOX_SYNC_QUEUE, tries: 5 });
    await drain(setup.mq, { workers: 2, concurrency: 8 });
  });

  it('stores every good taxpayer\'s messages exactly once, as TWS serves them', async () => {
    const { mq, ids, tws } = setup;
    let expectedTotal = 0;
    for (const [index, id] of ids.entries()) {
      const taxId = taxIdOf(index + 1);
      if (broken.includes(taxId) || malformed.includes(taxId)) {
        expect(await countRows(mq.knex, mailboxTables(mq).mailboxMessages, { taxpayer_id: id })).toBe(0);
        continue;
      }
      const expected = expectedMessages(taxId, seed);
      expectedTotal += expected.length;
      expect(await storedMessages(mq, id)).toEqual(expected);
      expect((await taxpayerRow(mq, id)).last_sync_status).toBe('ok');
    }
    expect(expectedTotal).toBeGreaterThan(1000);
    expect(await countRows(mq.knex, mailboxTables(mq).mailboxMessages)).toBe(expectedTotal);
    // The transient errors really happened, and the retries got past them.
    expect(tws.stats().serverErrors).toBeGreaterThan(10);
    expect(await countRows(mq.knex, mq.tables.jobs)).toBe(0);
  });

  it('sends the broken taxpayers to failed_jobs on their first attempt, with a readable reason', async () => {
    const { mq, ids, tws } = setup;
    const failed = await failedJobs(mq);
    const idOf = (taxId: string) => ids[Number(taxId) - 20_100_000_001]!;
    expect(failed.map((job) => job.taxpayerId).sort((a, b) => a - b)).toEqual([...broken, ...malformed].map(idOf).sort((a, b) => a - b));
    for (const [n, taxId] of broken.entries()) {
      const job = failed.find((entry) => entry.taxpayerId === idOf(taxId))!;
      const status = n % 2 === 0 ? 404 : 403;
      expect(job.attempts).toBe(1);
      expect(job.reason).toContain(`PermanentError: TWS request for taxpayer ${taxId}`);
      expect(job.reason).toContain(`answered ${status}`);
      // Refused once, asked once: no retry was spent on it.
      expect(tws.stats().perTaxpayer[taxId]!.requests).toBe(1);
      const row = await taxpayerRow(mq, idOf(taxId));
      expect(row).toMatchObject({ last_sync_status: 'failed', last_sync_error_code: status === 404 ? 'not-found' : 'forbidden', last_synced_at: null });
    }
    const garbled = failed.find((entry) => entry.taxpayerId === idOf(malformed[0]!))!;
    expect(garbled.attempts).toBe(5);
    expect(garbled.reason).toContain('returned a malformed mailbox page: messages[0].receivedAt');
    expect(await taxpayerRow(mq, idOf(malformed[0]!))).toMatchObject({ last_sync_status: 'failed', last_sync_error_code: 'malformed' });
  });

  it('changes no row when the same mailboxes are synced again from scratch', async () => {
    const { mq, tws } = setup;
    const before = await snapshot(mq.knex, mailboxTables(mq).mailboxMessages);
    // As if every job had died after writing but before recording its watermark: TWS sends it all again.
    await mq.knex(mailboxTables(mq).taxpayers).update({ last_synced_at: null });
    await mq.knex(mq.tables.failedJobs).delete();
    const okBefore = tws.stats().ok;
    await dispatchMailboxSync(setup.mq);
    await drain(mq, { workers: 2, concurrency: 8 });
    expect(tws.stats().ok - okBefore).toBeGreaterThanOrEqual(300 - broken.length - malformed.length);
    expect(await snapshot(mq.knex, mailboxTables(mq).mailboxMessages)).toEqual(before);
  });

  it('rewrites a message whose content TWS reports differently, and marks when', async () => {
    const { mq, ids } = setup;
    const target = (await mq.knex(mailboxTables(mq).mailboxMessages).where({ taxpayer_id: ids[0]! }).orderBy('id').first()) as { id: number; is_read: number; synced_at: Date; subject: string };
    await mq.knex(mailboxTables(mq).mailboxMessages).where({ id: target.id }).update({ is_read: target.is_read ? 0 : 1, subject: 'stale', content_hash: 'stale', synced_at: new Date('2020-01-01T00:00:00Z') });
    await mq.knex(mailboxTables(mq).taxpayers).where({ id: ids[0]! }).update({ last_synced_at: null });
    await mq.dispatch(MAILBOX_SYNC_JOB, { taxpayerId: ids[0]! });
    await drain(mq);
    const after = (await mq.knex(mailboxTables(mq).mailboxMessages).where({ id: target.id }).first()) as typeof target;
    expect({ is_read: after.is_read, subject: after.subject }).toEqual({ is_read: target.is_read, subject: target.subject });
    expect(after.synced_at.getTime()).toBeGreaterThan(new Date('2020-01-01T00:00:00Z').getTime());
  });
});

describe('TWS answers 429', () => {
  it('defers the job without burning an attempt, then syncs it', async () => {
    // One request per second, three taxpayers at once, and a single try: a burnt attempt would fail a job.
    const { mq, tws, ids } = await setUp('limit_', 3, { rateLimit: { limit: 1, perMs: 1_000 } }, { tries: 1 });
    await dispatchMailboxSync(mq);
    const deferredRows: unknown[] = [];
    const workers = await drain(mq, {
      concurrency: 3,
      onWorker: (worker) =>
        worker.on('job:deferred', (job) => {
          deferredRows.push(
            // .then() sends the query now, while the job waits out its deferral.
            mq.knex(mq.tables.jobs).where({ id: job.id }).first('attempts', 'deferrals', 'reserved_at', 'last_error', mq.knex.raw('available_at > NOW(3) AS later')).then((row) => row),
          );
        }),
    });
    const rows = (await Promise.all(deferredRows)) as Array<{ attempts: number; deferrals: number; reserved_at: Date | null; last_error: string; later: number }>;
    expect(rows.length).toBeGreaterThanOrEqual(2);
    for (const row of rows) {
      expect(row).toMatchObject({ attempts: 0, reserved_at: null, later: 1 });
      expect(row.deferrals).toBeGreaterThanOrEqual(1);
      expect(row.last_error).toContain('TWS rate limit');
      expect(row.last_error).toContain('answered 429');
    }
    expect(workers[0]!.stats.deferred).toBe(rows.length);
    expect(tws.stats().rateLimited).toBe(rows.length);
    expect(await countRows(mq.knex, mq.tables.failedJobs)).toBe(0);
    for (const [index, id] of ids.entries()) {
      expect(tws.stats().perTaxpayer[taxIdOf(index + 1)]!.ok).toBe(1);
      expect((await storedMessages(mq, id)).length).toBe(fakeMailboxMessages(taxIdOf(index + 1)).length);
      // A wait is not a failure: nothing recorded against the taxpayer.
      expect((await taxpayerRow(mq, id)).last_sync_status).toBe('ok');
    }
  });
});

describe('a malformed TWS page', () => {
  it('fails the attempt cleanly: pages read before it are not written', async () => {
    const pages = (id: string) => (id === taxIdOf(1) || id === taxIdOf(2) ? 120 : 3);
    // The server serves good pages; the second page of taxpayer 1 arrives garbled on the way.
    const garbleSecondPage = (tws: FakeTws) =>
      createTwsClient({
        baseUrl: tws.url,
        token: TOKEN,
        fetch: async (input, init) => {
          const response = await fetch(input, init);
          const url = new URL(String(input));
          if (!url.pathname.includes(`/${taxIdOf(1)}/`) || url.searchParams.get('page') !== '2') return response;
          const body = (await response.json()) as { messages: Array<{ receivedAt: string }> };
          body.messages[10]!.receivedAt = 'last Tuesday';
          return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } });
        },
      });
    const { mq, tws, ids } = await setUp('garbled_', 2, { messagesPerTaxpayer: pages, pageSize: 50 }, { tries: 2, backoff: '10ms' }, garbleSecondPage);
    await dispatchMailboxSync(mq);
    const between: Array<Promise<[Awaited<ReturnType<typeof taxpayerRow>>, number]>> = [];
    await drain(mq, {
      onWorker: (worker) =>
        worker.on('job:retrying', () => {
          between.push(Promise.all([taxpayerRow(mq, ids[0]!), countRows(mq.knex, mailboxTables(mq).mailboxMessages, { taxpayer_id: ids[0]! })]));
        }),
    });
    const seen = await Promise.all(between);
    expect(seen).toHaveLength(1);
    const [statusBetween, rowsBetween] = seen[0]!;
    expect(statusBetween).toMatchObject({ last_sync_status: 'retrying', last_sync_error_code: 'malformed' });
    expect(rowsBetween).toBe(0);

    // Both attempts read page 1 and page 2 from the server, and wrote nothing.
    expect(tws.stats().perTaxpayer[taxIdOf(1)]).toMatchObject({ requests: 4, ok: 4 });
    expect(await countRows(mq.knex, mailboxTables(mq).mailboxMessages, { taxpayer_id: ids[0]! })).toBe(0);
    expect(await taxpayerRow(mq, ids[0]!)).toMatchObject({ last_sync_status: 'failed', last_sync_error_code: 'malformed', last_synced_at: null });
    const [failed] = await failedJobs(mq);
    expect(failed).toMatchObject({ taxpayerId: ids[0], attempts: 2 });
    expect(failed!.reason).toContain('page=2');
    expect(failed!.reason).toContain('messages[10].receivedAt');
    // The other taxpayer's three pages are all there.
    expect(await storedMessages(mq, ids[1]!)).toEqual(expectedMessages(taxIdOf(2), 1, pages));
  });
});

describe('failures no retry can fix', () => {
  it('a refused token: every job fails on its first attempt, and the token appears nowhere', async () => {
    const wrongToken = 'not-the-token-4711';
    const { mq, tws, ids } = await setUp('refused_', 2, {}, { tries: 3 }, (server) => createTwsClient({ baseUrl: server.url, token: wrongToken }));
    await dispatchMailboxSync(mq);
    await drain(mq);
    const failed = await failedJobs(mq);
    expect(failed.map((job) => job.attempts)).toEqual([1, 1]);
    for (const job of failed) expect(job.reason).toMatch(/answered 401: missing or invalid token; check the TWS token$/);
    expect(tws.stats().unauthorized).toBe(2);
    for (const id of ids) expect(await taxpayerRow(mq, id)).toMatchObject({ last_sync_status: 'failed', last_sync_error_code: 'unauthorized' });
    const everything = JSON.stringify([await snapshot(mq.knex, mq.tables.failedJobs), await snapshot(mq.knex, mailboxTables(mq).taxpayers)]);
    expect(everything).not.toContain(wrongToken);
  });

  it('a taxpayer deleted after dispatch', async () => {
    const { mq } = await setUp('gone_', 1, {}, { tries: 3 });
    await mq.dispatch(MAILBOX_SYNC_JOB, { taxpayerId: 999_999 });
    await drain(mq);
    const [gone] = await failedJobs(mq);
    expect(gone).toMatchObject({ taxpayerId: 999_999, attempts: 1 });
    expect(gone!.reason).toBe('PermanentError: taxpayer 999999 does not exist (deleted after the sync was dispatched?)');
  });
});

describe('a sync that outlives its timeout', () => {
  it('aborts its TWS request: the late answer writes nothing', async () => {
    const { mq, ids } = await setUp('timeout_', 1, { latencyMs: 1_200 }, { tries: 1, timeout: '200ms' });
    await dispatchMailboxSync(mq);
    await drain(mq);
    const [failed] = await failedJobs(mq);
    expect(failed).toMatchObject({ taxpayerId: ids[0], attempts: 1 });
    expect(failed!.reason).toBe('JobTimeoutError: job timed out after 200 ms');
    await until(async () => (await taxpayerRow(mq, ids[0]!)).last_sync_status !== null, 5_000, 'the timeout to be recorded');
    expect(await taxpayerRow(mq, ids[0]!)).toMatchObject({ last_sync_status: 'failed', last_sync_error_code: 'timeout', last_synced_at: null });
    // Past the moment TWS would have answered: had the request not been aborted, it would have been stored.
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    expect(await countRows(mq.knex, mailboxTables(mq).mailboxMessages)).toBe(0);
  });
});
