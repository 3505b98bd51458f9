import type { ClaimedJob } from './claimed-job.js';

/** Why a worker stopped (or is stopping). */
export type WorkerStopReason = 'stopped' | 'signal' | 'empty' | 'once' | 'max-jobs' | 'max-time' | 'memory' | 'stuck-job' | 'restart';

/** A worker's running totals since it started. */
export interface WorkerStats {
  completed: number;
  failed: number;
  retried: number;
  deferred: number;
  /** Jobs whose handler runs now. */
  running: number;
  /** Claimed ahead and waiting in this worker for a free slot. */
  buffered: number;
}

/**
 * What a worker tells its listeners (the heartbeat's tally, metrics, tests).
 *
 * @example
 * worker.on('job:failed', (job, error) => console.error(job.name, job.id, error.message));
 */
export interface WorkerEvents {
  'job:started': [ClaimedJob];
  'job:completed': [ClaimedJob, number];
  'job:retrying': [ClaimedJob, Error, number];
  'job:failed': [ClaimedJob, Error];
  'job:deferred': [ClaimedJob, number, string];
  /** The worker let go of a job it could no longer vouch for (its lease ran out or was taken): nothing was written for it. */
  'job:lease-lost': [ClaimedJob, Error];
  'error': [Error];
  'stopping': [WorkerStopReason];
  /** Registered (or tried to) and about to claim. */
  'ready': [];
}
