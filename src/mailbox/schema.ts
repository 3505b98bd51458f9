import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import type { MigrationSet } from '../schema/migration-set.js';
import { migrateLatest, migrateRollback, migrationStatus, type MigrationStatus } from '../schema/migrate.js';
import { mailboxMigrations } from './migrations/index.js';
import { mailboxTables, type MailboxTables } from './tables.js';

/** What the mailbox's schema functions need of a queue instance. */
export interface MailboxQueue {
  knex: Knex;
  tables: TableNames;
}

/** The add-on's migrations as a set of their own, recorded in `tables.migrations`. */
export function mailboxMigrationSet(tables: MailboxTables): MigrationSet<MailboxTables> {
  return { name: 'mailbox', ledger: tables.migrations, tables, migrations: mailboxMigrations };
}

/**
 * Creates or upgrades the mailbox tables (after `mq.migrate()`); returns the migrations it applied.
 * Tables that already exist (an app's own taxpayers table, or a database migrated before the mailbox
 * became an add-on) are kept as they are, rows and all.
 *
 * @example
 * await mq.migrate();
 * await migrateMailbox(mq);                                     // or migrateMailbox(mq, mailboxTables(mq, { taxpayers: 'clients' }))
 */
export function migrateMailbox(mq: MailboxQueue, tables: MailboxTables = mailboxTables(mq)): Promise<string[]> {
  return migrateLatest(mq.knex, mailboxMigrationSet(tables));
}

/**
 * Which mailbox migrations ran and which are pending.
 *
 * @example
 * const { pending } = await mailboxMigrationStatus(mq);
 */
export function mailboxMigrationStatus(mq: MailboxQueue, tables: MailboxTables = mailboxTables(mq)): Promise<MigrationStatus> {
  return migrationStatus(mq.knex, mailboxMigrationSet(tables));
}

/**
 * Undoes the mailbox migrations (the last batch, or all): drops the tables mailq created, never an app's own.
 *
 * @example
 * await rollbackMailbox(mq, mailboxTables(mq), { all: true });
 */
export function rollbackMailbox(mq: MailboxQueue, tables: MailboxTables = mailboxTables(mq), options: { all?: boolean } = {}): Promise<string[]> {
  return migrateRollback(mq.knex, mailboxMigrationSet(tables), options.all);
}
