import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { backoffDelayMs, toBackoffPlan, type BackoffOption } from '../backoff.js';
import { parseDuration, type Duration } from '../duration.js';
import { JobRegistry, type JobDefinition } from '../job.js';
import { createLogger } from '../logger.js';
import { newJobRow, rowTemplate, validatePayload, type DispatchOptions } from '../queue/rows.js';
import type { JobRateLimit } from '../ratelimit/rate-limit.js';
import { sleep } from '../sleep.js';
import { startAttempt } from '../worker/attempt.js';
import type { ClaimedJob } from '../worker/claimed-job.js';

/** A worker's defaults for a job that sets none (`mailq work` without --tries/--timeout/--backoff). */
const WORKER_DEFAULTS = { tries: 1, timeout: 60_000, backoff: [0] as BackoffOption };

export interface InlineOptions extends Pick<DispatchOptions, 'queue' | 'tries' | 'timeout' | 'backoff' | 'batchId'> {
  /**
   * Sleep the backoff between attempts as a worker would. Default false: retries follow at once,
   * and `retryDelaysMs` says what a worker would have waited.
   */
  waitBackoff?: boolean;
  /** Handler logs go here; default silent. */
  logger?: Logger;
  /** Aborts the run: the current attempt's signal fires, as on a worker's stop. */
  signal?: AbortSignal;
}

export interface InlineAttempt {
  attempt: number;
  outcome: 'completed' | 'failed' | 'deferred';
  error?: Error;
}

export interface InlineRun {
  /** completed; failed (tries used up, or a permanent failure); deferred (put back without an attempt counted: a worker would run it again later). */
  status: 'completed' | 'failed' | 'deferred';
  /** Handler runs. */
  attempts: number;
  /** The error of the last failed attempt. */
  error?: Error;
  /** True when the job failed for good at once: a PermanentError, an invalid payload. */
  permanent: boolean;
  /** What a worker would have waited before each retry. */
  retryDelaysMs: number[];
  /** For a deferred run: how long the handler asked to wait, and why. */
  deferral?: { delayMs: number; reason: string };
  /** `ctx.rateLimit.pauseFor` calls (a job with a rate limit), in milliseconds. */
  rateLimitPauses: number[];
  history: InlineAttempt[];
}

/**
 * Runs a job here and now, as a worker would but without a database: the payload is validated by
 * the job's schema (an invalid one throws InvalidJobError, as dispatch does) and goes through JSON,
 * the handler gets its context and timeout, a failure is retried up to the job's tries, a
 * PermanentError or a timeout ends it as a worker would. Never throws for what the handler does:
 * the outcome says it.
 *
 * @example
 * const run = await runInline(sendWelcome, { userId: 42 });
 * expect(run).toMatchObject({ status: 'completed', attempts: 1 });
 */
export async function runInline<P, I = P>(job: JobDefinition<P, I>, payload: I, options: InlineOptions = {}): Promise<InlineRun> {
  const template = rowTemplate(job as JobDefinition, options);
  // The row a dispatch would write: what the handler gets has been through the schema and JSON.
  const row = newJobRow(template, validatePayload(job as JobDefinition, payload));
  const maxAttempts = template.maxAttempts ?? WORKER_DEFAULTS.tries;
  const backoff = toBackoffPlan(options.backoff ?? job.backoff ?? WORKER_DEFAULTS.backoff);
  const registry = new JobRegistry([job as JobDefinition]);
  const logger = options.logger ?? createLogger({ level: 'silent' });
  const run: InlineRun = { status: 'failed', attempts: 0, permanent: false, retryDelaysMs: [], rateLimitPauses: [], history: [] };
  const base = { id: 0, uuid: randomUUID(), queue: template.queue, name: job.name, payload: row.payload, maxAttempts, backoff, batchId: template.batchId };
  const claimed: ClaimedJob = { ...base, attempt: 0, deferrals: 0, timeoutMs: template.timeoutMs ?? parseDuration(WORKER_DEFAULTS.timeout) };

  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    options.signal?.throwIfAborted();
    const running = startAttempt({ ...claimed, attempt }, registry, logger, (definition, running) => (definition.rateLimit ? { rateLimit: inlineRateLimit(definition.rateLimit.key, running.signal, run) } : undefined));
    const stop = () => running.interrupt();
    options.signal?.addEventListener('abort', stop, { once: true });
    const outcome = await running.outcome.finally(() => options.signal?.removeEventListener('abort', stop));
    // Inline, nobody else can take the job: a lost lease cannot happen, an interruption is our signal.
    if (outcome.kind === 'interrupted' || outcome.kind === 'lease-lost') throw options.signal?.reason ?? new Error('inline run interrupted');
    if (outcome.kind === 'completed' || outcome.kind === 'deferred') {
      run.status = outcome.kind;
      if (outcome.kind === 'deferred') run.deferral = { delayMs: outcome.delayMs, reason: outcome.reason };
      // A deferral is not an attempt: the handler ran, but a worker counts it as waiting.
      run.attempts = outcome.kind === 'deferred' ? attempt - 1 : attempt;
      run.history.push({ attempt, outcome: outcome.kind });
      return run;
    }
    run.attempts = attempt;
    run.error = outcome.error;
    run.permanent = outcome.permanent;
    run.history.push({ attempt, outcome: 'failed', error: outcome.error });
    if (outcome.permanent || attempt === maxAttempts) break;
    const delayMs = backoffDelayMs(backoff, attempt);
    run.retryDelaysMs.push(delayMs);
    if (options.waitBackoff) await sleep(delayMs, options.signal);
  }
  run.status = 'failed';
  return run;
}

/** `ctx.rateLimit` without a database: tokens are always there, pauses are recorded. */
function inlineRateLimit(key: string, signal: AbortSignal, run: InlineRun): JobRateLimit {
  return {
    key,
    async pauseFor(delay: Duration) {
      run.rateLimitPauses.push(parseDuration(delay));
    },
    async acquire() {
      signal.throwIfAborted();
    },
  };
}
