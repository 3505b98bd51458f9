import type { Logger } from 'pino';
import type { Duration } from '../duration.js';
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
  readonly job: ClaimedJob;
  /** When the attempt started (performance.now()). */
  readonly startedAt: number;
  /** How the attempt ended (made on request: a worker hears it through `onEnded`). */
  readonly outcome: Promise<AttemptOutcome>;
  /** Resolves when the handler really returns: it may outlive a timeout or a stop. */
  readonly handlerSettled: Promise<void>;
  /** Stop the attempt now: the worker is shutting down and will put the job back. */
  interrupt(): void;
  /** Stop the attempt now: its reservation is no longer this worker's, so nothing is written for it. */
  abandon(reason: LeaseLostError): void;
}

/** Hears how an attempt ended, once, always after the call that started it has returned. */
export type AttemptEnded = (attempt: RunningAttempt, outcome: AttemptOutcome) => void;

class WorkerStopping extends Error {
  constructor() {
    super('worker stopping');
    this.name = 'WorkerStopping';
  }
}

/**
 * Extra context a worker adds for a job type (e.g. `rateLimit`), or nothing. `attempt.signal` makes
 * the job's AbortSignal: read it only when needed.
 */
export type ContextExtension = (definition: JobDefinition, attempt: { readonly job: ClaimedJob; readonly signal: AbortSignal }) => Partial<JobContext> | undefined;

/**
 * Runs one claimed job: finds its definition, validates the payload, and races the handler
 * against its timeout and the worker's stop. The first of those decides the outcome, which
 * `onEnded` hears (and `outcome` resolves with).
 */
export function startAttempt(job: ClaimedJob, registry: JobRegistry, logger: Logger, extend?: ContextExtension, onEnded?: AttemptEnded): RunningAttempt {
  const attempt = new Attempt(job, onEnded);
  attempt.begin(registry, logger, extend);
  return attempt;
}

/** One shared object: a completed attempt has nothing else to say. */
const COMPLETED: AttemptOutcome = Object.freeze({ kind: 'completed' });

/**
 * One attempt, without a promise chain of its own: the handler's end and the stops (timeout, worker
 * stop, lease lost) each call `end`, and the first call decides. Per job that is one microtask to
 * start the handler and, for an async handler, one reaction to its promise. The AbortSignal the
 * handler sees is made only when the handler asks for it (an AbortController, its signal and a
 * listener per job were ~8% of a busy worker's CPU), already aborted if the attempt was stopped.
 */
class Attempt implements RunningAttempt {
  readonly startedAt = performance.now();
  /** Why the attempt was stopped; the first reason wins. */
  private stopReason: unknown;
  private ended: AttemptOutcome | undefined;
  private handler: 'not started' | 'running' | 'returned' = 'not started';
  private controller: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Made only for those who ask (inline runs; a worker waiting out a handler past its timeout). */
  private outcomeWaiter: Deferred<AttemptOutcome> | undefined;
  private settledWaiter: Deferred<void> | undefined;

  constructor(
    readonly job: ClaimedJob,
    private readonly onEnded: AttemptEnded | undefined,
  ) {}

  begin(registry: JobRegistry, logger: Logger, extend: ContextExtension | undefined): void {
    const { job } = this;
    const definition = registry.get(job.name);
    if (!definition) {
      const known = registry.names().join(', ') || 'none';
      return this.endSoon(permanentFailure(`unknown job '${job.name}': no definition is loaded in this worker (known: ${known})`));
    }
    let payload: unknown;
    try {
      payload = parseJsonColumn(job.payload);
    } catch (error) {
      return this.endSoon(permanentFailure(`payload of job '${job.name}' is not valid JSON: ${(error as Error).message}`));
    }
    if (definition.schema) {
      const parsed = definition.schema.safeParse(payload);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        return this.endSoon(permanentFailure(`invalid payload for job '${job.name}': ${issue.path.join('.') || 'payload'}: ${issue.message}`));
      }
      payload = parsed.data;
    }
    // A timeout of 0 means "no timeout", as in Laravel.
    if (job.timeoutMs > 0) this.timer = setTimeout(() => this.stop(new JobTimeoutError(job.timeoutMs)), job.timeoutMs);
    const context = new HandlerContext(this, logger);
    const extra = extend?.(definition, this);
    if (extra) Object.assign(context, extra);
    this.handler = 'running';
    // In a microtask, as an awaited call would: the worker finishes starting the job first.
    queueMicrotask(() => this.runHandler(definition, payload, context));
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.stopReason !== undefined) this.controller.abort(this.stopReason);
    }
    return this.controller.signal;
  }

  get outcome(): Promise<AttemptOutcome> {
    if (this.ended) return Promise.resolve(this.ended);
    this.outcomeWaiter ??= deferred();
    return this.outcomeWaiter.promise;
  }

  get handlerSettled(): Promise<void> {
    if (this.handler !== 'running') return Promise.resolve();
    this.settledWaiter ??= deferred();
    return this.settledWaiter.promise;
  }

  interrupt(): void {
    this.stop(new WorkerStopping());
  }

  abandon(reason: LeaseLostError): void {
    this.stop(reason);
  }

  private runHandler(definition: JobDefinition, payload: unknown, context: JobContext): void {
    // Stopped before it began (its job is being put back or was let go): it must not run at all.
    if (this.stopReason !== undefined) return this.handlerReturned();
    let result: unknown;
    try {
      result = definition.handle(payload, context);
    } catch (error) {
      return this.handlerFailed(error);
    }
    if (isThenable(result)) {
      Promise.resolve(result).then(
        () => this.handlerCompleted(),
        (error: unknown) => this.handlerFailed(error),
      );
    } else this.handlerCompleted();
  }

  private handlerCompleted(): void {
    this.handlerReturned();
    if (this.decide(COMPLETED)) this.announce();
  }

  private handlerFailed(error: unknown): void {
    this.handlerReturned();
    if (this.decide(classify(error, this.stopReason))) this.announce();
  }

  private handlerReturned(): void {
    this.handler = 'returned';
    this.settledWaiter?.resolve();
  }

  /**
   * Timeout, worker stop or lease lost: decides the outcome now, unless the handler's end already
   * has, and before the signal aborts: a handler that returns because of the abort did not complete.
   */
  private stop(reason: unknown): void {
    if (this.stopReason !== undefined) return;
    this.stopReason = reason;
    this.endSoon(classify(reason, reason));
    this.controller?.abort(reason);
  }

  /** Decided now, heard in a microtask: whoever stopped the attempt (or started it) finishes its own call first. */
  private endSoon(outcome: AttemptOutcome): void {
    if (this.decide(outcome)) queueMicrotask(() => this.announce());
  }

  /** The first outcome decided is the attempt's. */
  private decide(outcome: AttemptOutcome): boolean {
    if (this.ended) return false;
    this.ended = outcome;
    clearTimeout(this.timer);
    return true;
  }

  private announce(): void {
    this.outcomeWaiter?.resolve(this.ended!);
    this.onEnded?.(this, this.ended!);
  }
}

/**
 * What the handler gets. `signal` and `logger` are made on first use, by getters on the class: an
 * object literal with getters made two closures and went through the runtime for each accessor,
 * ~1 µs per job (a class instance: ~15 ns). So read them from the context; a spread copy
 * (`{ ...ctx }`) has `job`, `defer` and `rateLimit`, not them.
 */
class HandlerContext implements JobContext {
  readonly job: JobContext['job'];
  readonly defer = defer;
  declare rateLimit?: JobContext['rateLimit'];
  readonly #attempt: Attempt;
  readonly #workerLogger: Logger;
  #logger: Logger | undefined;

  constructor(attempt: Attempt, workerLogger: Logger) {
    const { job } = attempt;
    this.job = { id: job.id, uuid: job.uuid, name: job.name, queue: job.queue, attempt: job.attempt, maxAttempts: job.maxAttempts, batchId: job.batchId };
    this.#attempt = attempt;
    this.#workerLogger = workerLogger;
  }

  get signal(): AbortSignal {
    return this.#attempt.signal;
  }

  /** A pino child per job costs more than a no-op job itself: made only for handlers that log. */
  get logger(): Logger {
    const { job } = this;
    return (this.#logger ??= this.#workerLogger.child({ jobId: job.id, job: job.name, attempt: job.attempt }));
  }
}

function defer(delay: Duration, reason?: string): never {
  throw new DeferJobError(delay, reason);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as PromiseLike<unknown>).then === 'function';
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((settle) => (resolve = settle));
  return { promise, resolve };
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
