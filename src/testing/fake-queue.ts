import { AssertionError } from 'node:assert';
import { randomUUID } from 'node:crypto';
import type { JobDefinition } from '../job.js';
import type { JobQueue } from '../mailq.js';
import type { BatchJob, BatchOptions, CreatedBatch } from '../batch/batch.js';
import type { DispatchedJob, DispatchManyOptions, DispatchManyResult, DispatchOneOptions } from '../queue/dispatcher.js';
import { newJobRow, rowTemplate, validatePayload, type DispatchOptions } from '../queue/rows.js';
import { uniqueKeyFor } from '../queue/unique.js';
import { runInline, type InlineOptions, type InlineRun } from './inline.js';

/** One job as the fake queue recorded it: what the real dispatch would have written. */
export interface RecordedJob<P = unknown> {
  id: number;
  uuid: string;
  /** The job's name. */
  name: string;
  queue: string;
  /** The payload after the job's schema (defaults filled in), as a worker would receive it. */
  payload: P;
  delayMs: number;
  priority: number;
  tries: number | null;
  batchId: string | null;
  uniqueKey: string | null;
}

type JobRef<P> = JobDefinition<P, any> | string; // eslint-disable-line @typescript-eslint/no-explicit-any
type Predicate<P> = (payload: P, job: RecordedJob<P>) => boolean;

/**
 * A stand-in for the queue in an app's tests (Laravel's `Queue::fake()`): it validates each dispatch
 * as the real one does (schema, options, unique keys) and records it instead of writing a row.
 * Give it to code that takes a `JobQueue` (what `createMailq` returns satisfies it too).
 *
 * @example
 * const queue = fakeQueue();
 * await signUp(queue, { email: 'ana@example.com' });
 * queue.assertDispatched(sendWelcome, (payload) => payload.email === 'ana@example.com');
 * queue.assertNotDispatched(chargeCard);
 */
export function fakeQueue(): FakeQueue {
  return new FakeQueue();
}

export class FakeQueue implements JobQueue {
  readonly #jobs: RecordedJob[] = [];
  readonly #jobDefinitions = new Map<string, JobDefinition>();
  readonly #batches: CreatedBatch[] = [];
  /** Recorded jobs before this index have been run by runAll. */
  #ran = 0;

  /** Every recorded job, in dispatch order. */
  get jobs(): readonly RecordedJob[] {
    return this.#jobs;
  }

  /** Every batch created, in order. */
  get batches(): readonly CreatedBatch[] {
    return this.#batches;
  }

  async dispatch<P, I = P>(job: JobDefinition<P, I> | string, payload: I, options: DispatchOneOptions = {}): Promise<DispatchedJob> {
    const recorded = this.record(job as JobDefinition | string, [payload], options);
    const first = recorded[0]!;
    return { id: first.id, uuid: first.uuid, queue: first.queue, skipped: first.skipped };
  }

  async dispatchMany<P, I = P>(job: JobDefinition<P, I> | string, payloads: readonly I[], options: DispatchManyOptions = {}): Promise<DispatchManyResult> {
    const recorded = this.record(job as JobDefinition | string, payloads, options);
    options.onProgress?.(recorded.length, payloads.length);
    const skipped = recorded.filter((entry) => entry.skipped).length;
    return { dispatched: recorded.length - skipped, skipped, queue: recorded[0]?.queue ?? rowTemplate(job as JobDefinition | string, options).queue };
  }

  batch<P>(job: JobDefinition<P> | string, payloads: readonly P[], options?: BatchOptions): Promise<CreatedBatch>;
  batch(jobs: readonly BatchJob[], options?: BatchOptions): Promise<CreatedBatch>;
  async batch(first: JobDefinition | string | readonly BatchJob[], second?: readonly unknown[] | BatchOptions, third?: BatchOptions): Promise<CreatedBatch> {
    const jobs: BatchJob[] = Array.isArray(first) ? [...(first as readonly BatchJob[])] : (second as readonly unknown[]).map((payload) => ({ job: first as JobDefinition | string, payload }));
    const options = (Array.isArray(first) ? second : third) as BatchOptions | undefined;
    const id = randomUUID();
    const { name = '', then: _then, catch: _catch, finally: _finally, transaction: _transaction, chunkSize: _chunkSize, onProgress: _onProgress, ...shared } = options ?? {};
    let total = 0;
    let skipped = 0;
    for (const entry of jobs) {
      const [recorded] = this.record(entry.job, [entry.payload], { ...shared, ...entry.options, batchId: id });
      if (recorded!.skipped) skipped++;
      else total++;
    }
    const created = { id, name, total, skipped };
    this.#batches.push(created);
    return created;
  }

  /** The recorded jobs of this type (matching `predicate`, if given). */
  dispatched<P>(job: JobRef<P>, predicate?: Predicate<P>): Array<RecordedJob<P>> {
    const name = nameOf(job);
    return (this.#jobs as Array<RecordedJob<P>>).filter((entry) => entry.name === name && (!predicate || predicate(entry.payload, entry)));
  }

  /** How many jobs were recorded, of one type or of all. */
  count(job?: JobRef<unknown>): number {
    return job === undefined ? this.#jobs.length : this.dispatched(job).length;
  }

  /**
   * Fails unless a job of this type was dispatched (one matching `predicate`, if given).
   *
   * @example
   * queue.assertDispatched(sendWelcome, ({ userId }) => userId === 42);
   */
  assertDispatched<P>(job: JobRef<P>, predicate?: Predicate<P>): void {
    if (this.dispatched(job, predicate).length === 0) this.fail(`expected a '${nameOf(job)}' job${predicate ? ' matching the predicate' : ''} to be dispatched`);
  }

  /**
   * Fails unless exactly `times` jobs of this type (matching `predicate`) were dispatched.
   *
   * @example
   * queue.assertDispatchedTimes(syncMailbox, 3);
   */
  assertDispatchedTimes<P>(job: JobRef<P>, times: number, predicate?: Predicate<P>): void {
    const found = this.dispatched(job, predicate).length;
    if (found !== times) this.fail(`expected ${times} '${nameOf(job)}' job${times === 1 ? '' : 's'}${predicate ? ' matching the predicate' : ''} to be dispatched, found ${found}`);
  }

  /**
   * Fails if a job of this type (matching `predicate`) was dispatched.
   *
   * @example
   * queue.assertNotDispatched(chargeCard);
   */
  assertNotDispatched<P>(job: JobRef<P>, predicate?: Predicate<P>): void {
    const found = this.dispatched(job, predicate).length;
    if (found > 0) this.fail(`expected no '${nameOf(job)}' job${predicate ? ' matching the predicate' : ''} to be dispatched, found ${found}`);
  }

  /**
   * Fails if anything was dispatched.
   *
   * @example
   * queue.assertNothingDispatched();
   */
  assertNothingDispatched(): void {
    if (this.#jobs.length > 0) this.fail(`expected nothing to be dispatched, found ${this.#jobs.length}`);
  }

  /**
   * Runs the recorded jobs not run yet inline (as `runInline` does), oldest first; jobs they
   * dispatch onto this fake run too, until none is left. They stay recorded for assertions. A job
   * dispatched by name runs only if its definition was dispatched once as a definition.
   *
   * @example
   * await signUp(queue, { email: 'ana@example.com' });
   * const runs = await queue.runAll();
   */
  async runAll(options: InlineOptions = {}): Promise<InlineRun[]> {
    const runs: InlineRun[] = [];
    while (this.#ran < this.#jobs.length) {
      const next = this.#jobs[this.#ran++]!;
      const definition = this.#jobDefinitions.get(next.name);
      if (!definition) throw new Error(`cannot run '${next.name}': it was dispatched by name and its definition is unknown to the fake queue`);
      runs.push(await runInline(definition, next.payload, { queue: next.queue, batchId: next.batchId ?? undefined, ...options }));
    }
    return runs;
  }

  /** Forgets every recorded job and batch. */
  clear(): void {
    this.#jobs.length = 0;
    this.#batches.length = 0;
    this.#ran = 0;
  }

  private record(job: JobDefinition | string, payloads: readonly unknown[], options: DispatchOptions): Array<RecordedJob & { skipped: boolean }> {
    if (typeof job !== 'string') this.#jobDefinitions.set(job.name, job);
    const template = rowTemplate(job, options);
    // Validate everything first, as dispatchMany does: a bad payload records nothing.
    const valid = payloads.map((payload, index) => validatePayload(job, payload, payloads.length > 1 ? index : undefined));
    return valid.map((payload) => {
      const row = newJobRow(template, payload, uniqueKeyFor(job, payload, options.unique));
      const holder = row.unique_key === null ? undefined : this.#jobs.find((entry) => entry.uniqueKey === row.unique_key);
      if (holder) return { ...holder, skipped: true };
      const recorded: RecordedJob = {
        id: this.#jobs.length + 1,
        uuid: row.uuid,
        name: row.name,
        queue: row.queue,
        payload: JSON.parse(row.payload) as unknown,
        delayMs: template.delayMs,
        priority: row.priority,
        tries: row.max_attempts,
        batchId: row.batch_id,
        uniqueKey: row.unique_key,
      };
      this.#jobs.push(recorded);
      return { ...recorded, skipped: false };
    });
  }

  private fail(message: string): never {
    const seen = this.#jobs.length === 0 ? 'nothing was dispatched' : `dispatched: ${this.#jobs.map((entry) => `${entry.name} ${JSON.stringify(entry.payload)}`).join('; ')}`;
    throw new AssertionError({ message: `${message} (${seen})` });
  }
}

function nameOf(job: JobRef<unknown>): string {
  return typeof job === 'string' ? job : job.name;
}
