import type { ClaimedJob } from './claimed-job.js';

/** Why a worker stopped: what it emits with 'stopping' and what a supervisor reads to decide on a restart. */
export type WorkerStopReason = 'stopped' | 'signal' | 'empty' | 'once' | 'max-jobs' | 'max-time' | 'memory' | 'stuck-job' | 'restart';

/** What a worker emits, for its heartbeat, its supervisor, and an app's own listeners. */
export interface WorkerEvents {
  'job:started': [ClaimedJob];
  'job:completed': [ClaimedJob, number];
  'job:retrying': [ClaimedJob, Error, number];
  'job:failed': [ClaimedJob, Error];
  'job:deferred': [ClaimedJob, number, string];
  'error': [Error];
  'stopping': [WorkerStopReason];
  /** Registered (or tried to) and about to claim. */
  'ready': [];
}
