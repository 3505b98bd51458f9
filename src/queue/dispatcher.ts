import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { withDatabaseRetry } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';
import type { JobDefinition } from '../job.js';
import { chunkRows, formattedInsertJobRows, insertJobRows, insertJobRowsUnique, uniqueKeyHolders } from './insert.js';
import { newJobRow, newJobRows, rowTemplate, validatePayload, type DispatchOptions, type NewJobRow } from './rows.js';
import { uniqueKeyFor } from './unique.js';

export interface DispatchOneOptions extends DispatchOptions {
  /** Enqueue inside the caller's transaction: the job exists only if the caller commits. */
  transaction?: Knex.Transaction;
}

export interface DispatchManyOptions extends DispatchOneOptions {
  /** Rows per INSERT statement. */
  chunkSize?: number;
  /** Called after each chunk is written: (written so far, total). A retried attempt counts again from 0. */
  onProgress?: (written: number, total: number) => void;
}

export interface DispatchedJob {
  id: number;
  uuid: string;
  queue: string;
  /**
   * True when a job with the same unique key was pending or running: nothing was inserted, and
   * `id`/`uuid` are that job's.
   */
  skipped: boolean;
}

export interface DispatchManyResult {
  dispatched: number;
  /** Payloads not inserted because their unique key was taken (by a pending/running job or an earlier payload). */
  skipped: number;
  queue: string;
}

export class Dispatcher {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
    private readonly resolveJob: (job: JobDefinition | string) => JobDefinition | string,
  ) {}

  async dispatch<P, I = P>(job: JobDefinition<P, I> | string, payload: I, options: DispatchOneOptions = {}): Promise<DispatchedJob> {
    const definition = this.resolveJob(job as JobDefinition | string);
    const template = rowTemplate(definition, options);
    const valid = validatePayload(definition, payload);
    const row = newJobRow(template, valid, uniqueKeyFor(definition, valid, options.unique));
    if (row.unique_key !== null) {
      const key = row.unique_key;
      const { holder, skipped } = await this.write(options.transaction, async (trx) => {
        const outcome = await insertJobRowsUnique(trx, this.tables.jobs, [row], template.delayMs);
        return { holder: (await uniqueKeyHolders(trx, this.tables.jobs, [key], outcome.ours)).get(key), skipped: outcome.skipped > 0 };
      });
      return { id: holder?.id ?? 0, uuid: holder?.uuid ?? row.uuid, queue: row.queue, skipped };
    }
    const insert = (db: Knex | Knex.Transaction) => insertJobRows(db, this.tables.jobs, [row], template.delayMs);
    const [result] = (await (options.transaction ? insert(options.transaction) : withDatabaseRetry(() => insert(this.knex)))) as [{ insertId: number }];
    return { id: Number(result.insertId), uuid: row.uuid, queue: row.queue, skipped: false };
  }

  /**
   * Validates every payload first (one bad payload rejects the call and writes nothing), then
   * writes all rows in one transaction of multi-row INSERTs.
   */
  async dispatchMany<P, I = P>(job: JobDefinition<P, I> | string, payloads: readonly I[], options: DispatchManyOptions = {}): Promise<DispatchManyResult> {
    const definition = this.resolveJob(job as JobDefinition | string);
    const template = rowTemplate(definition, options);
    const valid = payloads.map((payload, index) => validatePayload(definition, payload, index));
    const uniqueKeys = valid.map((payload) => uniqueKeyFor(definition, payload, options.unique));
    if (uniqueKeys.every((key) => key === null)) {
      const report = (written: number) => options.onProgress?.(written, valid.length);
      // Rows are built chunk by chunk inside the pipeline, overlapping the database's work; each
      // attempt builds its own, since a generator made once would be spent by the attempt that failed.
      const written = await this.write(options.transaction, (trx) => this.insertPipelined(trx, chunkRows(newJobRows(template, valid), options.chunkSize ?? 1000), template.delayMs, report));
      return { dispatched: written, skipped: 0, queue: template.queue };
    }
    const rows = valid.map((payload, index) => newJobRow(template, payload, uniqueKeys[index]));
    const { inserted, skipped } = await this.write(options.transaction, (trx) => this.insertRows(trx, rows, template.delayMs, options));
    return { dispatched: inserted, skipped, queue: template.queue };
  }

  /**
   * Writes rows in chunks of multi-row INSERTs inside `trx`; rows with a unique key whose key is
   * taken are skipped. Batches use it to add their jobs in the same transaction as the batch row.
   */
  async insertRows(trx: Knex.Transaction, rows: NewJobRow[], delayMs: number, options: Pick<DispatchManyOptions, 'chunkSize' | 'onProgress'> = {}): Promise<{ inserted: number; skipped: number }> {
    const chunks = [...chunkRows(rows, options.chunkSize ?? 1000)];
    const report = (written: number) => options.onProgress?.(written, rows.length);
    if (!rows.some((row) => row.unique_key !== null)) return { inserted: await this.insertPipelined(trx, chunks, delayMs, report), skipped: 0 };
    let written = 0;
    let skipped = 0;
    for (const chunk of chunks) {
      skipped += (await insertJobRowsUnique(trx, this.tables.jobs, chunk, delayMs)).skipped;
      report((written += chunk.length));
    }
    return { inserted: rows.length - skipped, skipped };
  }

  /**
   * Builds the next INSERT while the database runs the previous one: the statements still go one
   * after another on the transaction's connection, but escaping thousands of values no longer
   * adds to the wall time. Returns the rows the database says it inserted.
   */
  private async insertPipelined(trx: Knex.Transaction, chunks: Iterable<NewJobRow[]>, delayMs: number, report: (written: number) => void): Promise<number> {
    let running: Promise<number> | undefined;
    let written = 0;
    try {
      for (const chunk of chunks) {
        const statement = formattedInsertJobRows(this.tables.jobs, chunk, delayMs);
        if (running) report((written += await running));
        running = trx.raw(statement).then(([result]: [{ affectedRows: number }]) => result.affectedRows);
      }
      if (running) report((written += await running));
      return written;
    } catch (error) {
      // Building the next chunk threw (a payload JSON cannot encode) while the previous INSERT was
      // in flight: wait for that INSERT, so the transaction's rollback goes out after it and its
      // failure, if the connection dies meanwhile, is not left unhandled (which ends the process).
      await running?.catch(() => undefined);
      throw error;
    }
  }

  /**
   * In the caller's transaction as is; otherwise in our own, retried whole on a deadlock or lock
   * wait. `work` then runs once per attempt, so it must build everything it writes afresh. Batches
   * write through it too: dispatches share the connection an app gave mailq for them.
   */
  write<T>(transaction: Knex.Transaction | undefined, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    if (transaction) return work(transaction);
    return withDatabaseRetry(() => inTransaction(this.knex, work));
  }
}
