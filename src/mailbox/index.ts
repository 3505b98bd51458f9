/**
 * `mailq/mailbox`: the nightly sync of every taxpayer's tax mailbox from TWS, an add-on to the queue.
 * The queue itself never imports it; an app that wants it imports this entry point.
 *
 * @example
 * import { createMailq } from 'mailq';
 * import { createMailboxSync, dispatchMailboxSync, mailboxSyncJob, mailboxTables, migrateMailbox } from 'mailq/mailbox';
 *
 * const mq = createMailq({ databaseUrl: process.env.MAILQ_DATABASE_URL });
 * await mq.migrate();
 * await migrateMailbox(mq);                                      // the add-on's own tables
 * const sync = createMailboxSync({ knex: mq.knex, tables: mailboxTables(mq), tws: { url: process.env.TWS_URL!, token: process.env.TWS_TOKEN! } });
 * mq.registry.add(mailboxSyncJob(sync));
 * await dispatchMailboxSync(mq);
 */
export { MailboxSync, createMailboxSync, MailboxSyncError, describeFailureCode, shortFailureMessage, type MailboxSyncOptions, type TwsConnection, type SyncOutcome, type SyncAttemptOptions } from './sync.js';
export { mailboxSyncJob, mailboxSyncPayload, MAILBOX_SYNC_JOB, MAILBOX_SYNC_QUEUE, TWS_RATE_LIMIT_KEY, type MailboxSyncJobOptions, type MailboxSyncPayload } from './job.js';
export { dispatchMailboxSync, type QueueSyncOptions, type QueueSyncResult } from './dispatch.js';
export { syncMailboxesDirectly, groupFailures, type DirectSyncOptions, type DirectSyncResult, type DirectSyncFailure, type DirectSyncProgress } from './direct.js';
export { MailboxStore, type Taxpayer, type TaxpayerFilter, type NewTaxpayer, type SyncStatus, type FailureReason } from './store.js';
export { createTwsClient, TwsError, type TwsClient, type TwsClientOptions, type TwsErrorKind, type TwsMessage, type TwsMailboxPage } from './tws.js';
export { startFakeTws, fakeMailboxMessages, type FakeTws, type FakeTwsOptions, type FakeTwsStats } from './fake-tws.js';
export { runDemo, type DemoOptions, type DemoResult } from './demo.js';
export { mailboxTables, type MailboxTables, type MailboxTableOverrides } from './tables.js';
export { migrateMailbox, mailboxMigrationStatus, rollbackMailbox } from './schema.js';
