// The mailbox sync embedded in an application: the app owns the database connection, dispatches
// sync jobs from its own code (inside its own transactions), and runs a worker in its own process.
//
//   npm run build && node dist/examples/mailbox-sync/app.js
//
// It uses MAILQ_DATABASE_URL (default: mysql://root@127.0.0.1:3306/mailq_example_mailbox, created if
// missing) and MAILQ_TWS_URL / MAILQ_TWS_TOKEN if set; otherwise it starts a fake TWS in-process.
// In an app, import from 'mailq' and 'mailq/mailbox' instead of '../../src/index.js' and '../../src/mailbox/index.js'.
import knex from 'knex';
import { connect, createLogger, createMailq, type Knex } from '../../src/index.js';
import { createMailboxSync, dispatchMailboxSync, mailboxSyncJob, mailboxTables, migrateMailbox, shortFailureMessage, MAILBOX_SYNC_JOB, MAILBOX_SYNC_QUEUE, startFakeTws } from '../../src/mailbox/index.js';

const databaseUrl = process.env.MAILQ_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/mailq_example_mailbox';
await createDatabaseIfMissing(databaseUrl);

// The app's own connection pool, configured as the app likes (one statement per query: no stacked
// statements for an injection to append). mailq dispatches through it, so a dispatch can join the
// app's transactions, and opens a small pool of its own to the same database for its worker.
const db: Knex = knex({ client: 'mysql2', connection: databaseUrl });
// This example prints its own lines from worker events, so the queue's logger stays quiet.
const mq = createMailq({ knex: db, logger: createLogger({ level: 'fatal' }) });
await mq.migrate();
// The mailbox sync is an add-on with tables of its own: the app asks for them.
const tables = mailboxTables(mq);
await migrateMailbox(mq, tables);

const fake = process.env.MAILQ_TWS_URL ? undefined : await startFakeTws({ latencyMs: 200, errorRate: 0.05, brokenTaxpayers: ['20100000004'], token: 'example-token' });
const tws = fake ? { url: fake.url, token: 'example-token' } : { url: process.env.MAILQ_TWS_URL!, token: process.env.MAILQ_TWS_TOKEN ?? '' };

// The job carries only { taxpayerId }; the worker reaches TWS with its own settings.
const sync = createMailboxSync({ knex: db, tables, tws });
mq.registry.add(mailboxSyncJob(sync, { tries: 3, backoff: [1, 2, 5], timeout: '30s' }));

/** Onboarding: the taxpayer row and its first mailbox sync commit together, or neither exists. */
async function onboardTaxpayer(taxId: string, name: string, teamId: number): Promise<number> {
  return db.transaction(async (trx) => {
    const [id] = await trx(tables.taxpayers).insert({ tax_id: taxId, name, team_id: teamId });
    await mq.dispatch(MAILBOX_SYNC_JOB, { taxpayerId: Number(id) }, { transaction: trx });
    return Number(id);
  });
}

await db(tables.taxpayers).delete();
for (let n = 1; n <= 20; n++) await onboardTaxpayer(String(20_100_000_000 + n), `Cliente ${n} S.A.C.`, (n % 2) + 1);

// A rolled-back transaction leaves no job behind.
await db
  .transaction(async (trx) => {
    const [id] = await trx(tables.taxpayers).insert({ tax_id: '20199999999', name: 'Never', team_id: 1 });
    await mq.dispatch(MAILBOX_SYNC_JOB, { taxpayerId: Number(id) }, { transaction: trx });
    throw new Error('validation failed after the dispatch');
  })
  .catch(() => undefined);

// Later that night: every taxpayer of team 1, one bulk insert, in the same transaction as an audit entry.
await db.transaction(async (trx) => {
  const { dispatched } = await dispatchMailboxSync(mq, { teamIds: [1], transaction: trx });
  console.log(`nightly sync for team 1: ${dispatched} jobs dispatched`);
});

// A worker in this process. A web app would start it at boot and stop it on SIGTERM.
const worker = mq.worker({ queues: [MAILBOX_SYNC_QUEUE], concurrency: 5 });
worker.on('job:retrying', (job, error, delayMs) => console.log(`job ${job.id} attempt ${job.attempt} failed (${shortFailureMessage(error.message)}); again in ${delayMs} ms`));
worker.on('job:failed', (job, error) => console.log(`job ${job.id} failed for good: ${shortFailureMessage(error.message)}`));
process.once('SIGTERM', () => void worker.stop());
const running = worker.run();

// For the example only: stop once the queue is empty (retries included).
while ((await db(mq.tables.jobs).where({ queue: MAILBOX_SYNC_QUEUE }).count({ n: '*' }))[0]!.n != 0) await new Promise((resolve) => setTimeout(resolve, 200));
await worker.stop();
await running;

const statuses = await sync.store.statusCounts();
console.log(`synced ${statuses.ok}, failed ${statuses.failed}, messages stored ${await sync.store.countMessages()}`);
for (const failed of await mq.failed.list()) console.log(`failed job ${failed.id}: ${failed.reason}`);

await fake?.close();
await mq.close();
await db.destroy();

async function createDatabaseIfMissing(url: string): Promise<void> {
  const target = new URL(url);
  const name = target.pathname.slice(1);
  target.pathname = '/';
  const server = connect(`${target.toString()}mysql`);
  await server.raw('CREATE DATABASE IF NOT EXISTS ??', [name]);
  await server.destroy();
}
