/**
 * Writes whose connection the server kills (`KILL CONNECTION`) while their transaction is open.
 * The server rolls such a transaction back, so the call must reject with the reason (the
 * connection was lost, not the ROLLBACK knex could no longer send after it) and leave none of its
 * rows; nothing may escape as an unhandled rejection, which ends a Node process embedding mailq.
 *
 * The kill lands at a known point, not by luck: a trigger sleeps on one chosen row of the write,
 * with the rows before it already written in the same transaction; the test finds that sleeping
 * session in the processlist and kills it there.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import mysql from 'mysql2/promise';
import { isConnectionError } from '../src/db/errors.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { doomed, keyed, note } from './support/write-jobs.js';
import { count, openQueue, sleep, waitFor } from './support/queue.js';
import { startTcpProxy } from './support/tcp-proxy.js';

const ROUNDS = 15;
const JOBS = 3_000;
const CHUNK = 1_000;
/** In the second INSERT of a 3,000-job dispatch: the first 1,000 rows are written when the connection dies. */
const TRAP_AT = 1_500;


let db: TestDatabase;
let mq: Mailq;
let admin: mysql.Connection;
const unhandled: unknown[] = [];
const noteUnhandled = (reason: unknown) => void unhandled.push(reason);

beforeAll(async () => {
  db = await createTestDatabase('killed-dispatch');
  mq = openQueue(db.url, { jobs: [note, keyed, doomed] });
  await mq.migrate();
  admin = await mysql.createConnection({ uri: db.url });
  // The flag lives in a non-transactional table: the killed transaction's rollback does not re-arm the trap.
  await admin.query('CREATE TABLE kill_trap (armed INT NOT NULL) ENGINE=Aria');
  await admin.query('INSERT INTO kill_trap VALUES (0)');
  await admin.query(`CREATE TRIGGER kill_trap_on_insert BEFORE INSERT ON jobs FOR EACH ROW
    BEGIN
      IF JSON_VALUE(NEW.payload, '$.n') = ${TRAP_AT} AND (SELECT armed FROM kill_trap) = 1 THEN
        UPDATE kill_trap SET armed = 0;
        SET @slept = SLEEP(30);
      END IF;
    END`);
  process.on('unhandledRejection', noteUnhandled);
});

afterAll(async () => {
  process.off('unhandledRejection', noteUnhandled);
  await admin?.end();
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  unhandled.length = 0;
  await admin.query('UPDATE kill_trap SET armed = 0');
  for (const table of [mq.tables.jobs, mq.tables.failedJobs, mq.tables.jobBatches]) await mq.knex(table).delete();
});

function payloads(n: number, from = 0): Array<{ n: number }> {
  return Array.from({ length: n }, (_, index) => ({ n: from + index }));
}

type Outcome = { resolved: unknown } | { rejected: unknown };

/** Runs `call` with the trap armed, kills its connection once it sleeps in the trap, and says how the call ended. */
async function killedMidTransaction(call: () => Promise<unknown>): Promise<Outcome> {
  await admin.query('UPDATE kill_trap SET armed = 1');
  // The outcome is taken at once: a rejection of the call is handled here, never left for a later await.
  const outcome: Promise<Outcome> = call().then(
    (resolved) => ({ resolved }),
    (rejected: unknown) => ({ rejected }),
  );
  const sleeping = await waitFor('the write to sleep in the trap', async () => {
    const [rows] = (await admin.query(`SELECT id FROM information_schema.PROCESSLIST WHERE db = ? AND state = 'User sleep'`, [db.name])) as unknown as [Array<{ id: number }>];
    return rows[0]?.id;
  });
  await admin.query(`KILL CONNECTION ${Number(sleeping)}`);
  const settled = await outcome;
  // Late events (the pool dropping the dead connection, a stray rejection) get their turn before anything is counted.
  await sleep(50);
  return settled;
}

function rejection(outcome: Outcome): Error {
  expect(outcome).toHaveProperty('rejected');
  const error = (outcome as { rejected: unknown }).rejected;
  expect(error).toBeInstanceOf(Error);
  return error as Error;
}

/** The call rejected with why its transaction died, a lost connection, not with the ROLLBACK that could not follow it. */
function expectConnectionLost(outcome: Outcome): void {
  const error = rejection(outcome);
  expect(isConnectionError(error)).toBe(true);
  expect(error.message).toMatch(/(Connection was killed \(1927\)|Connection lost: The server closed the connection\. \(PROTOCOL_CONNECTION_LOST\))$/);
  expect(error.message).not.toMatch(/ROLLBACK/);
}

describe('dispatchMany killed mid-transaction', () => {
  it(`${ROUNDS} rounds: each rejects with the lost connection and writes no row; no unhandled rejection`, async () => {
    for (let round = 0; round < ROUNDS; round++) {
      expectConnectionLost(await killedMidTransaction(() => mq.dispatchMany(note, payloads(JOBS), { chunkSize: CHUNK })));
      expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
    }
    expect(unhandled).toEqual([]);
    // The pool dropped the dead connections: the next dispatch writes every row once.
    expect(await mq.dispatchMany(note, payloads(JOBS), { chunkSize: CHUNK })).toEqual({ dispatched: JOBS, skipped: 0, queue: 'default' });
    expect(await count(mq.knex, mq.tables.jobs)).toBe(JOBS);
  });

  it('a payload JSON cannot encode is refused before any INSERT goes out: no statement in flight, no row, nothing unhandled', async () => {
    // Before payloads were checked upfront, row 1,500 (a BigInt) failed to build while the first INSERT,
    // trapped at row 500, was in flight. Now nothing is sent: the trap stays armed.
    await admin.query('UPDATE kill_trap SET armed = 1');
    const loose = Array.from({ length: JOBS }, (_, index) => (index === 1_500 ? { n: index, size: 10n } : { n: index === 500 ? TRAP_AT : JOBS + index }));
    await expect(mq.dispatchMany('loose', loose, { chunkSize: CHUNK })).rejects.toThrow(/^invalid payload for job 'loose' at index 1500: size: a BigInt cannot be stored as JSON/);
    const [[trap]] = (await admin.query('SELECT armed FROM kill_trap')) as unknown as [[{ armed: number }]];
    expect(trap.armed).toBe(1);
    await sleep(50);
    expect(unhandled).toEqual([]);
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  });
});

describe('batch killed mid-transaction', () => {
  it(`${ROUNDS} rounds: each rejects with the lost connection, leaves no batch row and no job; no unhandled rejection`, async () => {
    for (let round = 0; round < ROUNDS; round++) {
      expectConnectionLost(await killedMidTransaction(() => mq.batch(note, payloads(JOBS), { name: `round ${round}`, chunkSize: CHUNK })));
      expect(await count(mq.knex, mq.tables.jobBatches)).toBe(0);
      expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
    }
    expect(unhandled).toEqual([]);
    const created = await mq.batch(note, payloads(JOBS), { chunkSize: CHUNK });
    expect(created).toMatchObject({ total: JOBS, skipped: 0 });
    expect(await mq.knex(mq.tables.jobBatches).select('id', 'total_jobs', 'pending_jobs')).toEqual([{ id: created.id, total_jobs: JOBS, pending_jobs: JOBS }]);
    expect(await count(mq.knex, mq.tables.jobs, { batch_id: created.id })).toBe(JOBS);
  });
});

describe('dispatch of one job killed mid-write', () => {
  it('with a unique key (a transaction) and without (one INSERT): rejects with the lost connection, no row; dispatching again inserts it once', async () => {
    for (let round = 0; round < 5; round++) {
      expectConnectionLost(await killedMidTransaction(() => mq.dispatch(keyed, { n: TRAP_AT })));
      expectConnectionLost(await killedMidTransaction(() => mq.dispatch(note, { n: TRAP_AT })));
      expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
    }
    expect(unhandled).toEqual([]);
    const again = await mq.dispatch(keyed, { n: TRAP_AT });
    expect(again.skipped).toBe(false);
    expect(await mq.knex(mq.tables.jobs).select('id', 'uuid')).toEqual([{ id: again.id, uuid: again.uuid }]);
  });
});

describe('failed.retry killed mid-transaction', () => {
  it('rejects with the lost connection; every failed job stays in failed_jobs and none is in jobs', async () => {
    await mq.dispatchMany(doomed, payloads(20, TRAP_AT - 10));
    await mq.worker({ queues: ['default'], concurrency: 4, stopWhenEmpty: true, sweepInterval: 0, heartbeat: 0 }).run();
    const ids = (await mq.knex(mq.tables.failedJobs).orderBy('id').pluck('id')).map(Number);
    expect(ids).toHaveLength(20);

    expectConnectionLost(await killedMidTransaction(() => mq.failed.retry(ids)));
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
    expect((await mq.knex(mq.tables.failedJobs).orderBy('id').pluck('id')).map(Number)).toEqual(ids);

    expectConnectionLost(await killedMidTransaction(() => mq.failed.retry('all')));
    expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
    expect(await count(mq.knex, mq.tables.failedJobs)).toBe(20);
    expect(unhandled).toEqual([]);
  });
});

describe('a dispatch whose COMMIT reply is lost', () => {
  it('is not sent again: the call rejects with the lost connection and its rows are in jobs exactly once', async () => {
    const proxy = await startTcpProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 3306) });
    const url = new URL(proxy.urlThrough(db.url));
    // The stall check ends the wait for a reply that will never come (src/db/stall-check.ts).
    url.searchParams.set('stallCheck', '300ms');
    const distant = openQueue(url.toString(), { jobs: [note] });
    try {
      // Emitted before the statement goes out: the COMMIT still reaches the server, its answer is dropped.
      distant.knex.on('query', (query: { sql: string }) => {
        if (/^COMMIT/i.test(query.sql)) proxy.loseReplies();
      });
      const outcome: Outcome = await distant.dispatchMany(note, payloads(JOBS), { chunkSize: CHUNK }).then(
        (resolved) => ({ resolved }),
        (rejected: unknown) => ({ rejected }),
      );
      const error = rejection(outcome);
      expect(isConnectionError(error)).toBe(true);
      expect(error.message).toMatch(/^dispatchMany of 3,000 'note' jobs to queue 'default': COMMIT: /);
      await sleep(500);
      const [[rows]] = (await admin.query(`SELECT COUNT(*) AS total, COUNT(DISTINCT JSON_VALUE(payload, '$.n')) AS distinctPayloads FROM jobs`)) as unknown as [
        Array<{ total: number; distinctPayloads: number }>,
      ];
      expect({ total: Number(rows!.total), distinctPayloads: Number(rows!.distinctPayloads) }).toEqual({ total: JOBS, distinctPayloads: JOBS });
      expect(unhandled).toEqual([]);
    } finally {
      await distant.close();
      await proxy.close();
    }
  });
});
