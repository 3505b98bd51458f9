import { parseJsonColumn } from '../db/json.js';
import { toBackoffPlan, type BackoffOption, type BackoffPlan } from '../backoff.js';
import { parseDuration, type Duration } from '../duration.js';

/** A job row as a worker holds it after claiming. `attempt` already counts this run. */
export interface ClaimedJob {
  id: number;
  uuid: string;
  queue: string;
  name: string;
  payload: unknown;
  attempt: number;
  /** Times the job was put back without running, as the claim saw it: with `attempt`, it names this reservation. */
  deferrals: number;
  maxAttempts: number;
  backoff: BackoffPlan | null;
  timeoutMs: number;
  batchId: string | null;
}

/**
 * One reservation of one row. Every claim adds one to `attempts` and every put-back moves one from
 * `attempts` to `deferrals`, so their sum grows with each claim: with the worker's id, the three name
 * exactly one reservation, and a statement meant for an earlier one matches nothing.
 */
export type Reservation = Pick<ClaimedJob, 'id' | 'attempt' | 'deferrals'>;

export const CLAIM_COLUMNS = ['id', 'uuid', 'queue', 'name', 'payload', 'attempts', 'deferrals', 'max_attempts', 'backoff', 'timeout_ms', 'batch_id'] as const;

/** What a job's definition sets for itself; the worker knows it even when the dispatcher did not. */
export interface JobDefaults {
  maxAttempts?: number;
  timeoutMs?: number;
  backoff?: BackoffPlan;
}

/**
 * For rows dispatched without tries/timeout/backoff (e.g. by name, from a process that has not
 * loaded the job): the job definition's own options first, then the worker's defaults.
 */
export interface ClaimDefaults {
  maxAttempts: number;
  timeoutMs: number;
  byName?: ReadonlyMap<string, JobDefaults>;
}

/** `row` is read after its reservation: its `attempts` already counts this run. */
export function toClaimedJob(row: Record<string, unknown>, defaults: ClaimDefaults): ClaimedJob {
  const own = defaults.byName?.get(String(row.name));
  return {
    id: Number(row.id),
    uuid: String(row.uuid),
    queue: String(row.queue),
    name: String(row.name),
    payload: row.payload,
    attempt: Number(row.attempts),
    deferrals: Number(row.deferrals),
    maxAttempts: row.max_attempts == null ? (own?.maxAttempts ?? defaults.maxAttempts) : Number(row.max_attempts),
    backoff: row.backoff == null ? (own?.backoff ?? null) : parseJsonColumn<BackoffPlan>(row.backoff),
    timeoutMs: row.timeout_ms == null ? (own?.timeoutMs ?? defaults.timeoutMs) : Number(row.timeout_ms),
    batchId: (row.batch_id as string | null) ?? null,
  };
}

/** Each job's own options, from the definitions a worker has loaded (only jobs that set any). */
export function jobDefaultsOf(definitions: Iterable<{ name: string; tries?: number; timeout?: Duration; backoff?: BackoffOption }>): Map<string, JobDefaults> {
  const byName = new Map<string, JobDefaults>();
  for (const { name, tries, timeout, backoff } of definitions) {
    if (tries === undefined && timeout === undefined && backoff === undefined) continue;
    byName.set(name, {
      maxAttempts: tries,
      timeoutMs: timeout === undefined ? undefined : parseDuration(timeout),
      backoff: backoff === undefined ? undefined : toBackoffPlan(backoff),
    });
  }
  return byName;
}
