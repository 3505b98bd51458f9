import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { withDatabaseRetry } from '../db/retry.js';
import type { JobDefinition } from '../job.js';
import { chunkRows, insertJobRows } from './insert.js';
import { newJobRow, rowTemplate, validatePayload, type DispatchOptions, type NewJobRow } from './rows.js';

export interface DispatchOneOptions extends DispatchOptions {
  /** Enqueue inside the caller's transaction: the job exists only if the caller commits. */
  transaction?: Knex.Transaction;
}

export interface DispatchManyOptions extends DispatchOneOptions {
  /** Rows per INSERT statement. */
  chunkSize?: number;
  /** Called after each chunk is written: (written so far, total). */
  onProgress?: (written: number, total: number) => void;
}

export interface DispatchedJob {
  id: number;
  uuid: string;
  queue: string;
}

export interface DispatchManyResult {
  dispatched: number;
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
    const row = newJobRow(template, validatePayload(definition, payload));
    const insert = (db: Knex | Knex.Transaction) => insertJobRows(db, this.tables.jobs, [row], template.delayMs);
    const [result] = (await (options.transaction ? insert(options.transaction) : withDatabaseRetry(() => insert(this.knex)))) as [{ insertId: number }];
    return { id: Number(result.insertId), uuid: row.uuid, queue: row.queue };
  }

  /**
   * Validates every payload first (one bad payload rejects the call and writes nothing), then
   * writes all rows in one transaction of multi-row INSERTs.
   */
  async dispatchMany<P, I = P>(job: JobDefinition<P, I> | string, payloads: readonly I[], options: DispatchManyOptions = {}): Promise<DispatchManyResult> {
    const definition = this.resolveJob(job as JobDefinition | string);
    const template = rowTemplate(definition, options);
    const rows: NewJobRow[] = payloads.map((payload, index) => newJobRow(template, validatePayload(definition, payload, index)));
    const chunkSize = options.chunkSize ?? 1000;
    await this.write(options.transaction, async (db) => {
      let written = 0;
      for (const chunk of chunkRows(rows, chunkSize)) {
        await insertJobRows(db, this.tables.jobs, chunk, template.delayMs);
        written += chunk.length;
        options.onProgress?.(written, rows.length);
      }
    });
    return { dispatched: rows.length, queue: template.queue };
  }

  /** In the caller's transaction as is; otherwise in our own, retried whole on a deadlock. */
  private write<T>(transaction: Knex.Transaction | undefined, work: (db: Knex | Knex.Transaction) => Promise<T>): Promise<T> {
    if (transaction) return work(transaction);
    return withDatabaseRetry(() => this.knex.transaction((trx) => work(trx)));
  }
}
