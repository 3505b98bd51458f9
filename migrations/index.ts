import type { Knex } from 'knex';
import type { TableNames } from '../src/db/tables.js';
import * as createJobs from './20261128000001_create_jobs.js';
import * as createMailbox from './20261128000002_create_mailbox.js';
import * as createWorkersControlsStats from './20261128000004_create_workers_controls_stats.js';
import * as protect from './20261128000005_rate_limits_batches_schedule.js';
import * as failedUniqueKey from './20261128000006_failed_jobs_unique_key.js';
import * as rateLimitKeys from './20261202000007_rate_limit_keys.js';

export interface MailqMigration {
  name: string;
  up(knex: Knex, tables: TableNames): Promise<void>;
  down(knex: Knex, tables: TableNames): Promise<void>;
}

/**
 * Every migration, in order. Imported rather than read from a folder so they ship compiled
 * inside the package and run the same from this repo or from an app's node_modules.
 */
export const migrations: MailqMigration[] = [createJobs, createMailbox, createWorkersControlsStats, protect, failedUniqueKey, rateLimitKeys];
