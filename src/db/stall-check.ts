import mysql from 'mysql2/promise';
import { isConnectionError } from './errors.js';
import { observeStatements, type ObservableConnection } from './statement-replies.js';

/** The error code of a statement whose connection was dropped as stalled. */
export const STALLED_CONNECTION = 'MAILQ_CONNECTION_STALLED';

/** The slice of a mysql2 callback connection the check wraps. */
export interface WatchedConnection extends ObservableConnection {
  threadId: number | null;
  stream: { destroy(error?: Error): void };
}

export type ThreadState = 'running' | 'idle' | 'unknown';

export interface StallCheckOptions {
  /** How long a statement may go without a reply before the server is asked about it. */
  afterMs: number;
  /**
   * Asks the server, over a connection of its own, what `threadId` is doing. When it is idle (the
   * statement never arrived, or its reply is lost), calls `drop` and then ends that session on
   * the server. Rejects when the server cannot be reached.
   */
  askServer(threadId: number, drop: () => void): Promise<ThreadState>;
}

/**
 * Bounds the wait for a reply on one connection without cutting slow statements short.
 *
 * A connection that stalls (a partition, a failover that black-holes the old address) neither
 * answers nor closes, and TCP keepalive cannot see it while a statement is in flight (and never
 * through a proxy that keeps its side open), so a plain wait lasts forever. A fixed query timeout
 * would also kill honest slow statements (lock waits of up to innodb_lock_wait_timeout, a long
 * migration). So: when no reply has come for `afterMs`, ask the server over a fresh connection
 * what this connection's thread is doing. Still running: wait on. Idle or unknown to the server,
 * or the server unreachable within the probe's own timeout: the reply will never come, so the
 * socket is destroyed; the statement fails with a connection error (its callers retry those) and
 * the pool, which validates connections on checkout, drops it. The idle session is then killed on
 * the server, which would otherwise keep it, and whatever it locked, until wait_timeout.
 */
export function watchForStalls(connection: WatchedConnection, options: StallCheckOptions): void {
  let waiting = 0;
  /** When this connection last showed it works: a reply, or the server confirming it is busy for us. */
  let lastSignOfLife = 0;
  let timer: NodeJS.Timeout | undefined;
  let checking = false;

  const schedule = () => {
    if (timer || checking || waiting === 0) return;
    timer = setTimeout(check, Math.max(0, lastSignOfLife + options.afterMs - Date.now()));
    timer.unref();
  };

  const check = () => {
    timer = undefined;
    if (waiting === 0) return;
    if (Date.now() - lastSignOfLife < options.afterMs) return schedule();
    const threadId = connection.threadId;
    if (threadId === null) return;
    const before = lastSignOfLife;
    checking = true;
    const stillStuck = () => waiting > 0 && lastSignOfLife === before;
    const dropIfStuck = () => stillStuck() && dropAsStalled(`the server is not running its statement (thread ${threadId})`);
    void options
      .askServer(threadId, dropIfStuck)
      .then((answer) => {
        checking = false;
        if (answer === 'running' && stillStuck()) lastSignOfLife = Date.now();
        schedule();
      })
      .catch((error: unknown) => {
        checking = false;
        if (stillStuck()) dropAsStalled(`the server could not be reached to check on it (${(error as Error).message})`);
        schedule();
      });
  };

  const dropAsStalled = (why: string) => {
    const seconds = ((Date.now() - lastSignOfLife) / 1000).toFixed(1);
    const error = Object.assign(new Error(`database connection stalled: no reply for ${seconds}s and ${why}; dropped it`), { code: STALLED_CONNECTION });
    connection.stream.destroy(error);
  };

  observeStatements(connection, () => {
    if (waiting++ === 0) lastSignOfLife = Date.now();
    schedule();
    return () => {
      waiting--;
      lastSignOfLife = Date.now();
    };
  });
}

/**
 * The probe behind `serverIsRunning`: a short-lived connection with the pool's settings that
 * reads the thread's row in the processlist (a user always sees its own threads).
 */
export async function probeThread(settings: mysql.ConnectionOptions, threadId: number, timeoutMs: number, drop: () => void): Promise<ThreadState> {
  let probe: mysql.Connection | undefined;
  try {
    probe = await mysql.createConnection({ ...settings, connectTimeout: timeoutMs, multipleStatements: false });
    const [rows] = (await probe.query({ sql: 'SELECT COMMAND AS command FROM information_schema.PROCESSLIST WHERE ID = ?', timeout: timeoutMs }, [threadId])) as unknown as [
      Array<{ command: string }>,
    ];
    const command = rows[0]?.command;
    if (command !== undefined && command !== 'Sleep') return 'running';
    drop();
    // Dropped on this side, the session would live on in the server (with an open claim's row locks,
    // which every other worker's SKIP LOCKED then skips) until wait_timeout: end it now.
    if (command === 'Sleep') await probe.query({ sql: 'KILL CONNECTION ?', timeout: timeoutMs }, [threadId]).catch(() => undefined);
    return 'idle';
  } catch (error) {
    // The server answered, with an error about the probe itself (too many connections, ...): no verdict.
    if (!isConnectionError(error)) return 'unknown';
    throw error;
  } finally {
    probe?.destroy();
  }
}
