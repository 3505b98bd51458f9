/** Table names, all behind one configurable prefix so mailq can share a database with an app. */
export interface TableNames {
  jobs: string;
  failedJobs: string;
  migrations: string;
  /** The prefix every name carries; an add-on (`mailq/mailbox`) names its own tables with it. */
  prefix: string;
  /** One row per live worker (and supervisor): its heartbeat. */
  workers: string;
  /** Pause flags and restart signals, per queue ('*' = every queue). */
  queueControls: string;
  /** Per-queue, per-minute counts of finished jobs, added by workers at heartbeat time. */
  queueStats: string;
  /** One row per token slot of each rate-limit key (src/ratelimit). */
  rateLimits: string;
  /** One row per rate-limit key: its window and any 429 pause (what the dashboard shows). */
  rateLimitKeys: string;
  jobBatches: string;
  /** One row per schedule entry and slot: the row that makes a slot fire once across hosts. */
  scheduleRuns: string;
}

export function tableNames(prefix = ''): TableNames {
  return {
    jobs: `${prefix}jobs`,
    failedJobs: `${prefix}failed_jobs`,
    migrations: `${prefix}mailq_migrations`,
    prefix,
    workers: `${prefix}workers`,
    queueControls: `${prefix}queue_controls`,
    queueStats: `${prefix}queue_stats`,
    rateLimits: `${prefix}rate_limits`,
    rateLimitKeys: `${prefix}rate_limit_keys`,
    jobBatches: `${prefix}job_batches`,
    scheduleRuns: `${prefix}schedule_runs`,
  };
}
