import { randomUUID } from 'node:crypto';
import { toBackoffPlan } from '../backoff.js';
import { MAX_TIMER_MS, MAX_TIMER_TEXT, parseDuration, type Duration } from '../duration.js';
import { InvalidJobError } from '../errors.js';
import { assertName } from '../names.js';
import type { JobDefinition } from '../job.js';
import { jsonProblem } from './payload-json.js';
import type { UniqueOption } from './unique.js';

export interface DispatchOptions {
  /** Defaults to the job's own queue, else `default`. */
  queue?: string;
  /** Run no earlier than this from now (database clock). */
  delay?: Duration;
  /** Lower runs first (like BullMQ); default 0. */
  priority?: number;
  /** Override the job's tries / backoff / timeout for these rows. */
  tries?: number;
  backoff?: JobDefinition['backoff'];
  timeout?: Duration;
  batchId?: string;
  /**
   * A unique key for this dispatch (overrides the job's `unique`): a key, a function of the
   * payload (for dispatchMany), or `false` for none. A taken key skips the job instead of inserting it.
   */
  unique?: UniqueOption;
}

/** One row as the INSERT writes it, minus what the database fills in (id, available_at, created_at). */
export interface NewJobRow {
  uuid: string;
  queue: string;
  name: string;
  payload: string;
  max_attempts: number | null;
  backoff: string | null;
  timeout_ms: number | null;
  priority: number;
  batch_id: string | null;
  unique_key: string | null;
}

export const NEW_JOB_COLUMNS = [
  'uuid', 'queue', 'name', 'payload', 'max_attempts', 'backoff', 'timeout_ms', 'priority', 'batch_id', 'unique_key',
] as const satisfies ReadonlyArray<keyof NewJobRow>;

/** The parts every row of one dispatch call shares, computed once. */
export interface RowTemplate {
  queue: string;
  name: string;
  maxAttempts: number | null;
  backoff: string | null;
  timeoutMs: number | null;
  priority: number;
  batchId: string | null;
  delayMs: number;
}

export function rowTemplate(job: JobDefinition | string, options: DispatchOptions = {}): RowTemplate {
  const definition = typeof job === 'string' ? undefined : job;
  const name = typeof job === 'string' ? job : job.name;
  const tries = options.tries ?? definition?.tries;
  const backoff = options.backoff ?? definition?.backoff;
  const timeout = options.timeout ?? definition?.timeout;
  const priority = options.priority ?? definition?.priority ?? 0;
  if (!Number.isInteger(priority) || priority < -32768 || priority > 32767) throw new InvalidJobError(`priority must be an integer from -32768 to 32767`);
  if (tries !== undefined && (!Number.isInteger(tries) || tries < 1)) throw new InvalidJobError('tries must be an integer ≥ 1');
  const queue = options.queue ?? definition?.queue ?? 'default';
  const invalid = (message: string) => new InvalidJobError(message);
  assertName('queue', queue, invalid);
  assertName('job name', name, invalid);
  const timeoutMs = timeout === undefined ? null : checkedDuration('timeout', timeout);
  if (timeoutMs !== null && timeoutMs > MAX_TIMER_MS) throw new InvalidJobError(`timeout: ${MAX_TIMER_TEXT}`);
  return {
    queue,
    name,
    maxAttempts: tries ?? null,
    backoff: backoff === undefined ? null : JSON.stringify(checked('backoff', () => toBackoffPlan(backoff))),
    timeoutMs,
    priority,
    batchId: options.batchId ?? null,
    delayMs: options.delay === undefined ? 0 : checkedDuration('delay', options.delay),
  };
}

/** A dispatch option that does not parse is the caller's mistake (exit 2), not a failure of the queue. */
function checked<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new InvalidJobError(`${what}: ${(error as Error).message}`);
  }
}

function checkedDuration(what: string, value: Duration): number {
  return checked(what, () => parseDuration(value));
}

/** Validates a payload against the job's schema; the error names the bad field. */
export function validatePayload(job: JobDefinition | string, payload: unknown, index?: number): unknown {
  const where = index === undefined ? '' : ` at index ${index}`;
  if (typeof job === 'string' || !job.schema) return ensureSerializable(payload, typeof job === 'string' ? job : job.name, where);
  const result = job.schema.safeParse(payload);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path.length ? `${issue.path.join('.')}: ` : '';
    throw new InvalidJobError(`invalid payload for job '${job.name}'${where}: ${field}${issue.message}`);
  }
  return ensureSerializable(result.data, job.name, where);
}

/** The payload as it will be stored, checked before anything is written (see jsonProblem). */
function ensureSerializable(payload: unknown, name: string, where: string): unknown {
  const problem = payload === undefined ? 'payload is undefined' : jsonProblem(payload);
  if (problem) throw new InvalidJobError(`invalid payload for job '${name}'${where}: ${problem}`);
  return payload;
}

export function newJobRow(template: RowTemplate, payload: unknown, uniqueKey: string | null = null): NewJobRow {
  return {
    uuid: randomUUID(),
    queue: template.queue,
    name: template.name,
    payload: JSON.stringify(payload),
    max_attempts: template.maxAttempts,
    backoff: template.backoff,
    timeout_ms: template.timeoutMs,
    priority: template.priority,
    batch_id: template.batchId,
    unique_key: uniqueKey,
  };
}

/** One fresh row per payload, built as the caller pulls them. */
export function* newJobRows(template: RowTemplate, payloads: Iterable<unknown>): Generator<NewJobRow> {
  for (const payload of payloads) yield newJobRow(template, payload);
}
