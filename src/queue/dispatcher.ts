import type { Knex } from 'knex';
import { formatBytes } from '../bytes.js';
import type { TableNames } from '../db/tables.js';
import { asOperation, ER, errnoOf, inOperation } from '../db/errors.js';
import { withDatabaseRetry } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';
import { InvalidJobError } from '../errors.js';
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
    return asOperation(`dispatch of '${row.name}' to queue '${row.queue}'`, async () => {
      try {
        return await this.insertOne(row, template.delayMs, options.transaction);
      } catch (error) {
        throw payloadTooLarge(error, [row]) ?? error;
      }
    });
  }

  private async insertOne(row: NewJobRow, delayMs: number, transaction: Knex.Transaction | undefined): Promise<DispatchedJob> {
    if (row.unique_key !== null) {
      const key = row.unique_key;
      const { holder, skipped } = await this.write(transaction, async (trx) => {
        const outcome = await insertJobRowsUnique(trx, this.tables.jobs, [row], delayMs);
        return { holder: (await uniqueKeyHolders(trx, this.tables.jobs, [key], outcome.ours)).get(key), skipped: outcome.skipped > 0 };
      });
      return { id: holder?.id ?? 0, uuid: holder?.uuid ?? row.uuid, queue: row.queue, skipped };
    }
    const insert = (db: Knex | Knex.Transaction) => insertJobRows(db, this.tables.jobs, [row], delayMs);
    const [result] = (await (transaction ? insert(transaction) : withDatabaseRetry(() => insert(this.knex)))) as [{ insertId: number }];
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
    return asOperation(`dispatchMany of ${valid.length.toLocaleString('en-US')} '${template.name}' jobs to queue '${template.queue}'`, async () => {
      if (uniqueKeys.every((key) => key === null)) {
        const report = (written: number) => options.onProgress?.(written, valid.length);
        // Rows are built chunk by chunk inside the pipeline, overlapping the database's work; each
        // attempt builds its own, since a generator made once would be spent by the attempt that failed.
        const written = await this.write(options.transaction, (trx) => this.insertPipelined(trx, chunkRows(newJobRows(template, valid), options.chunkSize ?? 1000), template.delayMs, report, 0));
        return { dispatched: written, skipped: 0, queue: template.queue };
      }
      const rows = valid.map((payload, index) => newJobRow(template, payload, uniqueKeys[index]));
      const { inserted, skipped } = await this.write(options.transaction, (trx) => this.insertRows(trx, rows, template.delayMs, { ...options, indexFrom: 0 }));
      return { dispatched: inserted, skipped, queue: template.queue };
    });
  }

  /**
   * Writes rows in chunks of multi-row INSERTs inside `trx`; rows with a unique key whose key is
   * taken are skipped. Batches use it to add their jobs in the same transaction as the batch row.
   */
  async insertRows(trx: Knex.Transaction, rows: NewJobRow[], delayMs: number, options: InsertRowsOptions = {}): Promise<{ inserted: number; skipped: number }> {
    const chunks = [...chunkRows(rows, options.chunkSize ?? 1000)];
    const report = (written: number) => options.onProgress?.(written, rows.length);
    if (!rows.some((row) => row.unique_key !== null)) return { inserted: await this.insertPipelined(trx, chunks, delayMs, report, options.indexFrom), skipped: 0 };
    let written = 0;
    let skipped = 0;
    for (const chunk of chunks) {
      const first = options.indexFrom === undefined ? undefined : options.indexFrom + written;
      skipped += (await insertingChunk(chunk, first, () => insertJobRowsUnique(trx, this.tables.jobs, chunk, delayMs))).skipped;
      report((written += chunk.length));
    }
    return { inserted: rows.length - skipped, skipped };
  }

  /**
   * Builds the next INSERT while the database runs the previous one: the statements still go one
   * after another on the transaction's connection, but escaping thousands of values no longer
   * adds to the wall time. Returns the rows the database says it inserted.
   */
  private async insertPipelined(trx: Knex.Transaction, chunks: Iterable<NewJobRow[]>, delayMs: number, report: (written: number) => void, indexFrom: number | undefined): Promise<number> {
    let running: Promise<number> | undefined;
    let written = 0;
    let built = 0;
    try {
      for (const chunk of chunks) {
        const statement = formattedInsertJobRows(this.tables.jobs, chunk, delayMs);
        if (running) report((written += await running));
        const first = indexFrom === undefined ? undefined : indexFrom + built;
        running = insertingChunk(chunk, first, () => trx.raw(statement)).then(([result]: [{ affectedRows: number }]) => result.affectedRows);
        built += chunk.length;
      }
      if (running) report((written += await running));
      return written;
    } catch (error) {
      // Building the next chunk threw while the previous INSERT was in flight: wait for that INSERT,
      // so the transaction's rollback goes out after it and its failure, if the connection dies
      // meanwhile, is not left unhandled (which ends the process). (Payloads JSON cannot encode are
      // refused before anything is built; what is left is a bug, or memory running out.)
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

export interface InsertRowsOptions extends Pick<DispatchManyOptions, 'chunkSize' | 'onProgress'> {
  /**
   * The index among the call's payloads of `rows[0]`, when rows are the call's payloads in their
   * order: a failure then names the indexes of its chunk (and of a payload too large for the server).
   */
  indexFrom?: number;
}

/**
 * One INSERT of `chunk`, the payloads from index `first` (when known). A failure names the chunk;
 * a row the server refuses as bigger than max_allowed_packet is a bad payload, named by its index.
 */
async function insertingChunk<T>(chunk: NewJobRow[], first: number | undefined, insert: () => Promise<T>): Promise<T> {
  try {
    return await insert();
  } catch (error) {
    const rows = `chunk of ${chunk.length.toLocaleString('en-US')} row${chunk.length === 1 ? '' : 's'}`;
    throw payloadTooLarge(error, chunk, first) ?? inOperation(first === undefined ? rows : `${rows} from index ${first}`, error);
  }
}

/**
 * The server refused an INSERT of one row as bigger than its max_allowed_packet: that row's payload
 * can never be stored, the caller's mistake like any other bad payload (and nothing was written:
 * the server closes the connection, ending the transaction). A row that large is alone in its
 * INSERT (chunkRows); a refused INSERT of several rows is left to explainDatabaseError.
 */
function payloadTooLarge(error: unknown, rows: NewJobRow[], index?: number): InvalidJobError | undefined {
  const [row] = rows;
  if (errnoOf(error) !== ER.PACKET_TOO_LARGE || rows.length !== 1 || !row) return undefined;
  const where = index === undefined ? '' : ` at index ${index}`;
  return new InvalidJobError(
    `invalid payload for job '${row.name}'${where}: too large: its row is bigger than the server's max_allowed_packet (${formatBytes(Buffer.byteLength(row.payload))} of JSON): store large data elsewhere and pass its id`,
    { cause: error },
  );
}
