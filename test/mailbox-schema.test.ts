import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../dist/src/cli/main.js';
import { loadSettings } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { createMailq, type Mailq } from '../src/mailq.js';
import { fakeMailboxMessages, startFakeTws } from '../src/mailbox/fake-tws.js';
import { MailboxSync } from '../src/mailbox/sync.js';
import { migrateMailbox, rollbackMailbox } from '../src/mailbox/schema.js';
import { mailboxTables } from '../src/mailbox/tables.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { captureOutput, countRows, seedTaxpayers, taxIdOf } from './support/mailbox.js';

let db: TestDatabase;
const open: Mailq[] = [];

beforeAll(async () => {
  db = await createTestDatabase('mailbox-schema');
});

afterAll(async () => {
  await Promise.all(open.map((mq) => mq.close()));
  await db.drop();
});

function queue(options: Parameters<typeof createMailq>[0] = {}): Mailq {
  const mq = createMailq({ databaseUrl: db.url, logger: createLogger({ level: 'silent' }), ...options });
  open.push(mq);
  return mq;
}

async function tablesIn(mq: Mailq): Promise<string[]> {
  const [rows] = (await mq.knex.raw('SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME')) as [Array<{ name: string }>];
  return rows.map((row) => row.name);
}

describe('mailbox table names', () => {
  it('are the app\'s to choose: the sync reads and writes the tables it is told', async () => {
    const mq = queue({ tablePrefix: 'q_' });
    const tables = mailboxTables(mq, { taxpayers: 'clients', mailboxMessages: 'client_inbox' });
    await mq.migrate();
    await migrateMailbox(mq, tables);
    expect(await tablesIn(mq)).toEqual(expect.arrayContaining(['clients', 'client_inbox', 'q_jobs', 'q_failed_jobs', 'q_mailq_mailbox_migrations']));
    const tws = await startFakeTws({ token: 't' });
    try {
      const sync = new MailboxSync({ knex: mq.knex, tables, tws: { url: tws.url, token: 't' } });
      const [id] = await seedTaxpayers(sync.store, 1);
      expect(await sync.syncTaxpayer(id!)).toMatchObject({ status: 'synced', messages: fakeMailboxMessages(taxIdOf(1)).length });
      expect(await countRows(mq.knex, 'client_inbox')).toBe(fakeMailboxMessages(taxIdOf(1)).length);
    } finally {
      await tws.close();
    }
  });

  it('an existing app table is left alone by migrate, and by a rollback', async () => {
    const mq = queue({ tablePrefix: 'own_' });
    const tables = mailboxTables(mq, { taxpayers: 'app_taxpayers' });
    await mq.knex.raw(`CREATE TABLE app_taxpayers (
      id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, team_id BIGINT UNSIGNED NULL, tax_id VARCHAR(32) NOT NULL UNIQUE,
      name VARCHAR(255) NOT NULL DEFAULT '', active BOOLEAN NOT NULL DEFAULT TRUE, vip BOOLEAN NOT NULL DEFAULT FALSE,
      last_synced_at DATETIME(3) NULL, last_sync_at DATETIME(3) NULL, last_sync_status VARCHAR(16) NULL,
      last_sync_error_code VARCHAR(32) NULL, last_sync_error TEXT NULL, last_sync_duration_ms INT UNSIGNED NULL, last_sync_messages INT UNSIGNED NULL)`);
    await mq.knex('app_taxpayers').insert({ tax_id: '20999999999', name: 'Existing S.A.', vip: true });
    await mq.migrate();
    await migrateMailbox(mq, tables);
    expect(await mq.knex('app_taxpayers').select('tax_id', 'vip')).toEqual([{ tax_id: '20999999999', vip: 1 }]);
    expect(await tablesIn(mq)).toContain('own_mailbox_messages');

    await rollbackMailbox(mq, tables, { all: true });
    await mq.rollback({ all: true });
    const left = await tablesIn(mq);
    expect(left).toContain('app_taxpayers');
    expect(left).not.toContain('own_mailbox_messages');
    expect(left).not.toContain('own_jobs');
    expect(await countRows(mq.knex, 'app_taxpayers')).toBe(1);
  });

  it('come from settings: MAILQ_TAXPAYERS_TABLE reaches the CLI', async () => {
    const mq = queue({ tablePrefix: 'cli_' });
    const tables = mailboxTables(mq, { taxpayers: 'cli_clients' });
    await mq.migrate();
    await migrateMailbox(mq, tables);
    const sync = new MailboxSync({ knex: mq.knex, tables });
    await seedTaxpayers(sync.store, 7);
    const output = captureOutput();
    process.env.MAILQ_TAXPAYERS_TABLE = 'cli_clients';
    try {
      const code = await main(['sync-mailbox', '--queue', '--dry-run', '--prefix', 'cli_', '--database-url', db.url], output);
      expect(code, output.text() + output.stderr.join('\n')).toBe(0);
    } finally {
      delete process.env.MAILQ_TAXPAYERS_TABLE;
    }
    expect(output.text()).toMatch(/│ Jobs dispatched\s+│ 0 \(dry run: 7 would be\)/);
  });
});

describe('mailbox settings', () => {
  const env = { MAILQ_DATABASE_URL: 'mysql://root@127.0.0.1:3306/x' };

  it('are absent (the add-on is off) unless a mailbox or TWS setting, or --mailbox, is given', async () => {
    expect((await loadSettings({ env, cwd: '/' })).settings.mailbox).toBeUndefined();
    expect((await loadSettings({ env: { ...env, MAILQ_TWS_URL: 'http://tws.example/api' }, cwd: '/' })).settings.mailbox).toBeDefined();
    expect((await loadSettings({ env: { ...env, MAILQ_TAXPAYERS_TABLE: 'clients' }, cwd: '/' })).settings.mailbox).toMatchObject({ taxpayersTable: 'clients' });
  });

  it('default to tries 3, backoff 60/120/300 s, timeout 120 s, queue mailbox-sync', async () => {
    const { settings } = await loadSettings({ env, flags: { mailbox: {} }, cwd: '/' });
    expect(settings.mailbox).toEqual({ queue: 'mailbox-sync', tries: 3, backoff: [60_000, 120_000, 300_000], timeout: 120_000 });
    expect(settings.tws).toMatchObject({ requestTimeout: 30_000 });
  });

  it('are overridable from the environment and flags, and validated', async () => {
    const { settings } = await loadSettings({
      env: { ...env, MAILQ_TWS_URL: 'http://tws.example/api', MAILQ_TWS_TOKEN: 'secret', MAILQ_TWS_TIMEOUT: '5s', MAILQ_MAILBOX_MESSAGES_TABLE: 'inbox' },
      flags: { mailbox: { tries: 5, backoff: '10,20', timeout: '1m' } },
      cwd: '/',
    });
    expect(settings.tws).toMatchObject({ url: 'http://tws.example/api', token: 'secret', requestTimeout: 5_000 });
    expect(settings.mailbox).toMatchObject({ tries: 5, backoff: [10_000, 20_000], timeout: 60_000, messagesTable: 'inbox' });
    await expect(loadSettings({ env: { ...env, MAILQ_TAXPAYERS_TABLE: 'drop table;' }, cwd: '/' })).rejects.toThrow(ConfigError);
    await expect(loadSettings({ env: { ...env, MAILQ_TAXPAYERS_TABLE: 'drop table;' }, cwd: '/' })).rejects.toThrow("invalid setting mailbox.taxpayersTable: 'drop table;' may hold letters, digits and _ only");
  });

  it('a command that finds its own database does not need one configured', async () => {
    const { settings } = await loadSettings({ env: {}, cwd: '/', databaseOptional: true });
    expect(settings.databaseUrl).toBe('');
    await expect(loadSettings({ env: {}, cwd: '/' })).rejects.toThrow('no database configured');
    await expect(loadSettings({ env: { MAILQ_DATABASE_URL: 'postgres://x/y' }, cwd: '/', databaseOptional: true })).rejects.toThrow('unsupported database URL scheme');
  });
});
