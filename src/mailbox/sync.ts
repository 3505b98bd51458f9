import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { MailboxTables } from './tables.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../logger.js';
import { MailboxStore, type TaxpayerFilter } from './store.js';
import { createTwsClient, TwsError, type TwsClient, type TwsMessage } from './tws.js';

/**
 * TWS stamps a message when it files it; it can become readable a little later. Each sync asks
 * again for this much before the last watermark, so such a message is not skipped for good (the
 * upsert absorbs what is read twice).
 */
export const SINCE_OVERLAP_MS = 60 * 60_000;

export interface TwsConnection {
  url: string;
  token: string;
  /** Per request; default 30 s. */
  requestTimeoutMs?: number;
}

export interface MailboxSyncOptions {
  knex: Knex;
  tables: MailboxTables;
  /** A client, or where to reach TWS. Unset, a sync attempt fails with a clear "not configured". */
  tws?: TwsClient | TwsConnection;
  logger?: Logger;
}

export type SyncOutcome =
  | { status: 'synced'; taxpayerId: number; messages: number; pages: number; durationMs: number }
  | { status: 'skipped'; taxpayerId: number; reason: string };

export interface SyncAttemptOptions {
  signal?: AbortSignal;
  /** Awaited before each TWS request after the first: the queue job takes a rate-limit token there. */
  beforeNextRequest?: () => Promise<void>;
  /** No attempt follows this one: a failure is recorded as `failed` rather than `retrying`. */
  finalAttempt?: boolean;
}

export const TWS_NOT_CONFIGURED = 'TWS is not configured: set MAILQ_TWS_URL and MAILQ_TWS_TOKEN (or tws.url and tws.token in mailq.config.js)';

/** Why one taxpayer's sync attempt failed, in the terms both callers (job, direct mode) act on. */
export class MailboxSyncError extends Error {
  override readonly name = 'MailboxSyncError';
  constructor(
    readonly taxpayerId: number,
    /** TWS error kind (`not-found`, `server`, `malformed`, …), `unknown-taxpayer`, `timeout`, `config` or `error`. */
    readonly code: string,
    /** No retry can help: the taxpayer is gone, TWS refuses it, or the token is wrong. */
    readonly permanent: boolean,
    message: string,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get rateLimited(): boolean {
    return this.code === 'rate-limited';
  }
}

/**
 * The mailbox sync of one taxpayer at a time: read its mailbox from TWS since the last sync, store
 * it, record how it went. The queue job and direct mode both call `syncTaxpayer`.
 *
 * @example
 * const sync = createMailboxSync({ knex: mq.knex, tables: mailboxTables(mq), tws: { url: process.env.TWS_URL!, token: process.env.TWS_TOKEN! } });
 * const outcome = await sync.syncTaxpayer(42);
 */
export class MailboxSync {
  readonly store: MailboxStore;
  private readonly logger: Logger;
  private client: TwsClient | undefined;

  constructor(private readonly options: MailboxSyncOptions) {
    this.store = new MailboxStore(options.knex, options.tables);
    this.logger = options.logger ?? createLogger({ level: 'warn' });
  }

  /** The TWS client, created on first use so that dispatching needs no TWS settings. */
  tws(): TwsClient {
    if (this.client) return this.client;
    const { tws } = this.options;
    if (!tws || ('url' in tws && (!tws.url || !tws.token))) {
      throw new ConfigError(TWS_NOT_CONFIGURED);
    }
    this.client = 'url' in tws ? createTwsClient({ baseUrl: tws.url, token: tws.token, requestTimeoutMs: tws.requestTimeoutMs }) : tws;
    return this.client;
  }

  taxpayerIds(filter: TaxpayerFilter = {}): Promise<number[]> {
    return this.store.activeTaxpayerIds(filter);
  }

  /**
   * Reads every page first, then writes them all in one transaction: a page that fails halfway
   * through the mailbox leaves nothing behind, and the next attempt starts from the same watermark.
   * Failures are recorded on the taxpayer and thrown as MailboxSyncError.
   */
  async syncTaxpayer(taxpayerId: number, options: SyncAttemptOptions = {}): Promise<SyncOutcome> {
    const startedAt = Date.now();
    const taxpayer = await this.store.findTaxpayer(taxpayerId);
    if (!taxpayer) throw new MailboxSyncError(taxpayerId, 'unknown-taxpayer', true, `taxpayer ${taxpayerId} does not exist (deleted after the sync was dispatched?)`);
    if (!taxpayer.active) return { status: 'skipped', taxpayerId, reason: 'inactive' };
    try {
      const since = taxpayer.lastSyncedAt ? new Date(taxpayer.lastSyncedAt.getTime() - SINCE_OVERLAP_MS) : undefined;
      const pages: TwsMessage[][] = [];
      for await (const page of this.tws().fetchMailbox(taxpayer.taxId, { since, signal: options.signal, beforeNextPage: options.beforeNextRequest })) pages.push(page.messages);
      const messages = await this.store.saveSync(taxpayer.id, pages, { watermark: taxpayer.readAt, startedAt });
      return { status: 'synced', taxpayerId, messages, pages: pages.length, durationMs: Date.now() - startedAt };
    } catch (error) {
      const failure = toSyncError(taxpayerId, options.signal?.aborted ? options.signal.reason : error);
      if (shouldRecord(failure, options.signal)) {
        const status = failure.permanent || options.finalAttempt ? 'failed' : 'retrying';
        await this.store
          .recordFailure(taxpayerId, { status, code: failure.code, message: failure.message, durationMs: Date.now() - startedAt })
          .catch((recordError: unknown) => this.logger.warn({ err: recordError, taxpayerId }, 'could not record the sync failure'));
      }
      throw failure;
    }
  }
}

/**
 * @example
 * const sync = createMailboxSync({ knex: mq.knex, tables: mailboxTables(mq), tws: { url: 'https://tws.example/api', token } });
 * mq.registry.add(mailboxSyncJob(sync));
 */
export function createMailboxSync(options: MailboxSyncOptions): MailboxSync {
  return new MailboxSync(options);
}

/** Maps anything a sync attempt can throw onto one MailboxSyncError. */
export function toSyncError(taxpayerId: number, error: unknown): MailboxSyncError {
  if (error instanceof MailboxSyncError) return error;
  if (error instanceof TwsError) {
    return new MailboxSyncError(taxpayerId, error.kind, !error.retryable, error.message, error.retryAfterMs, { cause: error });
  }
  // Permanent: no retry finds a setting that is missing on this worker.
  if (error instanceof ConfigError) return new MailboxSyncError(taxpayerId, 'config', true, error.message, undefined, { cause: error });
  const text = error instanceof Error ? error.message : String(error);
  const code = error instanceof Error && error.name === 'JobTimeoutError' ? 'timeout' : 'error';
  return new MailboxSyncError(taxpayerId, code, false, `mailbox sync of taxpayer ${taxpayerId} failed: ${text}`, undefined, { cause: error });
}

/**
 * A 429 is a wait, not a failure; an attempt interrupted by a stopping worker did not fail either.
 * A timeout did: it is recorded.
 */
function shouldRecord(failure: MailboxSyncError, signal: AbortSignal | undefined): boolean {
  if (failure.rateLimited) return false;
  return !signal?.aborted || failure.code === 'timeout';
}

const FAILURE_LABELS: Record<string, string> = {
  'not-found': 'TWS 404: taxpayer not found',
  forbidden: 'TWS 403: access forbidden',
  unauthorized: 'TWS 401: token refused',
  client: 'TWS refused the request (4xx)',
  server: 'TWS server error (5xx)',
  timeout: 'timed out',
  network: 'TWS unreachable',
  malformed: 'malformed TWS response',
  'rate-limited': 'TWS rate limit (429)',
  'unknown-taxpayer': 'taxpayer no longer exists',
  config: 'TWS not configured on the worker',
  error: 'other error',
};

/** A failure code in words, for summaries. */
export function describeFailureCode(code: string): string {
  return FAILURE_LABELS[code] ?? code;
}

/** A failure message without the request line TWS errors start with: `20100000075: answered 404: …`. */
export function shortFailureMessage(message: string): string {
  const request = /^TWS request for taxpayer (\S+) \(GET [^)]*\) (.*)$/s.exec(message);
  return request ? `${request[1]}: ${request[2]}` : message;
}
