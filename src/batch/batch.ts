import type { Knex } from 'knex';
import type { JobDefinition } from '../job.js';
import type { DispatchOptions, RowTemplate } from '../queue/rows.js';
import type { DispatchManyOptions } from '../queue/dispatcher.js';
import { parseJsonColumn } from '../db/json.js';

/** A job to run when a batch finishes: closures cannot be stored, so a job name and a payload. */
export interface BatchCallback {
  job: JobDefinition | string;
  payload?: unknown;
  /** Queue, priority, tries… for the callback job itself. */
  options?: Omit<DispatchOptions, 'batchId' | 'unique' | 'delay'>;
}

export interface BatchOptions extends Omit<DispatchOptions, 'batchId'>, Pick<DispatchManyOptions, 'chunkSize' | 'onProgress'> {
  name?: string;
  /** Create the batch and its jobs inside the caller's transaction: they exist only if it commits. */
  transaction?: Knex.Transaction;
  /** Dispatched once when every job completed (none failed, not cancelled). */
  then?: BatchCallback;
  /** Dispatched once when the batch finished with at least one failed job. */
  catch?: BatchCallback;
  /** Dispatched once when the batch finished, whatever happened. */
  finally?: BatchCallback;
}

/** One job of a mixed batch. */
export interface BatchJob {
  job: JobDefinition | string;
  payload: unknown;
  options?: Omit<DispatchOptions, 'batchId'>;
}

export interface CreatedBatch {
  id: string;
  name: string;
  /** Jobs in the batch (dispatched). */
  total: number;
  /** Jobs not dispatched because their unique key was taken. */
  skipped: number;
}

export type BatchState = 'running' | 'finished' | 'cancelled';

export interface Batch {
  id: string;
  name: string;
  total: number;
  /** Jobs neither completed nor failed yet. */
  pending: number;
  /** Completed or failed. */
  processed: number;
  failed: number;
  /** uuids of the failed jobs (find them with `mailq failed`, or in failed_jobs by uuid). */
  failedJobIds: string[];
  /** processed / total, 0–100. */
  progress: number;
  state: BatchState;
  createdAt: Date;
  finishedAt: Date | null;
  cancelledAt: Date | null;
}

/**
 * What a callback job finds in `payload.batch` (when its payload is an object): declare it in the
 * callback job's schema, e.g. `batch: z.object({ id: z.string(), failed: z.number() }).passthrough()`.
 */
export interface BatchSummary {
  id: string;
  name: string;
  total: number;
  failed: number;
  failedJobIds: string[];
  cancelled: boolean;
}

/** A callback as stored in `job_batches.callbacks`: the row template resolved at creation, and the payload. */
export interface StoredCallback {
  template: RowTemplate;
  payload: unknown;
}

export type StoredCallbacks = Partial<Record<'then' | 'catch' | 'finally', StoredCallback>>;

export function toBatch(row: Record<string, unknown>): Batch {
  const total = Number(row.total_jobs);
  const pending = Math.max(0, Number(row.pending_jobs));
  const processed = total - pending;
  const finishedAt = (row.finished_at as Date | null) ?? null;
  const cancelledAt = (row.cancelled_at as Date | null) ?? null;
  return {
    id: String(row.id),
    name: String(row.name ?? ''),
    total,
    pending,
    processed,
    failed: Number(row.failed_jobs),
    failedJobIds: parseJsonColumn<string[]>(row.failed_job_ids ?? '[]'),
    progress: total === 0 ? 100 : Math.floor((processed / total) * 100),
    state: cancelledAt ? 'cancelled' : finishedAt ? 'finished' : 'running',
    createdAt: row.created_at as Date,
    finishedAt,
    cancelledAt,
  };
}

/** Object payloads (or none) get the batch's summary as `batch`; other payloads are passed as they are. */
export function withSummary(payload: unknown, batch: BatchSummary): unknown {
  if (payload === undefined || payload === null) return { batch };
  if (typeof payload === 'object' && !Array.isArray(payload)) return { ...(payload as Record<string, unknown>), batch };
  return payload;
}
