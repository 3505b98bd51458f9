import type { Knex } from 'knex';
import type { TableNames } from '../src/db/tables.js';
import { NEVER_USED } from '../src/ratelimit/limiter.js';

export const name = '20261128000005_rate_limits_batches_schedule';

export async function up(knex: Knex, tables: TableNames): Promise<void> {
  // A rate limit of L per P is L slots; a slot is free when its last use is at least P ago. Taking
  // n tokens stamps n free slots in one UPDATE, so no window of P ever holds more than L uses.
  await knex.schema.createTable(tables.rateLimits, (table) => {
    table.string('limit_key', 191).notNullable();
    table.integer('slot').unsigned().notNullable();
    table.specificType('used_at', 'DATETIME(3)').notNullable().defaultTo(NEVER_USED);
    table.primary(['limit_key', 'slot']);
    table.index(['limit_key', 'used_at'], `${tables.rateLimits}_free_index`);
  });

  await knex.schema.createTable(tables.jobBatches, (table) => {
    table.string('id', 36).primary();
    table.string('name', 191).notNullable().defaultTo('');
    table.integer('total_jobs').notNullable().defaultTo(0);
    // Signed on purpose: a counter bug must show as a negative number, not as error 1690.
    table.integer('pending_jobs').notNullable().defaultTo(0);
    table.integer('failed_jobs').notNullable().defaultTo(0);
    table.json('failed_job_ids').notNullable();
    table.json('callbacks').nullable();
    table.specificType('created_at', 'DATETIME(3)').notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    table.specificType('finished_at', 'DATETIME(3)').nullable();
    table.specificType('cancelled_at', 'DATETIME(3)').nullable();
    table.index(['created_at'], `${tables.jobBatches}_created_at_index`);
  });

  await knex.schema.createTable(tables.scheduleRuns, (table) => {
    table.bigIncrements('id').primary();
    table.string('entry', 191).notNullable();
    table.specificType('slot', 'DATETIME(3)').notNullable();
    table.string('status', 16).notNullable();
    table.string('runner', 191).notNullable();
    table.string('batch_id', 36).nullable();
    table.integer('exit_code').nullable();
    table.text('detail').nullable();
    table.specificType('fired_at', 'DATETIME(3)').notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    table.specificType('finished_at', 'DATETIME(3)').nullable();
    table.unique(['entry', 'slot'], { indexName: `${tables.scheduleRuns}_entry_slot_unique` });
  });
}

export async function down(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.dropTableIfExists(tables.scheduleRuns);
  await knex.schema.dropTableIfExists(tables.jobBatches);
  await knex.schema.dropTableIfExists(tables.rateLimits);
}
