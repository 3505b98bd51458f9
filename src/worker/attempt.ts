import type { Logger } from 'pino';
import { parseDuration, type Duration } from '../duration.js';
import { ConfigError, DeferJobError, JobTimeoutError, LeaseLostError, PermanentError } from '../errors.js';
import type { JobContext, JobDefinition, JobRegistry } from '../job.js';
import { parseJsonColumn } from '../db/json.js';
import type { ClaimedJob } from './claimed-job.js';

/** How one attempt ended. `handlerSettled` resolves when the handler really returns (it may outlive a timeout). */
export type AttemptOutcome =
  | { kind: 'completed' }
  | { kind: 'failed'; error: Error; permanent: boolean }
  | { kind: 'deferred'; delayMs: number; reason: string }
  | { kind: 'interrupted' }
  | { kind: 'lease-lost'; error: LeaseLostError };

export interface RunningAttempt {
  job: ClaimedJob;
  outcome: Promise<AttemptOutcome>;
  handlerSettled: Promise<void>;
  /** Stop the attempt now: the worker is shutting down and will put the job back. */
  interrupt(): void;
  /** Stop the attempt now: its reservation is no longer this worker's, so nothing is written for it. */
  abandon(reason: LeaseLostError): void;
}

class WorkerStopping extends Error {
  constructor() {
    super('worker stopping');
    this.name = 'WorkerStopping';
  }
}

/**
 * Runs one claimed job: finds its definition, validates the payload, and races the handler
 * against its timeout and the worker's stop. The first of those decides the outcome.
 */
/** Extra context a worker adds for a job type (e.g. `rateLimit`). */
export type ContextExtension = (definition: JobDefinition, signal: AbortSignal) => Partial<JobContext>;

export function startAttempt(job: ClaimedJob, registry: JobRegistry, logger: Logger, extend?: ContextExtension): RunningAttempt {
  const controller = new AbortController();
  let handlerSettled: Promise<void> = Promise.resolve();
  const interrupt = () => controller.abort(new WorkerStopping());
  const abandon = (reason: LeaseLostError) => controller.abort(reason);

  const outcome = (async (): Promise<AttemptOutcome> => {
    const definition = registry.get(job.name);
    if (!definition) {
      const known = registry.names().join(', ') || 'none';
      return permanentFailure(`unknown job '${job.name}': no definition is loaded in this worker (known: ${known})`);
    }
    let payload: unknown;
    try {
      payload = parseJsonColumn(job.payload);
    } catch (error) {
      return permanentFailure(`payload of job '${job.name}' is not valid JSON: ${(error as Error).message}`);
    }
    if (definition.schema) {
      const parsed = definition.schema.safeParse(payload);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        return permanentFailure(`invalid payload for job '${job.name}': ${issue.path.join('.') || 'payload'}: ${issue.message}`);
      }
      payload = parsed.data;
    }

    // A timeout of 0 means "no timeout", as in Laravel.
    const timer = job.timeoutMs > 0 ? setTimeout(() => controller.abort(new JobTimeoutError(job.timeoutMs)), job.timeoutMs) : undefined;
    // Assigned, not spread: spreading would call the lazy `logger` getter for every job.
    const context = Object.assign(jobContext(job, controller.signal, logger), extend?.(definition, controller.signal));
    const handler = Promise.resolve().then(() => definition.handle(payload, context));
    handlerSettled = handler.then(
      () => undefined,
      () => undefined,
    );
    try {
      const result = await Promise.race([handler.then(() => ({ kind: 'completed' }) as const), rejectOnAbort(controller.signal)]);
      return result;
    } catch (error) {
      return classify(error, controller.signal);
    } finally {
      clearTimeout(timer);
    }
  })();

  return { job, outcome, interrupt, abandon, get handlerSettled() { return handlerSettled; } };
}

function jobContext(job: ClaimedJob, signal: AbortSignal, logger: Logger): JobContext {
  let jobLogger: Logger | undefined;
  return {
    signal,
    job: { id: job.id, uuid: job.uuid, name: job.name, queue: job.queue, attempt: job.attempt, maxAttempts: job.maxAttempts, batchId: job.batchId },
    // Created on first use: a pino child per job costs more than a no-op job itself.
    get logger() {
      return (jobLogger ??= logger.child({ jobId: job.id, job: job.name, attempt: job.attempt }));
    },
    defer(delay: Duration, reason?: string): never {
      throw new DeferJobError(delay, reason);
    },
  };
}

function rejectOnAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

function classify(error: unknown, signal: AbortSignal): AttemptOutcome {
  // Whatever the handler threw after we aborted it, the abort's reason is the truth.
  const cause = signal.aborted ? signal.reason : error;
  if (cause instanceof WorkerStopping) return { kind: 'interrupted' };
  if (cause instanceof LeaseLostError) return { kind: 'lease-lost', error: cause };
  if (cause instanceof DeferJobError) return { kind: 'deferred', delayMs: cause.delayMs, reason: cause.message };
  // A missing setting fails every attempt alike: retrying only burns attempts and backoff.
  if (cause instanceof PermanentError || cause instanceof ConfigError) return { kind: 'failed', error: cause, permanent: true };
  if (cause instanceof JobTimeoutError) return { kind: 'failed', error: cause, permanent: false };
  return { kind: 'failed', error: toError(cause), permanent: false };
}

function permanentFailure(message: string): AttemptOutcome {
  return { kind: 'failed', error: new PermanentError(message), permanent: true };
}

function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : `non-error thrown: ${JSON.stringify(value)}`);
}

export function describeError(error: Error): string {
  return error.stack && error.stack.includes(error.message) ? error.stack : `${error.name}: ${error.message}\n${error.stack ?? ''}`;
}
