import type { Knex } from 'knex';
import type { TableNames } from '../src/db/tables.js';

export const name = '20261128000004_create_workers_controls_stats';

export async function up(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.createTable(tables.workers, (table) => {
    table.string('id', 191).primary();
    // 'worker' claims jobs; 'supervisor' runs worker processes and claims nothing.
    table.string('kind', 16).notNullable().defaultTo('worker');
    table.string('supervisor_id', 191).nullable();
    table.string('host', 191).notNullable();
    table.integer('pid').unsigned().notNullable();
    table.json('queues').notNullable();
    table.integer('concurrency').unsigned().notNullable().defaultTo(0);
    table.string('state', 32).notNullable().defaultTo('running');
    table.string('detail', 255).nullable();
    table.integer('heartbeat_ms').unsigned().notNullable();
    table.specificType('started_at', 'DATETIME(3)').notNullable();
    table.specificType('last_beat_at', 'DATETIME(3)').notNullable();
    table.bigInteger('jobs_done').unsigned().notNullable().defaultTo(0);
    table.bigInteger('jobs_failed').unsigned().notNullable().defaultTo(0);
    table.integer('running').unsigned().notNullable().defaultTo(0);
    table.integer('restarts').unsigned().notNullable().defaultTo(0);
    table.bigInteger('memory_bytes').unsigned().notNullable().defaultTo(0);
    table.index(['last_beat_at'], `${tables.workers}_last_beat_at_index`);
  });

  await knex.schema.createTable(tables.queueControls, (table) => {
    table.string('queue', 191).primary();
    table.specificType('paused_at', 'DATETIME(3)').nullable();
    table.specificType('restart_requested_at', 'DATETIME(3)').nullable();
    table.specificType('updated_at', 'DATETIME(3)').notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
  });

  await knex.schema.createTable(tables.queueStats, (table) => {
    table.string('queue', 191).notNullable();
    table.specificType('minute', 'DATETIME').notNullable();
    table.integer('completed').unsigned().notNullable().defaultTo(0);
    table.integer('failed').unsigned().notNullable().defaultTo(0);
    table.integer('retried').unsigned().notNullable().defaultTo(0);
    table.integer('deferred').unsigned().notNullable().defaultTo(0);
    table.bigInteger('runtime_ms').unsigned().notNullable().defaultTo(0);
    table.primary(['queue', 'minute']);
    table.index(['minute'], `${tables.queueStats}_minute_index`);
  });
}

export async function down(knex: Knex, tables: TableNames): Promise<void> {
  await knex.schema.dropTableIfExists(tables.queueStats);
  await knex.schema.dropTableIfExists(tables.queueControls);
  await knex.schema.dropTableIfExists(tables.workers);
}
