import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Knex } from 'knex';
import { migrations } from '../migrations/index.js';
import { tableNames } from '../src/db/tables.js';
import { mailboxMigrations } from '../src/mailbox/migrations/index.js';
import { mailboxMigrationStatus, migrateMailbox } from '../src/mailbox/schema.js';
import { mailboxTables } from '../src/mailbox/tables.js';
import type { MailqMigration } from '../src/schema/migration-set.js';
import { assertSupportedServer, parseServerVersion, supportsSkipLocked } from '../src/db/server-version.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { openQueue, ROOT } from './support/queue.js';

const run = promisify(execFile);

let db: TestDatabase;
let mq: Mailq;
const latest = migrations.map((migration) => migration.name);

beforeAll(async () => {
  db = await createTestDatabase('migrate');
  mq = openQueue(db.url);
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

async function tablesOf(mailq: Mailq): Promise<string[]> {
  const [rows] = (await mailq.knex.raw('SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name')) as [Array<{ name: string }>];
  return rows.map((row) => row.name).sort();
}

async function columnTypes(mailq: Mailq, table: string): Promise<Record<string, string>> {
  const [rows] = (await mailq.knex.raw('SELECT column_name AS name, column_type AS type FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?', [table])) as [
    Array<{ name: string; type: string }>,
  ];
  return Object.fromEntries(rows.map((row) => [row.name, row.type.toLowerCase()]));
}

/** The queue's tables, and nothing of the mailbox add-on. */
const QUEUE_TABLES = ['failed_jobs', 'job_batches', 'jobs', 'mailq_migrations', 'mailq_migrations_lock', 'queue_controls', 'queue_stats', 'rate_limit_keys', 'rate_limits', 'schedule_runs', 'workers'].sort();

describe('migrate', () => {
  it('creates jobs and failed_jobs with the columns DESIGN.md lists, times as DATETIME(3)', async () => {
    expect(await mq.migrate()).toEqual(latest);
    expect(await tablesOf(mq)).toEqual(QUEUE_TABLES);

    const jobs = await columnTypes(mq, 'jobs');
    for (const column of ['id', 'uuid', 'queue', 'name', 'payload', 'attempts', 'deferrals', 'max_attempts', 'backoff', 'timeout_ms', 'priority', 'reserved_by', 'unique_key', 'batch_id']) {
      expect(jobs, column).toHaveProperty(column);
    }
    for (const column of ['available_at', 'reserved_at', 'lease_until', 'created_at']) expect(jobs[column], column).toBe('datetime(3)');

    const failed = await columnTypes(mq, 'failed_jobs');
    for (const column of ['id', 'uuid', 'queue', 'name', 'payload', 'attempts', 'exception', 'batch_id']) expect(failed, column).toHaveProperty(column);
    expect(failed.failed_at).toBe('datetime(3)');
  });

  it('is idempotent: a second run applies nothing and keeps the data', async () => {
    await mq.dispatch('noop', { keep: true });
    expect(await mq.migrate()).toEqual([]);
    expect(await mq.knex('jobs').count({ n: '*' })).toEqual([{ n: 1 }]);
  });

  it('reports applied and pending migrations', async () => {
    expect(await mq.migrationStatus()).toEqual({ applied: latest, pending: [] });
  });

  it('rolls back to nothing, reports the migrations pending, and migrates again', async () => {
    expect(await mq.rollback({ all: true })).toEqual([...latest].reverse());
    expect(await tablesOf(mq)).not.toContain('jobs');
    expect(await tablesOf(mq)).not.toContain('failed_jobs');
    expect(await mq.migrationStatus()).toEqual({ applied: [], pending: latest });
    expect(await mq.migrate()).toEqual(latest);
    expect(await tablesOf(mq)).toEqual(expect.arrayContaining(['failed_jobs', 'jobs']));
  });

  it('keeps two table prefixes side by side in one database, each with its own migrations', async () => {
    const alpha = openQueue(db.url, { tablePrefix: 'alpha_' });
    const beta = openQueue(db.url, { tablePrefix: 'beta_' });
    try {
      expect(await alpha.migrate()).toEqual(latest);
      expect(await beta.migrate()).toEqual(latest);
      expect(await tablesOf(mq)).toEqual(
        expect.arrayContaining(['alpha_jobs', 'alpha_failed_jobs', 'alpha_mailq_migrations', 'beta_jobs', 'beta_failed_jobs', 'beta_mailq_migrations']),
      );

      await alpha.dispatch('noop', { from: 'alpha' });
      expect(await alpha.knex('alpha_jobs').count({ n: '*' })).toEqual([{ n: 1 }]);
      expect(await beta.knex('beta_jobs').count({ n: '*' })).toEqual([{ n: 0 }]);

      // Rolling back one prefix leaves the other (and the unprefixed tables) alone.
      await beta.rollback({ all: true });
      const tables = await tablesOf(mq);
      expect(tables).not.toContain('beta_jobs');
      expect(tables).toEqual(expect.arrayContaining(['alpha_jobs', 'jobs']));
      expect(await alpha.migrationStatus()).toEqual({ applied: latest, pending: [] });
    } finally {
      await alpha.close();
      await beta.close();
    }
  });
});

describe('the mailbox add-on\'s migrations', () => {
  it('create its tables only when asked, in a ledger of their own, and roll back apart from the queue\'s', async () => {
    const app = openQueue(db.url, { tablePrefix: 'mb_' });
    try {
      await app.migrate();
      expect((await tablesOf(app)).filter((name) => name.startsWith('mb_'))).toEqual(QUEUE_TABLES.map((name) => `mb_${name}`));
      expect(await migrateMailbox(app)).toEqual(mailboxMigrations.map((migration) => migration.name));
      expect(await tablesOf(app)).toEqual(expect.arrayContaining(['mb_taxpayers', 'mb_mailbox_messages', 'mb_mailq_mailbox_migrations']));
      expect(await app.migrationStatus()).toEqual({ applied: latest, pending: [] });

      await app.rollback({ all: true });
      expect(await tablesOf(app)).not.toContain('mb_jobs');
      expect(await tablesOf(app)).toContain('mb_taxpayers');
      expect(await mailboxMigrationStatus(app)).toEqual({ applied: mailboxMigrations.map((migration) => migration.name), pending: [] });
    } finally {
      await app.close();
    }
  });

  it('upgrade a database migrated when the mailbox was part of the queue: nothing dropped, nothing recreated, rows kept', async () => {
    const app = openQueue(db.url, { tablePrefix: 'old_' });
    try {
      // The layout every database had before: the mailbox's migration in the queue's own list and ledger.
      const queueTables = tableNames('old_');
      const oldTables = { ...queueTables, ...mailboxTables({ tables: queueTables }) };
      const createMailbox = mailboxMigrations[0] as unknown as MailqMigration<typeof oldTables>;
      const oldList: Array<MailqMigration<typeof oldTables>> = [migrations[0]!, createMailbox, ...migrations.slice(1)];
      await app.knex.migrate.latest({
        tableName: queueTables.migrations,
        disableTransactions: true,
        migrationSource: {
          getMigrations: async () => oldList,
          getMigrationName: (migration: MailqMigration<typeof oldTables>) => migration.name,
          getMigration: async (migration: MailqMigration<typeof oldTables>) => ({ up: (knex: Knex) => migration.up(knex, oldTables), down: (knex: Knex) => migration.down(knex, oldTables) }),
        },
      });
      await app.knex('old_taxpayers').insert({ tax_id: '20100000001', name: 'Kept S.A.C.', last_sync_status: 'ok' });
      const [taxpayerId] = await app.knex('old_taxpayers').pluck('id');
      await app.knex('old_mailbox_messages').insert({ taxpayer_id: taxpayerId, tws_id: 'm-1', subject: 'Kept', sender: 'SUNAT', category: 'notice', received_at: new Date(), body: '', attachments: '[]', content_hash: 'h', synced_at: new Date() });
      const createdAt = await tableCreationTimes(app, ['old_taxpayers', 'old_mailbox_messages']);

      // The queue alone: nothing to apply, no "corrupt ledger", the mailbox tables untouched.
      expect(await app.migrate()).toEqual([]);
      expect(await app.migrationStatus()).toEqual({ applied: latest, pending: [] });
      // Enabling the add-on records its migration in its own ledger and keeps the tables as they are.
      expect(await migrateMailbox(app)).toEqual(['20261128000002_create_mailbox']);
      expect(await mailboxMigrationStatus(app)).toEqual({ applied: ['20261128000002_create_mailbox'], pending: [] });
      expect(await app.knex('old_taxpayers').select('tax_id', 'last_sync_status')).toEqual([{ tax_id: '20100000001', last_sync_status: 'ok' }]);
      expect(await app.knex('old_mailbox_messages').pluck('tws_id')).toEqual(['m-1']);
      expect(await tableCreationTimes(app, ['old_taxpayers', 'old_mailbox_messages'])).toEqual(createdAt);
    } finally {
      await app.close();
    }
  });
});

async function tableCreationTimes(mailq: Mailq, tables: string[]): Promise<string[]> {
  const [rows] = (await mailq.knex.raw('SELECT CONCAT(table_name, \' \', create_time) AS created FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN (?) ORDER BY table_name', [tables])) as [Array<{ created: string }>];
  return rows.map((row) => row.created);
}

describe('servers without SKIP LOCKED', () => {
  it.each([
    ['10.5.19-MariaDB-0+deb11u2', false],
    ['10.6.0-MariaDB', true],
    ['10.11.19-MariaDB-0+deb12u1', true],
    ['11.4.2-MariaDB', true],
    ['5.7.44', false],
    ['8.0.0', false],
    ['8.0.1', true],
    ['8.4.3', true],
    ['9.1.0', true],
  ])('%s → supported: %s', (version, supported) => {
    expect(supportsSkipLocked(parseServerVersion(version))).toBe(supported);
  });

  it('are refused with one clear sentence before anything is created; this server passes', async () => {
    // The server's answer to SELECT VERSION() is all the check reads.
    const oldServer = { raw: async () => [[{ version: '10.5.19-MariaDB-0+deb11u2' }]] } as unknown as Knex;
    await expect(assertSupportedServer(oldServer)).rejects.toThrow(
      'this server is MariaDB 10.5.19-MariaDB-0+deb11u2: mailq needs MariaDB 10.6 or later (its workers claim with SELECT … FOR UPDATE SKIP LOCKED)',
    );
    await expect(assertSupportedServer(mq.knex)).resolves.toBeUndefined();
  });
});
