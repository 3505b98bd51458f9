import type { Knex } from 'knex';
import type { TableNames } from '../src/db/tables.js';

export const name = '20261128000006_failed_jobs_unique_key';

/**
 * A failed job keeps its unique key, so a retry brings it back as unique as it was dispatched.
 * Not a UNIQUE index here: the same key may fail more than once over time.
 */
export async function up(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.alterTable(tables.failedJobs, (table) => {
    table.string('unique_key', 191).nullable().after('batch_id');
  });
}

export async function down(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.alterTable(tables.failedJobs, (table) => {
    table.dropColumn('unique_key');
  });
}
