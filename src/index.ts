/**
 * mailq: a job queue on MySQL/MariaDB alone. This is what an app that queues its own jobs imports;
 * the mailbox sync is an add-on (`mailq/mailbox`) and test helpers live in `mailq/testing`.
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

// The queue and its jobs.
export { createMailq, type Mailq, type MailqOptions, type JobQueue } from './mailq.js';
export { defineJob, type JobDefinition, type JobContext, type JobOptions } from './job.js';
export { PermanentError, DeferJobError, JobTimeoutError, MailqError, ConfigError, InvalidJobError, DatabaseError } from './errors.js';
export type { Duration } from './duration.js';
export type { BackoffOption } from './backoff.js';
export type { DispatchOptions } from './queue/rows.js';
export type { DispatchOneOptions, DispatchManyOptions, DispatchedJob, DispatchManyResult } from './queue/dispatcher.js';
export type { UniqueOption } from './queue/unique.js';
export type { ClearedQueue } from './queue/clear.js';

// Running jobs.
export type { Worker, WorkerOptions, WorkerStats } from './worker/worker.js';
export type { WorkerEvents, WorkerStopReason } from './worker/events.js';
export type { ClaimedJob } from './worker/claimed-job.js';
export type { Supervisor, SupervisorOptions, SupervisorEnd, SupervisorEvents } from './supervisor/supervisor.js';
export type { WorkerCommand, ProcessExit } from './supervisor/worker-process.js';
export type { RestartPolicyOptions } from './supervisor/restart-policy.js';

// Connecting: your own knex pool, set up the way the claim needs it, and logs.
export { connect, type Knex } from './db/connection.js';
export { createLogger, type Logger } from './logger.js';
export type { TableNames } from './db/tables.js';
export type { MigrationStatus } from './schema/migrate.js';

// Operating the queue: failed jobs, controls, health.
export type { FailedJobs, FailedJob, ListFailedOptions, RetryFailedOptions, RetryFailedResult } from './failed/store.js';
export type { QueueControls, QueueControlRow } from './controls/queue-controls.js';
export type { Monitor, QueueHealth, QueueOverview, StatusReport } from './monitor/monitor.js';
export type { HostHealth } from './monitor/hosts.js';
export type { QueueThroughput } from './stats/stats-rows.js';
export type { QueueCounts } from './stats/tally.js';
export type { WorkerRecord } from './worker/worker-rows.js';
export type { DoctorReport, DoctorCheck, DoctorOptions, CheckStatus } from './doctor/doctor.js';

// Protecting what jobs call, and following work as a whole: rate limits, batches, the schedule.
export { resolveRateLimit, type RateLimitOption, type ResolvedRateLimit, type JobRateLimit } from './ratelimit/rate-limit.js';
export type { RateLimiter, Acquired } from './ratelimit/limiter.js';
export { followBatch, type BatchStore, type ListBatchesOptions, type CancelledBatch } from './batch/store.js';
export type { Batch, BatchState, BatchOptions, BatchCallback, BatchJob, BatchSummary, CreatedBatch } from './batch/batch.js';
export { Scheduler, type CommandRunner, type SchedulerOptions, type SlotOutcome, type SlotResult } from './schedule/scheduler.js';
export type { ScheduleEntry, ScheduleEntryInput } from './schedule/entry.js';

// Seeing the queue: the web dashboard and Prometheus metrics.
export { startDashboard, type Dashboard, type DashboardOptions, type DashboardMailq } from './dashboard/server.js';
export type { DashboardOverview, BatchView, QueueSeries } from './dashboard/read-model.js';
export { registerQueueMetrics, registerClusterCounters, type QueueMetricSources } from './metrics/queue-metrics.js';
export { instrumentWorker } from './metrics/worker-metrics.js';
export { serveMetrics, type MetricsServerOptions } from './metrics/serve-metrics.js';
export type { Listening } from './http/listen.js';
export type { RateLimitUsage } from './ratelimit/limiter.js';
export type { FailedFilter, FailureGroup } from './failed/store.js';
export type { MinuteCounts } from './stats/stats-rows.js';
