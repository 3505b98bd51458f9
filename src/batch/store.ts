import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { asOperation } from '../db/errors.js';
import { withDatabaseRetry } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';
import { InvalidJobError, MailqError } from '../errors.js';
import type { JobDefinition } from '../job.js';
import type { Dispatcher } from '../queue/dispatcher.js';
import { newJobRow, rowTemplate, validatePayload, type DispatchOptions, type NewJobRow } from '../queue/rows.js';
import { uniqueKeyFor } from '../queue/unique.js';
import { toBatch, withSummary, type Batch, type BatchCallback, type BatchJob, type BatchOptions, type CreatedBatch, type StoredCallbacks } from './batch.js';
import { noteBatchCreated } from './capture.js';
import { cancelWaitingJobs, execOn, finishBatches } from './counters.js';

export interface ListBatchesOptions {
  /** Newest first; default 50. */
  limit?: number;
  /** Only batches still running. */
  running?: boolean;
}

export interface CancelledBatch {
  batch: Batch;
  /** Jobs that were waiting in the queue and were removed (running jobs finish their attempt). */
  removed: number;
  /** The batch had finished (or been cancelled and finished) before: nothing was done. */
  alreadyFinished: boolean;
}

const CALLBACK_NAMES = ['then', 'catch', 'finally'] as const;

/**
 * Batches: create (the batch row and its jobs in one transaction), read, list, cancel.
 *
 * @example
 * const { id } = await mq.batch(syncMailbox, payloads, { name: 'nightly', finally: { job: 'report' } });
 * const batch = await mq.batches.find(id);      // { total, pending, failed, progress, state, … }
 * const running = await mq.batches.list({ running: true });
 * await mq.batches.cancel(id);                  // waiting jobs removed, running ones finish
 */
export class BatchStore {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
    private readonly dispatcher: Dispatcher,
    private readonly resolveJob: (job: JobDefinition | string) => JobDefinition | string,
    /** Told which queues a new batch put jobs on, and in which caller transaction (Mailq wakes its idle workers there). */
    private readonly onJobsQueued: (queues: Iterable<string>, transaction?: Knex.Transaction) => void = () => undefined,
  ) {}

  /**
   * Validates every payload and callback first (nothing is written if one is bad), then inserts the
   * batch row and all its jobs in one transaction, so no worker sees a job before its batch counts it.
   */
  async create(entries: readonly BatchJob[], options: BatchOptions = {}): Promise<CreatedBatch> {
    const id = randomUUID();
    const name = options.name ?? '';
    if (name.length > 191) throw new InvalidJobError('batch name must be at most 191 characters');
    const groups = this.buildRows(id, entries, options);
    const callbacks = this.storeCallbacks(name, options);
    const write = async (trx: Knex.Transaction) => {
      // The database's UTC clock whatever the session's time zone: this may be an app's connection.
      await trx(this.tables.jobBatches).insert({ id, name, failed_job_ids: '[]', callbacks: callbacks ? JSON.stringify(callbacks) : null, created_at: trx.raw('UTC_TIMESTAMP(3)') });
      let written = 0;
      let skippedRows = 0;
      for (const [delayMs, rows] of groups) {
        const before = written;
        const result = await this.dispatcher.insertRows(trx, rows, delayMs, {
          // Rows are grouped by delay: only a single group keeps the entries' order, and so their indexes.
          indexFrom: groups.size === 1 ? 0 : undefined,
          chunkSize: options.chunkSize,
          onProgress: options.onProgress && ((done) => options.onProgress!(before + done, entries.length)),
        });
        written += rows.length;
        skippedRows += result.skipped;
      }
      const dispatched = entries.length - skippedRows;
      await trx(this.tables.jobBatches).where({ id }).update({ total_jobs: dispatched, pending_jobs: dispatched });
      // An empty batch (or one whose every job was a duplicate) is finished at once.
      if (dispatched === 0) await finishBatches(execOn(trx), this.tables, [id]);
      return { inserted: dispatched, skipped: skippedRows };
    };
    const operation = `batch${name ? ` '${name}'` : ''} of ${entries.length.toLocaleString('en-US')} jobs`;
    const { inserted, skipped } = await asOperation(operation, () => this.dispatcher.write(options.transaction, write));
    noteBatchCreated(id);
    if (inserted > 0) this.onJobsQueued(new Set([...groups.values()].flat().map((row) => row.queue)), options.transaction);
    return { id, name, total: inserted, skipped };
  }

  async find(id: string): Promise<Batch> {
    const row = await this.knex(this.tables.jobBatches).where({ id }).first();
    if (!row) throw new MailqError(`no batch with id ${id}`);
    return toBatch(row);
  }

  async list(options: ListBatchesOptions = {}): Promise<Batch[]> {
    const query = this.knex(this.tables.jobBatches).select('*').orderBy('created_at', 'desc').orderBy('id').limit(options.limit ?? 50);
    if (options.running) query.whereNull('finished_at');
    return (await query).map(toBatch);
  }

  /**
   * Cancels a batch: its jobs waiting in the queue (due, delayed or in backoff) are removed, and
   * the batch counts them as done; jobs running now finish their attempt (one that fails is not
   * retried: its worker removes it and counts it done the same way). When nothing is left the
   * batch finishes: `finally` runs, `catch` too if a job had failed, `then` never.
   */
  async cancel(id: string): Promise<CancelledBatch> {
    const current = await this.find(id);
    if (current.finishedAt) return { batch: current, removed: 0, alreadyFinished: true };
    const removed = await withDatabaseRetry(() =>
      inTransaction(
        this.knex,
        // Read committed: the DELETE locks only the rows it removes, not the batch's running jobs.
        (trx) => cancelWaitingJobs(trx, this.tables, id),
        { isolationLevel: 'read committed' },
      ),
    );
    return { batch: await this.find(id), removed, alreadyFinished: false };
  }

  private buildRows(batchId: string, entries: readonly BatchJob[], options: BatchOptions): Map<number, NewJobRow[]> {
    const shared: DispatchOptions = { queue: options.queue, delay: options.delay, priority: options.priority, tries: options.tries, backoff: options.backoff, timeout: options.timeout, unique: options.unique };
    const groups = new Map<number, NewJobRow[]>();
    entries.forEach((entry, index) => {
      const definition = this.resolveJob(entry.job);
      const dispatch: DispatchOptions = { ...stripUndefined(shared), ...stripUndefined(entry.options ?? {}), batchId };
      const template = rowTemplate(definition, dispatch);
      const payload = validatePayload(definition, entry.payload, index);
      const rows = groups.get(template.delayMs) ?? [];
      rows.push(newJobRow(template, payload, uniqueKeyFor(definition, payload, dispatch.unique)));
      groups.set(template.delayMs, rows);
    });
    return groups;
  }

  /** Resolves each callback's job now (queue, tries, …) and checks its payload, with a stand-in summary. */
  private storeCallbacks(name: string, options: BatchOptions): StoredCallbacks | undefined {
    const stored: StoredCallbacks = {};
    for (const which of CALLBACK_NAMES) {
      const callback: BatchCallback | undefined = options[which];
      if (!callback) continue;
      const definition = this.resolveJob(callback.job);
      const template = rowTemplate(definition, callback.options ?? {});
      const standIn = { id: '00000000-0000-0000-0000-000000000000', name, total: 0, failed: 0, failedJobIds: [], cancelled: false };
      try {
        validatePayload(definition, withSummary(callback.payload, standIn));
      } catch (error) {
        throw new InvalidJobError(`batch ${which} callback: ${(error as Error).message}`);
      }
      stored[which] = { template: { ...template, batchId: null, delayMs: 0 }, payload: callback.payload ?? null };
    }
    return Object.keys(stored).length > 0 ? stored : undefined;
  }
}

function stripUndefined<T extends object>(values: T): Partial<T> {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as Partial<T>;
}

/**
 * Polls a batch until it finishes (or `signal` aborts), calling `onChange` whenever its counts
 * move. Resolves with the last state read.
 *
 * @example
 * const done = await followBatch(mq.batches, id, { onChange: (b) => console.log(`${b.processed}/${b.total}`) });
 */
export async function followBatch(
  batches: Pick<BatchStore, 'find'>,
  id: string,
  options: { intervalMs?: number; signal?: AbortSignal; onChange?: (batch: Batch) => void } = {},
): Promise<Batch> {
  let last = '';
  for (;;) {
    const batch = await batches.find(id);
    const fingerprint = `${batch.pending}/${batch.failed}/${batch.state}`;
    if (fingerprint !== last) options.onChange?.(batch);
    last = fingerprint;
    if (batch.finishedAt || options.signal?.aborted) return batch;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, options.intervalMs ?? 1000);
      options.signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
}
