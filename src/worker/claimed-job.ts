import { parseJsonColumn } from '../db/json.js';
import type { BackoffPlan } from '../backoff.js';

/** A job row as a worker holds it after claiming. `attempt` already counts this run. */
export interface ClaimedJob {
  id: number;
  uuid: string;
  queue: string;
  name: string;
  payload: unknown;
  attempt: number;
  maxAttempts: number;
  backoff: BackoffPlan | null;
  timeoutMs: number;
  batchId: string | null;
}

export const CLAIM_COLUMNS = ['id', 'uuid', 'queue', 'name', 'payload', 'attempts', 'max_attempts', 'backoff', 'timeout_ms', 'batch_id'] as const;

export interface ClaimDefaults {
  maxAttempts: number;
  timeoutMs: number;
}

export function toClaimedJob(row: Record<string, unknown>, defaults: ClaimDefaults): ClaimedJob {
  return {
    id: Number(row.id),
    uuid: String(row.uuid),
    queue: String(row.queue),
    name: String(row.name),
    payload: row.payload,
    attempt: Number(row.attempts) + 1,
    maxAttempts: row.max_attempts == null ? defaults.maxAttempts : Number(row.max_attempts),
    backoff: row.backoff == null ? null : parseJsonColumn<BackoffPlan>(row.backoff),
    timeoutMs: row.timeout_ms == null ? defaults.timeoutMs : Number(row.timeout_ms),
    batchId: (row.batch_id as string | null) ?? null,
  };
}
