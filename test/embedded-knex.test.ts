import knexFactory, { type Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseDatabaseUrl } from '../src/db/url.js';
import { mysqlConnectionOptions } from '../src/db/connection.js';
import { ConfigError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import { createLogger } from '../src/logger.js';
import { createMailq, type Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

// An app that embeds mailq gives it its own knex, configured for the app: one statement per query
// (so an injection cannot append `; DROP …`) and sessions in the app's time zone.

const silent = createLogger({ level: 'silent' });
const ran: number[] = [];
const note = defineJob({
  name: 'note',
  schema: z.object({ n: z.number().int() }),
  handle({ n }) {
    ran.push(n);
  },
});

let db: TestDatabase;
let appKnex: Knex;
let mq: Mailq;

/** New sessions the app's own afterCreate has set up: it counts them, as an app's connection metrics would. */
let appSessionsSetUp = 0;

/** The app's pool: mysql2 defaults (no multipleStatements), sessions five hours ahead of UTC and a lock wait of its own. */
function appPool(url: string): Knex {
  return knexFactory({
    client: 'mysql2',
    connection: mysqlConnectionOptions(parseDatabaseUrl(url)),
    pool: {
      min: 0,
      max: 4,
      afterCreate(connection: { query: (sql: string, cb: (error: unknown) => void) => void }, done: (error: unknown, connection: unknown) => void) {
        appSessionsSetUp++;
        connection.query("SET time_zone = '+05:00', innodb_lock_wait_timeout = 7", (error) => done(error, connection));
      },
    },
  });
}

beforeAll(async () => {
  db = await createTestDatabase('embedded_knex');
  appKnex = appPool(db.url);
  mq = createMailq({ knex: appKnex, jobs: [note], logger: silent });
  await mq.migrate();
  await appKnex.raw('CREATE TABLE orders (id INT PRIMARY KEY)');
});

afterAll(async () => {
  await mq?.close();
  await appKnex?.destroy();
  await db?.drop();
});

async function sessionSettings(knex: Knex): Promise<{ zone: string; lockWait: number; autocommit: number }> {
  const [[session]] = (await knex.raw('SELECT @@session.time_zone AS zone, @@session.innodb_lock_wait_timeout AS lockWait, @@session.autocommit AS autocommit')) as [
    [{ zone: string; lockWait: number; autocommit: number }],
  ];
  return { zone: session.zone, lockWait: Number(session.lockWait), autocommit: Number(session.autocommit) };
}

describe('createMailq({ knex }) with an app pool that refuses stacked statements', () => {
  it('is accepted, and the app pool still refuses stacked statements afterwards', async () => {
    await expect(appKnex.raw('SELECT 1; SELECT 2')).rejects.toThrow(/SQL syntax/);
    expect(mq.knex).not.toBe(appKnex);
    // mailq's own pool to the same database does take them (its claim sends two statements at once).
    const [results] = (await mq.knex.raw('SELECT DATABASE() AS db; SELECT 2 AS two')) as [Array<Array<Record<string, unknown>>>];
    expect(results[0]![0]).toEqual({ db: db.name });
  });

  it("mailq's pool does not run the app's afterCreate: its sessions are UTC with the server's defaults; the app's stay as the app set them", async () => {
    const other = createMailq({ knex: appKnex, logger: silent, poolMax: 2 });
    try {
      const setUpBefore = appSessionsSetUp;
      // Two sessions at once: mailq's pool opens both.
      const sessions = await Promise.all([1, 2].map(() => sessionSettings(other.knex)));
      expect(appSessionsSetUp).toBe(setUpBefore);
      const [[server]] = (await other.knex.raw('SELECT @@global.innodb_lock_wait_timeout AS lockWait')) as [[{ lockWait: number }]];
      expect(sessions).toEqual([1, 2].map(() => ({ zone: '+00:00', lockWait: Number(server.lockWait), autocommit: 1 })));
    } finally {
      await other.close();
    }
    expect(await sessionSettings(appKnex)).toEqual({ zone: '+05:00', lockWait: 7, autocommit: 1 });
  });

  it("sessionSetup runs on mailq's sessions, before mailq's own settings: UTC wins", async () => {
    const other = createMailq({ knex: appKnex, logger: silent, sessionSetup: ['SET SESSION innodb_lock_wait_timeout = 7', "SET time_zone = '+05:00'"] });
    try {
      expect(await sessionSettings(other.knex)).toEqual({ zone: '+00:00', lockWait: 7, autocommit: 1 });
    } finally {
      await other.close();
    }
    // A statement the server refuses fails the connection: the first query says so.
    const mistyped = createMailq({ knex: appKnex, logger: silent, sessionSetup: ['SET SESSION no_such_setting = 1'] });
    try {
      await expect(mistyped.knex.raw('SELECT 1')).rejects.toThrow(/Unknown system variable 'no_such_setting'/);
    } finally {
      await mistyped.close();
    }
    expect(() => createMailq({ knex: appKnex, sessionSetup: 'SET ROLE x' as unknown as string[] })).toThrow(/^sessionSetup: expected a list of SQL statements/);
    expect(() => createMailq({ knex: appKnex, sessionSetup: [''] })).toThrow(ConfigError);
  });

  it('dispatches in the app transaction: a rollback leaves no job, a commit leaves one that runs now', async () => {
    await expect(
      appKnex.transaction(async (trx) => {
        await trx('orders').insert({ id: 1 });
        await mq.dispatch(note, { n: 1 }, { transaction: trx });
        throw new Error('the order failed');
      }),
    ).rejects.toThrow('the order failed');
    expect(await mq.knex(mq.tables.jobs).count({ n: '*' })).toEqual([{ n: 0 }]);

    await appKnex.transaction(async (trx) => {
      await trx('orders').insert({ id: 2 });
      await mq.dispatch(note, { n: 2 }, { transaction: trx });
    });
    // Due now by the database's UTC clock, not five hours late: dispatch does not read the session's time zone.
    await mq.worker({ queues: ['default'], stopWhenEmpty: true, sweepInterval: 0, heartbeat: 0 }).run();
    expect(ran).toEqual([2]);
    expect(await mq.knex(mq.tables.jobs).count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  it('a delayed dispatch through the app pool is due after the delay, by UTC', async () => {
    await mq.dispatch(note, { n: 3 }, { delay: '60s' });
    const [[row]] = (await mq.knex.raw(`SELECT TIMESTAMPDIFF(SECOND, NOW(3), available_at) AS wait, TIMESTAMPDIFF(SECOND, created_at, NOW(3)) AS age FROM ${mq.tables.jobs}`)) as [[{ wait: number; age: number }]];
    expect(row.wait).toBeGreaterThanOrEqual(55);
    expect(row.wait).toBeLessThanOrEqual(60);
    expect(Math.abs(row.age)).toBeLessThanOrEqual(5);
    await mq.knex(mq.tables.jobs).delete();
  });

  it('an empty batch with callbacks finishes inside the app transaction (one statement per query)', async () => {
    const created = await appKnex.transaction((trx) => mq.batch(note, [], { name: 'empty', finally: { job: note, payload: { n: 4 } }, transaction: trx }));
    const batch = await mq.batches.find(created.id);
    expect(batch.finishedAt).not.toBeNull();
    const [[ages]] = (await mq.knex.raw(`SELECT TIMESTAMPDIFF(SECOND, created_at, NOW(3)) AS created, TIMESTAMPDIFF(SECOND, finished_at, NOW(3)) AS finished FROM ${mq.tables.jobBatches}`)) as [[{ created: number; finished: number }]];
    expect(Math.abs(ages.created)).toBeLessThanOrEqual(5);
    expect(Math.abs(ages.finished)).toBeLessThanOrEqual(5);
    expect(await mq.knex(mq.tables.jobs).where({ name: 'note' }).count({ n: '*' })).toEqual([{ n: 1 }]);
    await mq.knex(mq.tables.jobs).delete();
  });

  it('close() closes mailq\'s pool and leaves the app\'s open', async () => {
    const other = createMailq({ knex: appKnex, logger: silent });
    await other.monitor.queues([]);
    await other.close();
    expect(await appKnex.raw('SELECT 1 AS one').then(([rows]: [Array<{ one: number }>]) => rows[0]!.one)).toBe(1);
  });

  it('reads connection settings given as a function too; refuses a knex that is not MySQL', async () => {
    const provided = knexFactory({ client: 'mysql2', connection: async () => mysqlConnectionOptions(parseDatabaseUrl(db.url)) });
    const viaFunction = createMailq({ knex: provided, logger: silent });
    try {
      expect((await viaFunction.migrationStatus()).pending).toEqual([]);
    } finally {
      await viaFunction.close();
      await provided.destroy();
    }
    const postgres = { client: { dialect: 'postgresql', config: { connection: {} } } } as unknown as Knex;
    expect(() => createMailq({ knex: postgres })).toThrow(ConfigError);
    expect(() => createMailq({ knex: postgres })).toThrow(/mailq runs on MySQL\/MariaDB, and this knex's client is 'postgresql'/);
  });
});
