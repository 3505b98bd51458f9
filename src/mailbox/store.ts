import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { MailboxTables } from './tables.js';
import { withDatabaseRetry } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';
import type { TwsMessage } from './tws.js';
import { placeholders } from '../db/sql.js';

/** A taxpayer as the sync needs it. */
export interface Taxpayer {
  id: number;
  teamId: number | null;
  /** The RUC: the id TWS knows the taxpayer by. */
  taxId: string;
  name: string;
  active: boolean;
  /** Start of the last successful sync (null before the first one). */
  lastSyncedAt: Date | null;
  /** The database clock when the row was read: the watermark a sync that starts now will record. */
  readAt: Date;
}

/** Which taxpayers a sync covers: all active ones, or those of some teams, or some ids. */
export interface TaxpayerFilter {
  taxpayerIds?: readonly number[];
  teamIds?: readonly number[];
}

/** `retrying`: the last attempt failed and another may follow; `failed`: no attempt is left, or none can help. */
export type SyncStatus = 'ok' | 'retrying' | 'failed';

export interface SyncFailureRecord {
  status: Exclude<SyncStatus, 'ok'>;
  code: string;
  message: string;
  durationMs: number;
}

export interface NewTaxpayer {
  taxId: string;
  name?: string;
  teamId?: number | null;
  active?: boolean;
}

export interface FailureReason {
  code: string;
  count: number;
  /** One message of that kind, as an example. */
  example: string;
}

const MESSAGE_COLUMNS = ['taxpayer_id', 'tws_id', 'subject', 'sender', 'category', 'received_at', 'is_read', 'body', 'attachments', 'content_hash'] as const;
const UPDATED_COLUMNS = MESSAGE_COLUMNS.filter((column) => column !== 'taxpayer_id' && column !== 'tws_id');
const MAX_ERROR_LENGTH = 2_000;
const INSERT_CHUNK = 1_000;

/**
 * Every statement the mailbox sync sends about taxpayers and their messages, in one place.
 *
 * @example
 * const store = new MailboxStore(mq.knex, mailboxTables(mq));
 * await store.insertTaxpayers([{ taxId: '20100000001', name: 'ACME S.A.C.', teamId: 7 }]);
 * console.log(await store.statusCounts(), await store.failureReasons());
 */
export class MailboxStore {
  constructor(
    readonly knex: Knex,
    readonly tables: MailboxTables,
  ) {}

  async findTaxpayer(id: number): Promise<Taxpayer | undefined> {
    const [rows] = (await this.knex.raw(
      `SELECT id, team_id, tax_id, name, active, last_synced_at, NOW(3) AS read_at FROM ${quote(this.tables.taxpayers)} WHERE id = ?`,
      [id],
    )) as [Array<Record<string, unknown>>];
    const row = rows[0];
    if (!row) return undefined;
    return {
      id: Number(row.id),
      teamId: row.team_id == null ? null : Number(row.team_id),
      taxId: String(row.tax_id),
      name: String(row.name),
      active: Boolean(row.active),
      lastSyncedAt: (row.last_synced_at as Date | null) ?? null,
      readAt: row.read_at as Date,
    };
  }

  /** Ids of the active taxpayers the filter selects, in id order. */
  async activeTaxpayerIds(filter: TaxpayerFilter = {}): Promise<number[]> {
    const query = this.knex(this.tables.taxpayers).select('id').where('active', true).orderBy('id');
    if (filter.taxpayerIds?.length) query.whereIn('id', [...filter.taxpayerIds]);
    if (filter.teamIds?.length) query.whereIn('team_id', [...filter.teamIds]);
    return (await query).map((row: { id: number | string }) => Number(row.id));
  }

  /** Of these ids, those that exist but are inactive, and those that do not exist at all. */
  async explainMissing(ids: readonly number[]): Promise<{ inactive: number[]; unknown: number[] }> {
    const rows = (await this.knex(this.tables.taxpayers).select('id', 'active').whereIn('id', [...ids])) as Array<{ id: number | string; active: number | boolean }>;
    const known = new Map(rows.map((row) => [Number(row.id), Boolean(row.active)]));
    return { inactive: ids.filter((id) => known.get(id) === false), unknown: ids.filter((id) => !known.has(id)) };
  }

  /**
   * Stores a whole mailbox read and the taxpayer's new watermark in one transaction: one upsert per
   * page, keyed by (taxpayer, TWS id). A message TWS sends again unchanged leaves its row untouched.
   */
  async saveSync(taxpayerId: number, pages: readonly TwsMessage[][], done: { watermark: Date; startedAt: number }): Promise<number> {
    const messages = pages.reduce((sum, page) => sum + page.length, 0);
    await withDatabaseRetry(() =>
      inTransaction(this.knex, async (trx) => {
        for (const page of pages) if (page.length > 0) await this.upsertPage(trx, taxpayerId, page);
        await trx.raw(
          `UPDATE ${quote(this.tables.taxpayers)} SET last_synced_at = ?, last_sync_at = NOW(3), last_sync_status = 'ok',
             last_sync_error_code = NULL, last_sync_error = NULL, last_sync_duration_ms = ?, last_sync_messages = ?
           WHERE id = ?`,
          [done.watermark, Date.now() - done.startedAt, messages, taxpayerId],
        );
      }),
    );
    return messages;
  }

  private upsertPage(trx: Knex.Transaction, taxpayerId: number, page: readonly TwsMessage[]): Promise<unknown> {
    const columns = [...MESSAGE_COLUMNS, 'synced_at'].map(quote).join(', ');
    const row = `(${placeholders(MESSAGE_COLUMNS)}, NOW(3))`;
    const bindings = page.flatMap((message) => messageValues(taxpayerId, message));
    // synced_at first: assignments run left to right, so it still sees the old content_hash.
    const updates = [
      `synced_at = IF(content_hash = VALUES(content_hash), synced_at, VALUES(synced_at))`,
      ...UPDATED_COLUMNS.map((column) => `${quote(column)} = VALUES(${quote(column)})`),
    ].join(', ');
    return trx.raw(
      `INSERT INTO ${quote(this.tables.mailboxMessages)} (${columns}) VALUES ${page.map(() => row).join(', ')} ON DUPLICATE KEY UPDATE ${updates}`,
      bindings,
    );
  }

  /** Records a failed attempt; the watermark stays, so the next attempt reads the same messages again. */
  async recordFailure(taxpayerId: number, failure: SyncFailureRecord): Promise<void> {
    await withDatabaseRetry(() =>
      this.knex.raw(
        `UPDATE ${quote(this.tables.taxpayers)} SET last_sync_at = NOW(3), last_sync_status = ?, last_sync_error_code = ?,
           last_sync_error = ?, last_sync_duration_ms = ?
         WHERE id = ?`,
        [failure.status, failure.code.slice(0, 32), truncate(failure.message), Math.round(failure.durationMs), taxpayerId],
      ),
    );
  }

  /** Mean time of the last successful syncs: what the next run's estimate is based on. */
  async meanSyncDurationMs(filter: TaxpayerFilter = {}): Promise<number | undefined> {
    const query = this.knex(this.tables.taxpayers).avg({ mean: 'last_sync_duration_ms' }).where('last_sync_status', 'ok');
    if (filter.taxpayerIds?.length) query.whereIn('id', [...filter.taxpayerIds]);
    if (filter.teamIds?.length) query.whereIn('team_id', [...filter.teamIds]);
    const [row] = (await query) as Array<{ mean: number | string | null }>;
    return row?.mean == null ? undefined : Number(row.mean);
  }

  /** Taxpayers by the status of their last sync attempt (`never` for none yet). */
  async statusCounts(): Promise<Record<SyncStatus | 'never', number>> {
    const rows = (await this.knex(this.tables.taxpayers).select('last_sync_status as status').count({ count: '*' }).groupBy('last_sync_status')) as Array<{ status: string | null; count: number | string }>;
    const counts: Record<SyncStatus | 'never', number> = { ok: 0, retrying: 0, failed: 0, never: 0 };
    for (const row of rows) counts[(row.status ?? 'never') as SyncStatus | 'never'] = Number(row.count);
    return counts;
  }

  /** Why the failed taxpayers failed, grouped by error code, most frequent first. */
  async failureReasons(): Promise<FailureReason[]> {
    const rows = (await this.knex(this.tables.taxpayers)
      .select('last_sync_error_code as code')
      .count({ count: '*' })
      .min({ example: 'last_sync_error' })
      .where('last_sync_status', 'failed')
      .groupBy('last_sync_error_code')
      .orderBy([{ column: 'count', order: 'desc' }, { column: 'code' }])) as Array<{ code: string | null; count: number | string; example: string | null }>;
    return rows.map((row) => ({ code: row.code ?? 'unknown', count: Number(row.count), example: row.example ?? '' }));
  }

  async countMessages(): Promise<number> {
    const [row] = (await this.knex(this.tables.mailboxMessages).count({ count: '*' })) as Array<{ count: number | string }>;
    return Number(row?.count ?? 0);
  }

  /** Inserts taxpayers in multi-row chunks (the demo, tests, an app's import). */
  async insertTaxpayers(taxpayers: readonly NewTaxpayer[]): Promise<void> {
    const rows = taxpayers.map((taxpayer) => ({ tax_id: taxpayer.taxId, name: taxpayer.name ?? '', team_id: taxpayer.teamId ?? null, active: taxpayer.active ?? true }));
    for (let start = 0; start < rows.length; start += INSERT_CHUNK) {
      await this.knex(this.tables.taxpayers).insert(rows.slice(start, start + INSERT_CHUNK));
    }
  }
}

function messageValues(taxpayerId: number, message: TwsMessage): Array<string | number | Date> {
  const attachments = JSON.stringify(message.attachments);
  return [taxpayerId, message.id, message.subject, message.sender, message.category, message.receivedAt, message.read ? 1 : 0, message.body, attachments, contentHash(message, attachments)];
}

/** Everything TWS says about a message except its id: a change anywhere (read flag included) is a new hash. */
export function contentHash(message: TwsMessage, attachments = JSON.stringify(message.attachments)): string {
  const content = [message.subject, message.sender, message.category, message.receivedAt.toISOString(), message.read, message.body, attachments];
  return createHash('sha256').update(JSON.stringify(content)).digest('hex');
}

function quote(identifier: string): string {
  return `\`${identifier.replace(/`/g, '``')}\``;
}

function truncate(text: string): string {
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH - 1)}…` : text;
}
