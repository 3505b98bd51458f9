import type { Knex } from 'knex';
import type { TableNames } from '../src/db/tables.js';

export const name = '20261128000001_create_jobs';

export async function up(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.createTable(tables.jobs, (table) => {
    table.bigIncrements('id').primary();
    table.string('uuid', 36).notNullable();
    table.string('queue', 191).notNullable();
    table.string('name', 191).notNullable();
    table.json('payload').notNullable();
    table.integer('attempts').unsigned().notNullable().defaultTo(0);
    table.integer('deferrals').unsigned().notNullable().defaultTo(0);
    table.integer('max_attempts').unsigned().nullable();
    table.json('backoff').nullable();
    table.integer('timeout_ms').unsigned().nullable();
    table.smallint('priority').notNullable().defaultTo(0);
    table.specificType('available_at', 'DATETIME(3)').notNullable();
    table.specificType('reserved_at', 'DATETIME(3)').nullable();
    table.string('reserved_by', 191).nullable();
    table.specificType('lease_until', 'DATETIME(3)').nullable();
    table.string('unique_key', 191).nullable().unique({ indexName: `${tables.jobs}_unique_key_unique` });
    table.string('batch_id', 36).nullable().index(`${tables.jobs}_batch_id_index`);
    table.text('last_error').nullable();
    table.specificType('created_at', 'DATETIME(3)').notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    // The claim reads one range of this index in its own order: queue, free, priority, due time, id.
    table.index(['queue', 'reserved_at', 'priority', 'available_at'], `${tables.jobs}_claim_index`);
    table.index(['lease_until'], `${tables.jobs}_lease_until_index`);
  });

  await knex.schema.createTable(tables.failedJobs, (table) => {
    table.bigIncrements('id').primary();
    table.string('uuid', 36).notNullable().index(`${tables.failedJobs}_uuid_index`);
    table.string('queue', 191).notNullable();
    table.string('name', 191).notNullable();
    table.json('payload').notNullable();
    table.integer('attempts').unsigned().notNullable();
    table.integer('deferrals').unsigned().notNullable().defaultTo(0);
    table.integer('max_attempts').unsigned().nullable();
    table.json('backoff').nullable();
    table.integer('timeout_ms').unsigned().nullable();
    table.smallint('priority').notNullable().defaultTo(0);
    table.text('exception', 'longtext').notNullable();
    table.string('batch_id', 36).nullable().index(`${tables.failedJobs}_batch_id_index`);
    table.specificType('created_at', 'DATETIME(3)').nullable();
    table.specificType('failed_at', 'DATETIME(3)').notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    table.index(['queue', 'id'], `${tables.failedJobs}_queue_index`);
    table.index(['failed_at'], `${tables.failedJobs}_failed_at_index`);
  });
}

export async function down(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.dropTableIfExists(tables.failedJobs);
  await knex.schema.dropTableIfExists(tables.jobs);
}
