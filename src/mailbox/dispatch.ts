import type { Knex } from 'knex';
import { toBackoffPlan, type BackoffOption, type BackoffPlan } from '../backoff.js';
import { parseDuration, type Duration } from '../duration.js';
import { InvalidJobError, MailqError } from '../errors.js';
import type { JobDefinition } from '../job.js';
import type { Mailq } from '../mailq.js';
import { MAILBOX_SYNC_JOB, MAILBOX_SYNC_DEFAULTS, type MailboxSyncPayload } from './job.js';
import { MailboxStore, type TaxpayerFilter } from './store.js';
import { mailboxTables, type MailboxTables } from './tables.js';

export interface QueueSyncOptions extends TaxpayerFilter {
  /** Count the taxpayers and show the settings, but dispatch nothing. */
  dryRun?: boolean;
  /** Dispatch inside the caller's transaction: the jobs exist only if it commits. */
  transaction?: Knex.Transaction;
  onProgress?: (written: number, total: number) => void;
  /** The batch's name; default `sync-mailbox <UTC time>`. */
  batchName?: string;
  /** Where the taxpayers are; default the queue's prefixed `taxpayers`. */
  tables?: MailboxTables;
  /** Override the job's own settings for these jobs. */
  tries?: number;
  backoff?: BackoffOption;
  timeout?: Duration;
}

export interface QueueSyncResult {
  /** Active taxpayers selected. */
  taxpayers: number;
  /** Jobs written (0 on a dry run). */
  dispatched: number;
  /** Taxpayers skipped because a sync job of theirs was still pending or running (unique jobs). */
  skipped: number;
  /** The batch the jobs belong to (`mailq batch <id>`); null on a dry run or with no taxpayer. */
  batchId: string | null;
  queue: string;
  tries: number;
  timeoutMs: number;
  backoff: BackoffPlan;
  dryRun: boolean;
}

/**
 * The queue path of the mailbox sync (`mailq sync-mailbox --queue`): one `sync-taxpayer-mailbox`
 * job per active taxpayer, written with one bulk insert, as one batch to follow (`mailq batch <id>`).
 * A taxpayer whose sync job is still pending or running is skipped (the job is unique per taxpayer).
 * The job must be registered on `mq`.
 *
 * @example
 * mq.registry.add(mailboxSyncJob(sync));
 * const { dispatched } = await dispatchMailboxSync(mq, { teamIds: [7] });
 */
export async function dispatchMailboxSync(mq: Mailq, options: QueueSyncOptions = {}): Promise<QueueSyncResult> {
  const job = mq.registry.get(MAILBOX_SYNC_JOB) as JobDefinition<MailboxSyncPayload> | undefined;
  if (!job) throw new InvalidJobError(`the job '${MAILBOX_SYNC_JOB}' is not registered: mq.registry.add(mailboxSyncJob(sync)) first`);
  const ids = await selectTaxpayers(new MailboxStore(mq.knex, options.tables ?? mailboxTables(mq)), options);
  const result: QueueSyncResult = {
    taxpayers: ids.length,
    dispatched: 0,
    skipped: 0,
    batchId: null,
    queue: job.queue ?? MAILBOX_SYNC_DEFAULTS.queue,
    tries: options.tries ?? job.tries ?? MAILBOX_SYNC_DEFAULTS.tries,
    timeoutMs: parseDuration(options.timeout ?? job.timeout ?? MAILBOX_SYNC_DEFAULTS.timeout),
    backoff: toBackoffPlan(options.backoff ?? job.backoff ?? [...MAILBOX_SYNC_DEFAULTS.backoff]),
    dryRun: options.dryRun ?? false,
  };
  if (result.dryRun || ids.length === 0) return result;
  const payloads = ids.map((taxpayerId) => ({ taxpayerId }));
  const batch = await mq.batch(job, payloads, {
    name: options.batchName ?? `sync-mailbox ${new Date().toISOString().slice(0, 16).replace('T', ' ')}Z`,
    transaction: options.transaction,
    onProgress: options.onProgress,
    tries: options.tries,
    backoff: options.backoff,
    timeout: options.timeout,
  });
  return { ...result, dispatched: batch.total, skipped: batch.skipped, batchId: batch.id };
}

/**
 * The active taxpayers a filter selects. Ids asked for by name that are unknown or inactive are an
 * error rather than a silent zero: the caller meant them.
 */
export async function selectTaxpayers(store: MailboxStore, filter: TaxpayerFilter): Promise<number[]> {
  const ids = await store.activeTaxpayerIds(filter);
  if (!filter.taxpayerIds?.length) return ids;
  const selected = new Set(ids);
  const missing = filter.taxpayerIds.filter((id) => !selected.has(id));
  if (missing.length === 0) return ids;
  const { inactive, unknown } = await store.explainMissing(missing);
  const reasons = [
    unknown.length ? `no taxpayer with id ${unknown.join(', ')}` : '',
    inactive.length ? `taxpayer ${inactive.join(', ')} ${inactive.length === 1 ? 'is' : 'are'} inactive` : '',
  ].filter(Boolean);
  const outsideTeams = missing.length - unknown.length - inactive.length;
  if (outsideTeams > 0) reasons.push(`${outsideTeams} taxpayer${outsideTeams === 1 ? ' is' : 's are'} not in the given team${filter.teamIds!.length === 1 ? '' : 's'}`);
  throw new MailqError(`${reasons.join('; ')}: nothing was synced`);
}
