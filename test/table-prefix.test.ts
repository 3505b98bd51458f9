import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LONGEST_DERIVED_NAME, MAX_IDENTIFIER_LENGTH, MAX_TABLE_PREFIX_LENGTH, tableNames } from '../src/db/tables.js';
import { ConfigError } from '../src/errors.js';
import { migrateMailbox, rollbackMailbox } from '../src/mailbox/schema.js';
import { mailboxTables } from '../src/mailbox/tables.js';
import { createMailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { openQueue } from './support/queue.js';

// The prefix is part of every table name mailq writes into SQL, unescaped: the library checks it,
// not only the config file, and caps it so every name derived from a table name fits MySQL's 64.

describe('the library checks the prefix', () => {
  it.each(["x'; DROP TABLE jobs; --", 'mq-', 'mq prefix', '`mq`', 'préfixe_', 'mq_\u0000'])('refuses %j in tableNames() and createMailq()', (prefix) => {
    expect(() => tableNames(prefix)).toThrow(ConfigError);
    expect(() => tableNames(prefix)).toThrow(/^table prefix '.*' may hold letters, digits and _ only$/);
    // Before any pool opens: the URL's server is never reached.
    expect(() => createMailq({ databaseUrl: 'mysql://u:p@192.0.2.1:1/x', tablePrefix: prefix })).toThrow(ConfigError);
  });

  it(`caps it at ${MAX_TABLE_PREFIX_LENGTH} characters`, () => {
    expect(MAX_TABLE_PREFIX_LENGTH).toBe(MAX_IDENTIFIER_LENGTH - LONGEST_DERIVED_NAME.length);
    expect(tableNames('p'.repeat(MAX_TABLE_PREFIX_LENGTH)).jobs).toBe(`${'p'.repeat(MAX_TABLE_PREFIX_LENGTH)}jobs`);
    expect(() => tableNames('p'.repeat(MAX_TABLE_PREFIX_LENGTH + 1))).toThrow(`is ${MAX_TABLE_PREFIX_LENGTH + 1} characters long: at most ${MAX_TABLE_PREFIX_LENGTH}, so that every index name fits MySQL's 64`);
  });

  it("checks an app's own mailbox table names too", () => {
    const queue = { tables: tableNames('') };
    expect(mailboxTables(queue, { taxpayers: 'clients' }).taxpayers).toBe('clients');
    expect(() => mailboxTables(queue, { taxpayers: 'clients; DROP TABLE x' })).toThrow(ConfigError);
    expect(() => mailboxTables(queue, { taxpayers: 'clients; DROP TABLE x' })).toThrow(/^table name taxpayers 'clients; DROP TABLE x' may hold letters, digits and _ only$/);
    expect(() => mailboxTables(queue, { mailboxMessages: 'm'.repeat(65) })).toThrow(/is 65 characters long \(at most 64\)/);
  });
});

describe('against the real schema', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('table_prefix');
  });

  afterAll(async () => {
    await db?.drop();
  });

  /** Every table, index and constraint name in the database. */
  async function identifiers(mq: ReturnType<typeof openQueue>): Promise<string[]> {
    const [rows] = (await mq.knex.raw(
      `SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()
       UNION SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()
       UNION SELECT CONSTRAINT_NAME FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA = DATABASE()`,
    )) as [Array<{ name: string }>];
    return rows.map((row) => row.name).filter((name) => name !== 'PRIMARY');
  }

  it('the longest prefix migrates (the mailbox add-on too), and every name it derives fits in 64 characters', async () => {
    const prefix = 'p'.repeat(MAX_TABLE_PREFIX_LENGTH);
    const mq = openQueue(db.url, { tablePrefix: prefix });
    try {
      await mq.migrate();
      await migrateMailbox(mq);
      const names = await identifiers(mq);
      expect(names.length).toBeGreaterThan(20);
      expect(Math.max(...names.map((name) => name.length))).toBe(MAX_IDENTIFIER_LENGTH);
      // LONGEST_DERIVED_NAME is what the migrations really derive: a longer index added later fails here.
      const unprefixed = names.map((name) => name.slice(prefix.length));
      expect(unprefixed.reduce((longest, name) => (name.length > longest.length ? name : longest))).toBe(LONGEST_DERIVED_NAME);
      await rollbackMailbox(mq, mailboxTables(mq), { all: true });
      await mq.rollback({ all: true });
    } finally {
      await mq.close();
    }
  });
});
