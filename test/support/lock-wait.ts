import mysql from 'mysql2/promise';
import { connect } from '../../src/db/connection.js';
import { ER, errnoOf } from '../../src/db/errors.js';
import type { Mailq, MailqOptions } from '../../src/mailq.js';
import { openQueue } from './queue.js';

/**
 * Real lock waits for the tests of retried writes. The server is shared, so nothing here touches a
 * GLOBAL setting: the queue's own sessions give up on a row lock sooner, and another connection
 * holds the locks, as an operator's or another app's long transaction would.
 *
 * @example
 * const queue = openLockWaitQueue(db.url, 1, { jobs: [note] });
 * const result = await queue.underLockWait('jobs', () => queue.mq.dispatchMany(note, payloads));
 */

export interface LockWaitQueue {
  mq: Mailq;
  /** Lock-wait timeouts (1205) the queue's statements have met so far. */
  lockWaits(): number;
  /**
   * Runs `call` while another connection holds `SELECT id FROM <table> WHERE <where> FOR UPDATE`
   * (default `id > 0`: issue #9's gap lock, on every row and the gap above the last, so every
   * INSERT, UPDATE or DELETE of the table waits). The locks are released as soon as one of the
   * call's statements has timed out waiting for them, so the call is retried exactly because of
   * a real lock wait. Rejects if the call ends without meeting one.
   */
  underLockWait<T>(table: string, call: () => Promise<T>, rows?: { where: string; bindings?: unknown[] }): Promise<T>;
  close(): Promise<void>;
}

/** Never hold locks longer than this, whatever happens to the test. */
const MAX_HOLD_MS = 15_000;

/**
 * A queue on a pool set up exactly as mailq's own, whose sessions wait at most `lockWaitSeconds`
 * for a row lock (`innodb_lock_wait_timeout`, per session). mailq's own pool beside it gets the
 * same session set-up (sessionSetup), so every statement of the queue waits that long at most.
 */
export function openLockWaitQueue(url: string, lockWaitSeconds: number, options: Partial<MailqOptions> = {}): LockWaitQueue {
  const sessionSetup = [`SET SESSION innodb_lock_wait_timeout = ${Number(lockWaitSeconds)}`];
  const knex = connect(url, { sessionSetup });
  let lockWaits = 0;
  let onLockWait: (() => void) | undefined;
  const noteLockWait = (error: unknown) => {
    if (errnoOf(error) !== ER.LOCK_WAIT_TIMEOUT) return;
    lockWaits++;
    onLockWait?.();
  };
  // The app's knex serves dispatch; mailq's own pool, built like it (lock wait included), the rest.
  const mq = openQueue(url, { ...options, knex, sessionSetup });
  for (const pool of [knex, mq.knex]) pool.on('query-error', noteLockWait);
  return {
    mq,
    lockWaits: () => lockWaits,
    async underLockWait(table, call, rows) {
      const held = await holdRowLocks(url, table, rows);
      try {
        const metLockWait = new Promise<'lock wait'>((resolve) => (onLockWait = () => resolve('lock wait')));
        const pending = call();
        const first = await Promise.race([metLockWait, pending.then(() => 'returned', () => 'returned')]);
        await held.release();
        if (first !== 'lock wait') throw new Error(`the call ended without waiting for the locks held on ${table}`);
        return await pending;
      } finally {
        onLockWait = undefined;
        await held.release();
      }
    },
    close: async () => {
      await mq.close();
      await knex.destroy();
    },
  };
}

export interface HeldLocks {
  /** Commits the holder's transaction (once); resolves when its locks are gone. */
  release(): Promise<void>;
}

/**
 * Another connection takes row locks with `SELECT id FROM <table> WHERE <where> FOR UPDATE` and
 * holds them until release(). Resolves once the locks are held.
 */
export async function holdRowLocks(url: string, table: string, rows: { where: string; bindings?: unknown[] } = { where: 'id > 0' }): Promise<HeldLocks> {
  const connection = await mysql.createConnection({ uri: url });
  await connection.query('START TRANSACTION');
  await connection.query(`SELECT id FROM \`${table}\` WHERE ${rows.where} FOR UPDATE`, rows.bindings ?? []);
  let released: Promise<void> | undefined;
  const release = () => {
    clearTimeout(timer);
    released ??= connection.query('COMMIT').then(() => connection.end());
    return released;
  };
  const timer = setTimeout(() => void release(), MAX_HOLD_MS);
  return { release };
}
