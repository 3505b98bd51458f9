import type { Knex } from 'knex';
import { assertSupportedServer } from '../db/server-version.js';
import { handedOver, migrations } from '../../migrations/index.js';
import type { TableNames } from '../db/tables.js';
import type { MailqMigration, MigrationSet } from './migration-set.js';

export interface MigrationStatus {
  applied: string[];
  pending: string[];
}

/** The queue's own tables: jobs, failed jobs, workers, controls, stats, rate limits, batches, schedule runs. */
export function queueMigrations(tables: TableNames): MigrationSet<TableNames> {
  return { name: 'queue', ledger: tables.migrations, tables, migrations, handedOver };
}

/** knex's migrator, fed from the set's compiled list instead of a directory scan. */
function migratorConfig<Tables>(set: MigrationSet<Tables>): Knex.MigratorConfig {
  const source: Knex.MigrationSource<MailqMigration<Tables>> = {
    getMigrations: async () => [...set.migrations],
    getMigrationName: (migration) => migration.name,
    getMigration: async (migration) => ({
      up: (knex: Knex) => migration.up(knex, set.tables),
      down: (knex: Knex) => migration.down(knex, set.tables),
    }),
  };
  return {
    migrationSource: source,
    tableName: set.ledger,
    // MySQL commits DDL implicitly, so a per-migration transaction promises nothing.
    disableTransactions: true,
  };
}

async function forgetHandedOver(knex: Knex, set: MigrationSet<unknown>): Promise<void> {
  if (!set.handedOver?.length || !(await knex.schema.hasTable(set.ledger))) return;
  await knex(set.ledger).whereIn('name', [...set.handedOver]).delete();
}

/** Applies the set's pending migrations; returns their names. */
export async function migrateLatest<Tables>(knex: Knex, set: MigrationSet<Tables>): Promise<string[]> {
  await assertSupportedServer(knex);
  await forgetHandedOver(knex, set);
  const [, applied] = (await knex.migrate.latest(migratorConfig(set))) as [number, string[]];
  return applied;
}

/** Undoes the set's last batch of migrations (or all of them); returns their names, newest first. */
export async function migrateRollback<Tables>(knex: Knex, set: MigrationSet<Tables>, all = false): Promise<string[]> {
  await forgetHandedOver(knex, set);
  const [, rolledBack] = (await knex.migrate.rollback(migratorConfig(set), all)) as [number, string[]];
  return rolledBack;
}

export async function migrationStatus<Tables>(knex: Knex, set: MigrationSet<Tables>): Promise<MigrationStatus> {
  await forgetHandedOver(knex, set);
  const [completed, pending] = (await knex.migrate.list(migratorConfig(set))) as [Array<{ name: string } | string>, Array<MailqMigration<Tables>>];
  return {
    applied: completed.map((entry) => (typeof entry === 'string' ? entry : entry.name)),
    pending: pending.map((migration) => migration.name),
  };
}
