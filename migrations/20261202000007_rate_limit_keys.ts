import type { Knex } from 'knex';
import type { TableNames } from '../src/db/tables.js';

export const name = '20261202000007_rate_limit_keys';

/**
 * One row per rate-limit key: the window it is used with and how long a 429 paused it. The slot
 * rows alone cannot say either (a paused slot and a used one look alike), and the dashboard and
 * /metrics show both.
 */
export async function up(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.createTable(tables.rateLimitKeys, (table) => {
    table.string('limit_key', 191).primary();
    table.integer('limit_count').unsigned().notNullable();
    table.integer('per_ms').unsigned().notNullable();
    table.integer('margin_ms').unsigned().notNullable();
    table.specificType('paused_until', 'DATETIME(3)').nullable();
    table.specificType('updated_at', 'DATETIME(3)').notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
  });
}

export async function down(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.dropTableIfExists(tables.rateLimitKeys);
}
