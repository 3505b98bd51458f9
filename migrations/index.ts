import type { TableNames } from '../src/db/tables.js';
import type { MailqMigration } from '../src/schema/migration-set.js';
import * as createJobs from './20261128000001_create_jobs.js';
import * as createWorkersControlsStats from './20261128000004_create_workers_controls_stats.js';
import * as protect from './20261128000005_rate_limits_batches_schedule.js';
import * as failedUniqueKey from './20261128000006_failed_jobs_unique_key.js';
import * as rateLimitKeys from './20261202000007_rate_limit_keys.js';

/**
 * The queue's migrations, in order. Imported rather than read from a folder so they ship compiled
 * inside the package and run the same from this repo or from an app's node_modules.
 */
export const migrations: ReadonlyArray<MailqMigration<TableNames>> = [createJobs, createWorkersControlsStats, protect, failedUniqueKey, rateLimitKeys];

/** The mailbox sync's tables were created here until they moved to the add-on's own set (src/mailbox/migrations). */
export const handedOver: readonly string[] = ['20261128000002_create_mailbox'];
