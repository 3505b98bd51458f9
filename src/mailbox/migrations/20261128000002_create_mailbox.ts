import type { Knex } from 'knex';
import type { MailboxTables } from '../tables.js';

export const name = '20261128000002_create_mailbox';

/**
 * Idempotent on purpose: a database migrated before the mailbox became an add-on already has these
 * tables (created by the queue's set under this same name); running it again in the add-on's set
 * records it there and leaves the tables and their rows as they are.
 *
 * Marks the tables this migration created. The app may already own `taxpayers` (under its own name,
 * see the mailbox settings): then `up` leaves it alone and `down` must never drop it.
 */
export const CREATED_BY_MAILQ = 'created by mailq (mailbox sync)';

export async function up(knex: Knex, tables: MailboxTables): Promise<void> {
  if (!(await knex.schema.hasTable(tables.taxpayers))) {
    await knex.schema.createTable(tables.taxpayers, (table) => {
      table.comment(CREATED_BY_MAILQ);
      table.bigIncrements('id').primary();
      table.bigInteger('team_id').unsigned().nullable();
      // The RUC: what TWS knows the taxpayer by.
      table.string('tax_id', 32).notNullable().unique({ indexName: `${tables.taxpayers}_tax_id_unique` });
      table.string('name', 255).notNullable().defaultTo('');
      table.boolean('active').notNullable().defaultTo(true);
      // Start of the last successful sync: the next sync asks TWS for messages since then.
      table.specificType('last_synced_at', 'DATETIME(3)').nullable();
      // End of the last attempt, whatever its outcome.
      table.specificType('last_sync_at', 'DATETIME(3)').nullable();
      table.string('last_sync_status', 16).nullable();
      table.string('last_sync_error_code', 32).nullable();
      table.text('last_sync_error').nullable();
      table.integer('last_sync_duration_ms').unsigned().nullable();
      table.integer('last_sync_messages').unsigned().nullable();
      table.specificType('created_at', 'DATETIME(3)').notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
      table.index(['team_id'], `${tables.taxpayers}_team_id_index`);
      table.index(['last_sync_status'], `${tables.taxpayers}_last_sync_status_index`);
    });
  }

  if (!(await knex.schema.hasTable(tables.mailboxMessages))) {
    await knex.schema.createTable(tables.mailboxMessages, (table) => {
      table.comment(CREATED_BY_MAILQ);
      table.bigIncrements('id').primary();
      table.bigInteger('taxpayer_id').unsigned().notNullable();
      table.string('tws_id', 191).notNullable();
      table.text('subject').notNullable();
      table.string('sender', 255).notNullable();
      table.string('category', 64).notNullable();
      table.specificType('received_at', 'DATETIME(3)').notNullable();
      table.boolean('is_read').notNullable().defaultTo(false);
      table.text('body', 'mediumtext').notNullable();
      table.json('attachments').notNullable();
      // sha256 of the message as TWS sent it: an unchanged message is not rewritten, not even synced_at.
      table.string('content_hash', 64).notNullable();
      // When this content was first stored (insert, or a change TWS reported).
      table.specificType('synced_at', 'DATETIME(3)').notNullable();
      table.unique(['taxpayer_id', 'tws_id'], { indexName: `${tables.mailboxMessages}_taxpayer_tws_id_unique` });
      table.index(['taxpayer_id', 'received_at'], `${tables.mailboxMessages}_taxpayer_received_index`);
    });
  }
}

export async function down(knex: Knex, tables: MailboxTables): Promise<void> {
  for (const table of [tables.mailboxMessages, tables.taxpayers]) {
    if (await createdByMailq(knex, table)) await knex.schema.dropTable(table);
  }
}

async function createdByMailq(knex: Knex, table: string): Promise<boolean> {
  const [rows] = (await knex.raw('SELECT TABLE_COMMENT AS comment FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [table])) as [Array<{ comment: string }>];
  return rows[0]?.comment === CREATED_BY_MAILQ;
}
