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
/** Extra context a worker adds for a job type (e.g. `rateLimit`); `signal()` makes the job's AbortSignal. */
export type ContextExtension = (definition: JobDefinition, signal: () => AbortSignal) => Partial<JobContext>;

export function startAttempt(job: ClaimedJob, registry: JobRegistry, logger: Logger, extend?: ContextExtension): RunningAttempt {
  const stop = new AttemptStop();
  let handlerSettled: Promise<void> = Promise.resolve();
  const interrupt = () => stop.abort(new WorkerStopping());
  const abandon = (reason: LeaseLostError) => stop.abort(reason);

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
    const timer = job.timeoutMs > 0 ? setTimeout(() => stop.abort(new JobTimeoutError(job.timeoutMs)), job.timeoutMs) : undefined;
    // Assigned, not spread: spreading would call the lazy `logger` and `signal` getters for every job.
    const context = Object.assign(jobContext(job, stop, logger), extend?.(definition, () => stop.signal));
    const handler = Promise.resolve().then(() => definition.handle(payload, context));
    handlerSettled = handler.then(
      () => undefined,
      () => undefined,
    );
    try {
      const result = await Promise.race([handler.then(() => ({ kind: 'completed' }) as const), stop.stopped]);
      return result;
    } catch (error) {
      return classify(error, stop.reason);
    } finally {
      clearTimeout(timer);
    }
  })();

  return { job, outcome, interrupt, abandon, get handlerSettled() { return handlerSettled; } };
}

/**
 * How an attempt is stopped (timeout, worker stop, lease lost): the first reason wins and ends the
 * race at once. The AbortSignal the handler sees is made only when the handler asks for it (an
 * AbortController, its signal and a listener per job were ~8% of a busy worker's CPU), already
 * aborted with the reason if the attempt was stopped before.
 */
class AttemptStop {
  reason: unknown;
  readonly stopped: Promise<never>;
  private controller: AbortController | undefined;
  private reject!: (reason: unknown) => void;

  constructor() {
    this.stopped = new Promise<never>((_, reject) => (this.reject = reject));
    // Nobody may be racing it (the attempt failed before its handler ran): no unhandled rejection.
    this.stopped.catch(() => undefined);
  }

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.reason !== undefined && !this.controller.signal.aborted) this.controller.abort(this.reason);
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.controller?.abort(reason);
    this.reject(reason);
  }
}

function jobContext(job: ClaimedJob, stop: AttemptStop, logger: Logger): JobContext {
  let jobLogger: Logger | undefined;
  return {
    get signal() {
      return stop.signal;
    },
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

function classify(error: unknown, stopReason: unknown): AttemptOutcome {
  // Whatever the handler threw after we stopped it, the stop's reason is the truth.
  const cause = stopReason !== undefined ? stopReason : error;
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
