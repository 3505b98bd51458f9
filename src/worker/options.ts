import { hostName } from '../host-name.js';
import { randomBytes } from 'node:crypto';
import { toBackoffPlan, type BackoffOption, type BackoffPlan } from '../backoff.js';
import { parseDuration, type Duration } from '../duration.js';

export interface WorkerOptions {
  /** Queues in priority order: the first drains before the next is read. Default `['default']`. */
  queues?: string[];
  /** Jobs run at once in this process. Default 1. */
  concurrency?: number;
  /**
   * Jobs claimed ahead of free slots, held in this worker (leases renewed) so a freed slot starts the
   * next job without a round trip to the database. Default 0 (opt-in, as in graphile-worker): see the README's Claim-ahead.
   */
  prefetch?: number;
  /** Defaults for jobs that set none of their own. */
  tries?: number;
  timeout?: Duration;
  backoff?: BackoffOption;
  /** Pause between polls when nothing is due. Default 100 ms. */
  sleep?: Duration;
  /** Stop after this many jobs (then a supervisor starts a fresh process). */
  maxJobs?: number;
  /** Stop after running this long. */
  maxTime?: Duration;
  /** Run one job, then stop. */
  once?: boolean;
  /** Stop when no job is due and none is running. */
  stopWhenEmpty?: boolean;
  /** On stop, how long running jobs may finish before they are put back. Default 60 s. */
  stopWait?: Duration;
  /** Lease = job timeout + this grace (capped by leaseMax), renewed while the job runs. */
  leaseGrace?: Duration;
  leaseMax?: Duration;
  /** A handler still running this long after its timeout makes the worker recycle. */
  timeoutGrace?: Duration;
  /** How often this worker returns expired leases of dead workers. Default 15 s; 0 disables. */
  sweepInterval?: Duration;
  /** How long finish statements keep retrying while the database is unreachable. Default 10 min. */
  reconnectFor?: Duration;
  workerId?: string;
  /** How long a finished job waits for others to share its DELETE. Default 20 ms. */
  completionWindow?: Duration;
  /** How often the worker reports in (workers table, per-minute stats) and reads pause/restart controls. Default 5 s; 0 = never. */
  heartbeat?: Duration;
  /** Resident memory (bytes) past which the worker stops gracefully with reason 'memory', for its supervisor to replace it. */
  memoryLimit?: number;
  /** The supervisor that started this worker's process, shown in `mailq status`. */
  supervisorId?: string;
  /**
   * The host this worker reports in the workers table and its id (`mailq status` groups by it and
   * calls a host lost when all of its processes go silent). Default: the machine's hostname.
   */
  hostname?: string;
}

export interface ResolvedOptions {
  queues: string[];
  concurrency: number;
  prefetch: number;
  maxAttempts: number;
  completionWindowMs?: number;
  timeoutMs: number;
  backoff: BackoffPlan;
  sleepMs: number;
  maxJobs?: number;
  maxTimeMs?: number;
  once: boolean;
  stopWhenEmpty: boolean;
  stopWaitMs: number;
  leaseGraceMs: number;
  leaseMaxMs: number;
  timeoutGraceMs: number;
  sweepIntervalMs: number;
  reconnectForMs: number;
  heartbeatMs: number;
  memoryLimit?: number;
  hostname: string;
}

export function newWorkerId(host: string = hostName()): string {
  return `${host}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

export function resolveOptions(options: WorkerOptions): ResolvedOptions {
  const queues = options.queues?.length ? options.queues : ['default'];
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError('concurrency must be an integer ≥ 1');
  const prefetch = options.prefetch ?? 0;
  if (!Number.isInteger(prefetch) || prefetch < 0) throw new RangeError('prefetch must be an integer ≥ 0');
  return {
    hostname: hostName(options.hostname),
    queues,
    concurrency,
    prefetch,
    completionWindowMs: options.completionWindow === undefined ? undefined : parseDuration(options.completionWindow),
    maxAttempts: options.tries ?? 1,
    timeoutMs: parseDuration(options.timeout ?? 60),
    backoff: toBackoffPlan(options.backoff ?? 0),
    sleepMs: parseDuration(options.sleep ?? '100ms'),
    maxJobs: options.maxJobs,
    maxTimeMs: options.maxTime === undefined ? undefined : parseDuration(options.maxTime),
    once: options.once ?? false,
    stopWhenEmpty: options.stopWhenEmpty ?? false,
    stopWaitMs: parseDuration(options.stopWait ?? 60),
    leaseGraceMs: parseDuration(options.leaseGrace ?? 30),
    leaseMaxMs: parseDuration(options.leaseMax ?? '5m'),
    timeoutGraceMs: parseDuration(options.timeoutGrace ?? 10),
    sweepIntervalMs: parseDuration(options.sweepInterval ?? 15),
    reconnectForMs: parseDuration(options.reconnectFor ?? '10m'),
    heartbeatMs: parseDuration(options.heartbeat ?? 5),
    memoryLimit: options.memoryLimit,
  };
}

