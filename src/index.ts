/**
 * mailq: a job queue on MySQL/MariaDB alone.
 *
 * @example
 * import { createMailq, defineJob } from 'mailq';
 * import { z } from 'zod';
 *
 * const greet = defineJob({ name: 'greet', schema: z.object({ to: z.string() }), tries: 3, async handle({ to }) { console.log(`hi ${to}`); } });
 * const mq = createMailq({ databaseUrl: 'mysql://root@127.0.0.1:3306/app', jobs: [greet] });
 * await mq.migrate();
 * await mq.dispatch(greet, { to: 'Ana' });
 * await mq.worker({ stopWhenEmpty: true }).run();
 * await mq.close();
 */
export { createMailq, Mailq, type MailqOptions } from './mailq.js';
export { defineJob, isJobDefinition, jobsFromModule, JobRegistry, type JobDefinition, type JobContext, type JobOptions } from './job.js';
export type { DispatchOptions } from './queue/rows.js';
export type { DispatchOneOptions, DispatchManyOptions, DispatchedJob, DispatchManyResult } from './queue/dispatcher.js';
export { Worker, newWorkerId, type WorkerOptions, type WorkerStats, type WorkerStopReason, type WorkerEvents } from './worker/worker.js';
export type { ClaimedJob } from './worker/claimed-job.js';
export { FailedJobs, type FailedJob, type ListFailedOptions, type RetryFailedResult } from './failed/store.js';
export { MailqError, ConfigError, InvalidJobError, PermanentError, DeferJobError, JobTimeoutError } from './errors.js';
export { loadSettings, parseSettings, settingsSchema, type MailqSettings, type WorkerSettings, type MailqConfigInput, type LoadSettingsOptions } from './config.js';
export { parseDuration, formatDuration, type Duration } from './duration.js';
export { backoffDelayMs, toBackoffPlan, type BackoffOption, type BackoffPlan } from './backoff.js';
export { connect, type Knex } from './db/connection.js';
export { parseDatabaseUrl, redactUrl } from './db/url.js';
export { tableNames, type TableNames } from './db/tables.js';
export { createLogger, type Logger } from './logger.js';
export type { MigrationStatus } from './schema/migrate.js';
