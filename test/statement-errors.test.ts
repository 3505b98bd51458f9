/**
 * A statement the database refuses must reach the caller, the CLI and the logs as one short line:
 * what mailq was doing, the server's reason and its code. knex writes the whole statement in front
 * of the driver's message, and a bulk INSERT's statement holds every payload of its chunk: hundreds
 * of KB of users' data in an exception, a terminal and a log line.
 *
 * The faults are real: a trigger that refuses marked rows (SIGNAL, 1644), another session holding
 * the locks an INSERT needs (lock wait timeout, 1205), KILL CONNECTION while a chunk is written.
 */
import { Writable } from 'node:stream';
import mysql from 'mysql2/promise';
import knexFactory, { type Knex } from 'knex';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { main as compiledMain } from '../dist/src/cli/main.js';
import { isConnectionError, isLockConflict } from '../src/db/errors.js';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import { PermanentError } from '../src/errors.js';
import type { Output } from '../src/cli/output.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { holdRowLocks } from './support/lock-wait.js';
import { captureOutput, count, openQueue, runCli, waitFor } from './support/queue.js';

const main = compiledMain as (argv: string[], output: Output) => Promise<number>;

/** Text every payload carries: it must never show up in an error, a log line or the CLI's output. */
const MARK = 'PAYLOAD-PRIVATE-7f3a';
/** Well below what a 1,000-row chunk of these payloads weighs (~400 KB), well above any one clear line. */
const SHORT = 1_000;
const REFUSAL = 'jobs are frozen for maintenance';

const note = defineJob({
  name: 'note',
  schema: z.object({ n: z.number(), text: z.string(), refuse: z.boolean().optional(), trap: z.boolean().optional() }),
  handle: () => undefined,
});
const doomed = defineJob({
  name: 'doomed',
  schema: z.object({ text: z.string() }),
  handle({ text }) {
    throw new PermanentError(`cannot process ${text}`);
  },
});

function payloads(n: number, marked: Record<number, { refuse?: boolean; trap?: boolean }> = {}) {
  return Array.from({ length: n }, (_, index) => ({ n: index, text: `${MARK}-${index}-${'x'.repeat(300)}`, ...marked[index] }));
}

let db: TestDatabase;
let mq: Mailq;
let admin: mysql.Connection;

beforeAll(async () => {
  db = await createTestDatabase('statement-errors');
  mq = openQueue(db.url, { jobs: [note, doomed] });
  await mq.migrate();
  admin = await mysql.createConnection({ uri: db.url });
  await admin.query(`CREATE TRIGGER refuse_marked BEFORE INSERT ON jobs FOR EACH ROW
    IF JSON_EXTRACT(NEW.payload, '$.refuse') = true THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '${REFUSAL}'; END IF`);
  await admin.query(`CREATE TRIGGER refuse_failed BEFORE INSERT ON failed_jobs FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'failed_jobs is read-only today'`);
  // The flag lives in a non-transactional table: a killed transaction's rollback does not re-arm it.
  await admin.query('CREATE TABLE kill_trap (armed INT NOT NULL) ENGINE=Aria');
  await admin.query('INSERT INTO kill_trap VALUES (0)');
  await admin.query(`CREATE TRIGGER kill_trap_on_insert BEFORE INSERT ON jobs FOR EACH ROW
    IF JSON_EXTRACT(NEW.payload, '$.trap') = true AND (SELECT armed FROM kill_trap) = 1 THEN
      UPDATE kill_trap SET armed = 0;
      SET @slept = SLEEP(30);
    END IF`);
});

afterAll(async () => {
  await admin?.end();
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex(mq.tables.jobs).delete();
});

async function rejectionOf(call: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  const outcome = await call.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(outcome, 'the call should have failed').toBeInstanceOf(Error);
  return outcome as Error & Record<string, unknown>;
}

/** Short, one line, the reason and its code, no payload text; the driver's own error kept as `cause`. */
function expectBounded(error: Error & Record<string, unknown>, reason: RegExp): void {
  expect(error.message.length, error.message.slice(0, 300)).toBeLessThan(SHORT);
  expect(error.message).not.toContain(MARK);
  expect(error.message).not.toContain('\n');
  expect(error.message).toMatch(reason);
  expect(error.name).toBe('DatabaseError');
  expect(String(error.stack).length).toBeLessThan(SHORT * 5);
  expect(String(error.stack)).not.toContain(MARK);
  expect(error.cause, 'the driver error is kept as cause').toBeInstanceOf(Error);
}

describe('dispatchMany of 3,000 jobs whose second chunk the database refuses', () => {
  it('rejects with one short line: the operation, the chunk, the statement, the reason and code; nothing written', async () => {
    const error = await rejectionOf(mq.dispatchMany(note, payloads(3_000, { 1_500: { refuse: true } })));
    expectBounded(error, new RegExp(`${REFUSAL} \\(1644\\)$`));
    expect(error.message).toBe(`dispatchMany of 3,000 'note' jobs to queue 'default': chunk of 1,000 rows from index 1000: INSERT INTO \`jobs\`: ${REFUSAL} (1644)`);
    expect(error).toMatchObject({ errno: 1644, code: 'ER_SIGNAL_EXCEPTION', sqlState: '45000' });
    expect((error.cause as { sqlMessage?: string }).sqlMessage).toBe(REFUSAL);
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  });

  it('a batch too', async () => {
    const entries = payloads(1_200, { 1_100: { refuse: true } }).map((payload) => ({ job: note, payload }));
    const error = await rejectionOf(mq.batch(entries, { name: 'nightly' }));
    expectBounded(error, new RegExp(`^batch 'nightly' of 1,200 jobs: chunk of 200 rows from index 1000: INSERT INTO \`jobs\`: ${REFUSAL} \\(1644\\)$`));
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
    expect(await count(mq.knex, mq.tables.jobBatches)).toBe(0);
  });

  it('logged by mailq (through the app’s own plain pino logger): one short record, no payload', async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk, _encoding, done) => void (lines.push(String(chunk)), done()) });
    const logged = openQueue(db.url, { jobs: [note], logger: pino({ level: 'info' }, sink) });
    try {
      const error = await rejectionOf(logged.dispatchMany(note, payloads(2_000, { 1_999: { refuse: true } })));
      logged.logger.error({ err: error }, 'dispatch failed');
      const record = String(await waitFor('the log line', () => lines.find((line) => line.includes('dispatch failed'))));
      expect(record.length, record.slice(0, 300)).toBeLessThan(SHORT * 5);
      expect(record).not.toContain(MARK);
      const parsed = JSON.parse(record) as { err: { message: string; errno: number; cause: { message: string } } };
      expect(parsed.err.message).toMatch(new RegExp(`: ${REFUSAL} \\(1644\\)$`));
      expect(parsed.err.errno).toBe(1644);
      expect(parsed.err.cause.message).toBe(REFUSAL);
    } finally {
      await logged.close();
    }
  });
});

describe('a lock wait timeout in the app’s transaction, through the app’s own knex', () => {
  let appKnex: Knex;
  let embedded: Mailq;

  beforeAll(() => {
    // A plain knex as an app configures it; its sessions wait one second for a row lock.
    appKnex = knexFactory({
      client: 'mysql2',
      connection: { uri: db.url } as Knex.MySql2ConnectionConfig,
      pool: { min: 0, max: 2, afterCreate: (conn: { query: (sql: string, cb: (error: unknown) => void) => void }, done: (error: unknown, conn: unknown) => void) => conn.query('SET SESSION innodb_lock_wait_timeout = 1', (error) => done(error, conn)) },
    });
    embedded = openQueue(db.url, { jobs: [note], knex: appKnex });
  });

  afterAll(async () => {
    await embedded?.close();
    await appKnex?.destroy();
  });

  it('rejects with the operation and "Lock wait timeout exceeded … (1205)", no payload; still a lock conflict', async () => {
    const held = await holdRowLocks(db.url, 'jobs');
    let error: Error & Record<string, unknown>;
    try {
      error = await rejectionOf(appKnex.transaction((trx) => embedded.dispatchMany(note, payloads(1_500), { transaction: trx })));
    } finally {
      await held.release();
    }
    expectBounded(error, /^dispatchMany of 1,500 'note' jobs to queue 'default': chunk of 1,000 rows from index 0: INSERT INTO `jobs`: Lock wait timeout exceeded; try restarting transaction \(1205\)$/);
    expect(isLockConflict(error)).toBe(true);
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  });
});

describe('the connection killed while a chunk is written', () => {
  it('rejects with the lost connection, short, still a connection error; nothing written', async () => {
    await admin.query('UPDATE kill_trap SET armed = 1');
    const pending = rejectionOf(mq.dispatchMany(note, payloads(2_500, { 1_500: { trap: true } })));
    const sleeping = await waitFor('the write to sleep in the trap', async () => {
      const [rows] = (await admin.query(`SELECT id FROM information_schema.PROCESSLIST WHERE db = ? AND state = 'User sleep'`, [db.name])) as unknown as [Array<{ id: number }>];
      return rows[0]?.id;
    });
    await admin.query(`KILL CONNECTION ${Number(sleeping)}`);
    const error = await pending;
    expectBounded(error, /^dispatchMany of 2,500 'note' jobs to queue 'default': chunk of 1,000 rows from index 1000: INSERT INTO `jobs`: (Connection was killed \(1927\)|Connection lost: The server closed the connection\. \(PROTOCOL_CONNECTION_LOST\))$/);
    expect(isConnectionError(error)).toBe(true);
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  });
});

describe('every statement, not only dispatch', () => {
  it('a worker that cannot move a failed job to failed_jobs logs one short line naming the statement and reason, without the payload', async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk, _encoding, done) => void (lines.push(String(chunk)), done()) });
    const working = openQueue(db.url, { jobs: [doomed], logger: pino({ level: 'warn' }, sink) });
    try {
      await working.dispatch(doomed, { text: `${MARK}-${'y'.repeat(5_000)}` });
      const worker = working.worker({ sweepInterval: 0 });
      const running = worker.run();
      const line = String(await waitFor('the failed write to be logged', () => lines.find((text) => text.includes('failed_jobs is read-only today'))));
      await worker.stop();
      await running;
      expect(line.length, line.slice(0, 300)).toBeLessThan(SHORT * 5);
      expect(line).not.toContain(MARK);
      const parsed = JSON.parse(line) as { err: { message: string; errno: number } };
      expect(parsed.err.message).toBe('INSERT INTO `failed_jobs`: failed_jobs is read-only today (1644)');
      expect(parsed.err.errno).toBe(1644);
    } finally {
      await working.close();
      await mq.knex(mq.tables.jobs).delete();
    }
  });
});

describe('the CLI', () => {
  const payload = JSON.stringify({ n: 1, text: `${MARK}-${'z'.repeat(2_000)}`, refuse: true });

  it('mailq dispatch refused by the database: one line on stderr naming the reason and code, no payload, exit 1', async () => {
    const output = captureOutput();
    const code = await main(['dispatch', 'note', payload, '--force', `--database-url=${db.url}`], output);
    expect(code).toBe(1);
    expect(output.stdout).toEqual([]);
    expect(output.stderr).toEqual([`mailq: dispatch of 'note' to queue 'default': INSERT INTO \`jobs\`: ${REFUSAL} (1644)`]);
  });

  it('as a real process, with --verbose: the same line, then a short stack without the payload', async () => {
    const result = await runCli(['dispatch', 'note', payload, '--force', '--verbose', `--database-url=${db.url}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).not.toContain(MARK);
    expect(result.stderr.length).toBeLessThan(SHORT * 5);
    expect(result.stderr.split('\n')[0]).toBe(`mailq: dispatch of 'note' to queue 'default': INSERT INTO \`jobs\`: ${REFUSAL} (1644)`);
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  });
});
