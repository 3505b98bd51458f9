import { describe, expect, it } from 'vitest';
import { isLockConflict } from '../src/db/errors.js';
import { withDatabaseRetry } from '../src/db/retry.js';

/** An error shaped as mysql2 reports a server error. */
function serverError(errno: number, code: string, message: string): Error & { errno: number } {
  return Object.assign(new Error(message), { errno, code, sqlMessage: message });
}

// No Group Replication cluster is available here: these are the errors as the servers document them.
const deadlock = serverError(1213, 'ER_LOCK_DEADLOCK', 'Deadlock found when trying to get lock; try restarting transaction');
const certificationConflict = serverError(3101, 'ER_TRANSACTION_ROLLBACK_DURING_COMMIT', 'Plugin instructed the server to rollback the current transaction.');
const duplicate = serverError(1062, 'ER_DUP_ENTRY', "Duplicate entry 'x' for key 'jobs_unique_key_unique'");

describe('conflicts that a retry of the transaction resolves', () => {
  it('are deadlocks, lock-wait timeouts, NOWAIT failures, and a Group Replication certification conflict at COMMIT', () => {
    expect(isLockConflict(deadlock)).toBe(true);
    expect(isLockConflict(serverError(1205, 'ER_LOCK_WAIT_TIMEOUT', 'Lock wait timeout exceeded; try restarting transaction'))).toBe(true);
    expect(isLockConflict(serverError(3572, 'ER_LOCK_NOWAIT', 'Statement aborted because lock(s) could not be acquired immediately and NOWAIT is set.'))).toBe(true);
    expect(isLockConflict(certificationConflict)).toBe(true);
    expect(isLockConflict(duplicate)).toBe(false);
    expect(isLockConflict(new Error('plain'))).toBe(false);
  });

  it('withDatabaseRetry runs the unit again after a certification conflict, as after a deadlock', async () => {
    for (const conflict of [deadlock, certificationConflict]) {
      let runs = 0;
      const retried: number[] = [];
      const result = await withDatabaseRetry(
        async () => {
          if (++runs === 1) throw conflict;
          return 'committed';
        },
        { onRetry: (error) => retried.push((error as { errno: number }).errno) },
      );
      expect(result).toBe('committed');
      expect(runs).toBe(2);
      expect(retried).toEqual([conflict.errno]);
    }
  });

  it('withDatabaseRetry surfaces any other error at once', async () => {
    let runs = 0;
    await expect(
      withDatabaseRetry(async () => {
        runs++;
        throw duplicate;
      }),
    ).rejects.toBe(duplicate);
    expect(runs).toBe(1);
  });
});
