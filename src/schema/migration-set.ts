import type { Knex } from 'knex';

/** One migration: `tables` are the names of the tables its set owns (prefixed, or the app's own). */
export interface MailqMigration<Tables> {
  name: string;
  up(knex: Knex, tables: Tables): Promise<void>;
  down(knex: Knex, tables: Tables): Promise<void>;
}

/**
 * A list of migrations and the table that records which of them ran (knex's migrations table).
 * The queue has one set and each add-on (the mailbox sync) has its own, so an app that does not
 * use an add-on never gets its tables, and rolling one set back leaves the others alone.
 */
export interface MigrationSet<Tables = unknown> {
  /** Named in messages: 'queue', 'mailbox'. */
  name: string;
  /** The table recording the applied migrations of this set. */
  ledger: string;
  tables: Tables;
  migrations: ReadonlyArray<MailqMigration<Tables>>;
  /**
   * Migrations this set once held and another set now owns. A database migrated before the move
   * still lists them in this set's ledger; they are struck from it (their tables stay), or knex
   * would call the ledger corrupt.
   */
  handedOver?: readonly string[];
}
