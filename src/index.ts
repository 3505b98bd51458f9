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
export type { ClearedQueue } from './queue/clear.js';
export { Worker, newWorkerId, type WorkerOptions, type WorkerStats, type WorkerStopReason, type WorkerEvents } from './worker/worker.js';
export type { ClaimedJob } from './worker/claimed-job.js';
export { FailedJobs, type FailedJob, type ListFailedOptions, type RetryFailedOptions, type RetryFailedResult } from './failed/store.js';
export { MailqError, ConfigError, InvalidJobError, PermanentError, DeferJobError, JobTimeoutError } from './errors.js';
export { loadSettings, parseSettings, settingsSchema, type MailqSettings, type WorkerSettings, type MailqConfigInput, type LoadSettingsOptions } from './config.js';
export { parseDuration, formatDuration, type Duration } from './duration.js';
export { backoffDelayMs, toBackoffPlan, describeBackoff, type BackoffOption, type BackoffPlan } from './backoff.js';
export { connect, type Knex } from './db/connection.js';
export { parseDatabaseUrl, redactUrl } from './db/url.js';
export { tableNames, type TableNames, type TableOverrides } from './db/tables.js';
export { createLogger, type Logger } from './logger.js';
export type { MigrationStatus } from './schema/migrate.js';

// Operations: supervised worker processes, pause/resume/restart, monitor, doctor.
export { QueueControls, ControlState, ALL_QUEUES, type QueueControlRow } from './controls/queue-controls.js';
export { Monitor, queuesOverMax, type QueueHealth, type QueueOverview, type StatusReport } from './monitor/monitor.js';
export type { QueueThroughput } from './stats/stats-rows.js';
export type { QueueCounts } from './stats/tally.js';
export type { WorkerRecord } from './worker/worker-rows.js';
export { runDoctor, type DoctorReport, type DoctorCheck, type DoctorOptions, type CheckStatus } from './doctor/doctor.js';
export { Supervisor, type SupervisorOptions, type SupervisorEnd, type SupervisorEvents } from './supervisor/supervisor.js';
export type { WorkerCommand, ProcessExit } from './supervisor/worker-process.js';
export type { RestartPolicyOptions } from './supervisor/restart-policy.js';
export { supervisedIdentity, followSupervisor, type SupervisedIdentity } from './supervisor/supervised-child.js';
export { parseBytes, formatBytes } from './bytes.js';

// Protecting TWS and following the night: rate limits, unique jobs, batches, the schedule.
export type { UniqueOption } from './queue/unique.js';
export { RateLimiter, type Acquired } from './ratelimit/limiter.js';
export { resolveRateLimit, type RateLimitOption, type ResolvedRateLimit } from './ratelimit/rate-limit.js';
export type { JobRateLimit } from './ratelimit/claim-gate.js';
export { BatchStore, followBatch, type ListBatchesOptions, type CancelledBatch } from './batch/store.js';
export type { Batch, BatchState, BatchOptions, BatchCallback, BatchJob, BatchSummary, CreatedBatch } from './batch/batch.js';
export { captureBatches } from './batch/capture.js';
export { Scheduler, type CommandRunner, type SchedulerOptions, type SlotOutcome, type SlotResult } from './schedule/scheduler.js';
export { ScheduleRuns, type ScheduleRun, type RunStatus } from './schedule/runs.js';
export { scheduleEntrySchema, splitCommandLine, type ScheduleEntry, type ScheduleEntryInput } from './schedule/entry.js';

// The mailbox sync (the nightly TWS workload mailq ships with).
export { MailboxSync, createMailboxSync, MailboxSyncError, describeFailureCode, shortFailureMessage, type MailboxSyncOptions, type TwsConnection, type SyncOutcome, type SyncAttemptOptions } from './mailbox/sync.js';
export { mailboxSyncJob, mailboxSyncPayload, MAILBOX_SYNC_JOB, MAILBOX_SYNC_QUEUE, TWS_RATE_LIMIT_KEY, type MailboxSyncJobOptions, type MailboxSyncPayload } from './mailbox/job.js';
export { dispatchMailboxSync, type QueueSyncOptions, type QueueSyncResult } from './mailbox/dispatch.js';
export { syncMailboxesDirectly, groupFailures, type DirectSyncOptions, type DirectSyncResult, type DirectSyncFailure, type DirectSyncProgress } from './mailbox/direct.js';
export { MailboxStore, type Taxpayer, type TaxpayerFilter, type NewTaxpayer, type SyncStatus, type FailureReason } from './mailbox/store.js';
export { createTwsClient, TwsError, type TwsClient, type TwsClientOptions, type TwsErrorKind, type TwsMessage, type TwsMailboxPage } from './mailbox/tws.js';
export { startFakeTws, fakeMailboxMessages, type FakeTws, type FakeTwsOptions, type FakeTwsStats } from './mailbox/fake-tws.js';
export { runDemo, type DemoOptions, type DemoResult } from './mailbox/demo.js';
