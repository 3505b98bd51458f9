import type { WorkerStopReason } from '../worker/events.js';

/**
 * How a supervisor and its worker processes talk: the worker's identity travels in the
 * environment (so the supervisor knows it before the process runs a line), and the rest over
 * the IPC channel of `child_process.fork`.
 */
export const CHILD_ENV = {
  workerId: 'MAILQ_WORKER_ID',
  supervisorId: 'MAILQ_SUPERVISOR_ID',
} as const;

/** Supervisor → worker process. */
export type SupervisorMessage = { type: 'mailq:stop' };

/** Worker process → supervisor. */
export type ChildMessage = { type: 'mailq:ready' } | { type: 'mailq:stopping'; reason: WorkerStopReason };

export function isChildMessage(value: unknown): value is ChildMessage {
  const type = (value as { type?: unknown } | null)?.type;
  return type === 'mailq:ready' || type === 'mailq:stopping';
}

export function isSupervisorMessage(value: unknown): value is SupervisorMessage {
  return (value as { type?: unknown } | null)?.type === 'mailq:stop';
}

/**
 * A supervised worker drains for a little less than the supervisor's stop wait, so that it has
 * time to put unfinished jobs back and exit before the supervisor's deadline.
 */
export function childStopWaitMs(stopWaitMs: number): number {
  const margin = Math.min(5_000, Math.max(250, stopWaitMs * 0.2));
  return Math.max(0, stopWaitMs - margin);
}

/** Stop reasons after which a worker process is not replaced: its work is done. */
export const FINAL_STOP_REASONS: ReadonlySet<WorkerStopReason> = new Set(['empty', 'once']);

/** Exit codes of a worker process (`mailq work`); any supervisor (ours, systemd, Supervisor) restarts on all of them. */
export const WORKER_EXIT = {
  ok: 0,
  /** A handler ignored its timeout past the grace period: the process recycled to shed it. */
  stuckJob: 70,
} as const;
