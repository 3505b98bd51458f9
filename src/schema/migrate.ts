import type { Knex } from 'knex';
import { assertSupportedServer } from '../db/server-version.js';
import { migrations, type MailqMigration } from '../../migrations/index.js';
import type { TableNames } from '../db/tables.js';

export interface MigrationStatus {
  applied: string[];
  pending: string[];
}

/** knex's migrator, fed from the compiled list above instead of a directory scan. */
function migrationSource(tables: TableNames, list: MailqMigration[]): Knex.MigrationSource<MailqMigration> {
  return {
    getMigrations: async () => list,
    getMigrationName: (migration) => migration.name,
    getMigration: async (migration) => ({
      up: (knex: Knex) => migration.up(knex, tables),
      down: (knex: Knex) => migration.down(knex, tables),
    }),
  };
}

function migratorConfig(tables: TableNames): Knex.MigratorConfig {
  return {
    migrationSource: migrationSource(tables, migrations),
    tableName: tables.migrations,
    // MySQL commits DDL implicitly, so a per-migration transaction promises nothing.
    disableTransactions: true,
  };
}

export async function migrateLatest(knex: Knex, tables: TableNames): Promise<string[]> {
  await assertSupportedServer(knex);
  const [, applied] = (await knex.migrate.latest(migratorConfig(tables))) as [number, string[]];
  return applied;
}

export async function migrateRollback(knex: Knex, tables: TableNames, all = false): Promise<string[]> {
  const [, rolledBack] = (await knex.migrate.rollback(migratorConfig(tables), all)) as [number, string[]];
  return rolledBack;
}

export async function migrationStatus(knex: Knex, tables: TableNames): Promise<MigrationStatus> {
  const [completed, pending] = (await knex.migrate.list(migratorConfig(tables))) as [Array<{ name: string } | string>, MailqMigration[]];
  return {
    applied: completed.map((entry) => (typeof entry === 'string' ? entry : entry.name)),
    pending: pending.map((migration) => migration.name),
  };
}
