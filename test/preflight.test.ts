import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import { mailboxSyncJob, MAILBOX_SYNC_JOB, MAILBOX_SYNC_QUEUE } from '../src/mailbox/job.js';
import { migrateMailbox } from '../src/mailbox/schema.js';
import { MailboxSync } from '../src/mailbox/sync.js';
import { mailboxTables } from '../src/mailbox/tables.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { seedTaxpayers } from './support/mailbox.js';
import { count, openQueue, runCli } from './support/queue.js';

// Configuration that fails fast: a worker whose jobs need a setting that is missing refuses to start,
// and a job that meets a configuration error fails once, not once per attempt with backoff between.

let db: TestDatabase;
let mq: Mailq;
let taxpayers: number[];

beforeAll(async () => {
  db = await createTestDatabase('preflight');
  mq = openQueue(db.url);
  await mq.migrate();
  await migrateMailbox(mq);
  taxpayers = await seedTaxpayers(new MailboxSync({ knex: mq.knex, tables: mailboxTables(mq) }).store, 3);
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex(mq.tables.jobs).delete();
  await mq.knex(mq.tables.failedJobs).delete();
});

/** The mailbox jobs as the CLI queues them: three taxpayers on the mailbox queue. */
async function dispatchMailboxJobs(): Promise<void> {
  await mq.dispatchMany(MAILBOX_SYNC_JOB, taxpayers.map((taxpayerId) => ({ taxpayerId })), { queue: MAILBOX_SYNC_QUEUE });
}

/** Nothing was claimed: every job waits untouched, none failed, no worker registered. */
async function expectUntouched(): Promise<void> {
  expect(await mq.knex(mq.tables.jobs).select('attempts', 'reserved_at')).toEqual(taxpayers.map(() => ({ attempts: 0, reserved_at: null })));
  expect(await count(mq.knex, mq.tables.failedJobs)).toBe(0);
  expect(await count(mq.knex, mq.tables.workers)).toBe(0);
}

// The mailbox add-on enabled (--mailbox), as an operator who runs its worker has it.
describe('mailq work on the mailbox queue without TWS settings', () => {
  const noTws = () => ({ MAILQ_DATABASE_URL: db.url });
  const refusal = /^mailq: job 'sync-taxpayer-mailbox' cannot run here: TWS is not configured: set MAILQ_TWS_URL and MAILQ_TWS_TOKEN/;

  it('refuses to start: one line, exit 2, no job claimed (it used to burn every job\'s attempts)', async () => {
    await dispatchMailboxJobs();
    const result = await runCli(['work', '--mailbox', '--queue', MAILBOX_SYNC_QUEUE], { env: noTws() });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(refusal);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    await expectUntouched();
  });

  it('--processes=2 refuses before it starts any worker process', async () => {
    await dispatchMailboxJobs();
    const result = await runCli(['work', '--mailbox', '--queue', `default,${MAILBOX_SYNC_QUEUE}`, '--processes=2'], { env: noTws() });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(refusal);
    expect(result.stderr).not.toContain('worker process started');
    await expectUntouched();
  });

  it('a worker on other queues starts: the mailbox job is not among its jobs', async () => {
    const result = await runCli(['work', '--mailbox', '--queue', 'default', '--stop-when-empty'], { env: { ...noTws(), MAILQ_LOG_LEVEL: 'warn' } });
    expect(result.code, result.stderr).toBe(0);
  });
});

describe('preflight, as a library', () => {
  let token: string | undefined;
  const callApi = defineJob({
    name: 'call-api',
    queue: 'api',
    preflight() {
      if (!token) throw new ConfigError('API_TOKEN is not set');
    },
    handle() {},
  });

  it('mq.worker() runs the preflight of the jobs on its queues and throws before anything is claimed', () => {
    token = undefined;
    expect(() => mq.worker({ queues: ['api'], jobs: [callApi] })).toThrow(ConfigError);
    expect(() => mq.worker({ queues: ['api'], jobs: [callApi] })).toThrow("job 'call-api' cannot run here: API_TOKEN is not set");
    // Other queues do not run it.
    expect(() => mq.worker({ queues: ['default'], jobs: [callApi] })).not.toThrow();
    token = 'set';
    expect(() => mq.worker({ queues: ['api'], jobs: [callApi] })).not.toThrow();
  });

  it('defineJob refuses a preflight that is not a function', () => {
    expect(() => defineJob({ name: 'x', preflight: 'yes' as unknown as () => void, handle() {} })).toThrow(TypeError);
  });
});

describe('a configuration error inside a job fails it at once', () => {
  it('any job: a ConfigError is permanent, whatever its tries', async () => {
    const misconfigured = defineJob({
      name: 'misconfigured',
      tries: 5,
      backoff: 60,
      handle() {
        throw new ConfigError('SMTP_HOST is not set');
      },
    });
    await mq.dispatch(misconfigured, {});
    await mq.worker({ queues: ['default'], jobs: [misconfigured], stopWhenEmpty: true, sweepInterval: 0 }).run();
    const [failed] = await mq.knex(mq.tables.failedJobs).select('attempts', 'exception');
    expect(failed).toMatchObject({ attempts: 1 });
    expect(failed.exception).toMatch(/^ConfigError: SMTP_HOST is not set/);
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  });

  it('the mailbox job on a worker without TWS settings: failed on its first attempt, not retried after 60 s', async () => {
    // The job as a library user may register it: its sync built lazily, so no preflight can ask it first.
    const unconfigured = new MailboxSync({ knex: mq.knex, tables: mailboxTables(mq) });
    const job = mailboxSyncJob(async () => unconfigured);
    await dispatchMailboxJobs();
    await mq.worker({ queues: [MAILBOX_SYNC_QUEUE], jobs: [job], stopWhenEmpty: true, sweepInterval: 0 }).run();
    const failed = await mq.knex(mq.tables.failedJobs).select('attempts', 'exception');
    expect(failed).toHaveLength(3);
    for (const row of failed) {
      expect(row.attempts).toBe(1);
      expect(row.exception).toContain('TWS is not configured');
    }
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  });
});
