import type { Logger } from 'pino';
import type { ZodType } from 'zod';
import type { BackoffOption } from './backoff.js';
import type { Duration } from './duration.js';
import { ConfigError } from './errors.js';
import { nameProblem, quoteValue } from './names.js';
import { resolveRateLimit, type JobRateLimit, type RateLimitOption } from './ratelimit/rate-limit.js';

/** What a handler knows about the attempt it is running. */
export interface JobContext {
  /** Aborted when the attempt times out or the worker stops: pass it to fetch and friends. */
  signal: AbortSignal;
  job: {
    id: number;
    uuid: string;
    name: string;
    queue: string;
    /** 1 on the first run. */
    attempt: number;
    maxAttempts: number;
    batchId: string | null;
  };
  logger: Logger;
  /** Put the job back for `delay` without counting this attempt (e.g. an upstream 429). */
  defer(delay: Duration, reason?: string): never;
  /** Set for job types with a `rateLimit`: pause the key for everyone (a 429), or take more tokens. */
  rateLimit?: JobRateLimit;
}

/**
 * `Payload` is what the handler receives (the schema's output); `Input` is what dispatch accepts
 * (the schema's input, so fields with a `.default()` may be left out).
 */
export interface JobDefinition<Payload = unknown, Input = Payload> {
  readonly kind: 'mailq.job';
  readonly name: string;
  readonly schema?: ZodType<Payload, Input>;
  /** Attempts in all, including the first (Laravel's `$tries`). */
  readonly tries?: number;
  readonly backoff?: BackoffOption;
  readonly timeout?: Duration;
  readonly queue?: string;
  readonly priority?: number;
  /**
   * At most `limit` starts per `per` for every job sharing `key`, across all workers and hosts.
   * Workers take tokens before they claim, so waiting never spends an attempt.
   */
  readonly rateLimit?: RateLimitOption;
  /**
   * A key per payload: while a job of this type with the same key is pending or running, dispatching
   * another is skipped (reported, not an error). The key frees when the job completes or fails.
   */
  unique?(payload: Payload): string;
  /**
   * Checks that what this job needs in order to run is configured here (an API token, a URL):
   * throw, with a message that says what to set, when it is missing. A worker whose queues
   * include the job's queue runs it before it claims anything, and `mailq work` before it starts
   * worker processes: the worker refuses to start (one line, exit 2) instead of failing every job.
   * Keep it synchronous and local: read settings, do not call the network.
   */
  preflight?(): void;
  handle(payload: Payload, context: JobContext): Promise<unknown> | unknown;
}

export type JobOptions<Payload, Input = Payload> = Omit<JobDefinition<Payload, Input>, 'kind'>;

/**
 * Declares a job type. Options set here override a worker's defaults (`--tries`, `--timeout`, …).
 *
 * @example
 * const sendEmail = defineJob({
 *   name: 'send-email',
 *   schema: z.object({ userId: z.number() }),
 *   tries: 3,
 *   backoff: [60, 120, 300],
 *   timeout: '30s',
 *   rateLimit: { key: 'mailer', limit: 100, per: '1m' },
 *   unique: ({ userId }) => String(userId),
 *   async handle({ userId }, { signal }) { await mailer.send(userId, { signal }); },
 * });
 */
export function defineJob<Payload, Input = Payload>(options: JobOptions<Payload, Input>): JobDefinition<Payload, Input> {
  if (!options.name || typeof options.name !== 'string') throw new TypeError('defineJob: a job needs a name');
  const badName = nameProblem(options.name);
  if (badName) throw new TypeError(`defineJob: name ${quoteValue(options.name)} ${badName}`);
  const badQueue = options.queue === undefined ? undefined : nameProblem(options.queue);
  if (badQueue) throw new TypeError(`defineJob(${options.name}): queue ${quoteValue(options.queue)} ${badQueue}`);
  if (options.preflight !== undefined && typeof options.preflight !== 'function') throw new TypeError(`defineJob(${options.name}): preflight must be a function`);
  if (typeof options.handle !== 'function') throw new TypeError(`defineJob(${options.name}): handle must be a function`);
  if (options.tries !== undefined && (!Number.isInteger(options.tries) || options.tries < 1)) {
    throw new TypeError(`defineJob(${options.name}): tries must be an integer ≥ 1`);
  }
  if (options.rateLimit !== undefined) resolveRateLimit(options.rateLimit, `defineJob(${options.name}).rateLimit`);
  if (options.unique !== undefined && typeof options.unique !== 'function') throw new TypeError(`defineJob(${options.name}): unique must be a function of the payload`);
  return Object.freeze({ ...options, kind: 'mailq.job' as const });
}

export function isJobDefinition(value: unknown): value is JobDefinition {
  return typeof value === 'object' && value !== null && (value as JobDefinition).kind === 'mailq.job';
}

/** Collects job definitions from a loaded module: any export that is one, or an array of them. */
export function jobsFromModule(module: Record<string, unknown>): JobDefinition[] {
  const found: JobDefinition[] = [];
  for (const value of Object.values(module)) {
    if (isJobDefinition(value)) found.push(value);
    else if (Array.isArray(value)) found.push(...value.filter(isJobDefinition));
  }
  return found;
}

export class JobRegistry {
  readonly #jobs = new Map<string, JobDefinition>();

  constructor(jobs: Iterable<JobDefinition> = []) {
    for (const job of jobs) this.add(job);
  }

  add(job: JobDefinition): void {
    const existing = this.#jobs.get(job.name);
    if (existing && existing !== job) throw new TypeError(`two different jobs are named '${job.name}'`);
    this.#jobs.set(job.name, job);
  }

  get(name: string): JobDefinition | undefined {
    return this.#jobs.get(name);
  }

  names(): string[] {
    return [...this.#jobs.keys()];
  }

  /**
   * Runs the `preflight` of every job whose queue is one of `queues`: what a worker on those queues
   * will run. The first that fails is thrown as a ConfigError naming the job.
   *
   * @example
   * mq.registry.preflight(['mailbox-sync']); // throws "job 'sync-taxpayer-mailbox' cannot run here: TWS is not configured: …"
   */
  preflight(queues: readonly string[]): void {
    for (const job of this.#jobs.values()) {
      if (!job.preflight || !queues.includes(job.queue ?? 'default')) continue;
      try {
        job.preflight();
      } catch (error) {
        throw new ConfigError(`job '${job.name}' cannot run here: ${(error as Error).message}`);
      }
    }
  }
}
