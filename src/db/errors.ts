import { MailqError } from '../errors.js';

/** MySQL/MariaDB error numbers we branch on (mysql2 labels some of them misleadingly: use errno). */
export const ER = {
  DEADLOCK: 1213,
  LOCK_WAIT_TIMEOUT: 1205,
  LOCK_NOWAIT: 3572,
  /** MySQL Group Replication: the transaction lost a certification conflict with another primary's and was rolled back at COMMIT. */
  TRANSACTION_ROLLBACK_DURING_COMMIT: 3101,
  NO_SUCH_TABLE: 1146,
  BAD_DB: 1049,
  ACCESS_DENIED: 1045,
  DUP_ENTRY: 1062,
  PACKET_TOO_LARGE: 1153,
  NET_PACKETS_OUT_OF_ORDER: 1156,
  NET_READ_ERROR: 1158,
  NET_READ_INTERRUPTED: 1159,
  NET_ERROR_ON_WRITE: 1160,
  NET_WRITE_INTERRUPTED: 1161,
  SERVER_SHUTDOWN: 1053,
  CONNECTION_KILLED: 1927,
  QUERY_INTERRUPTED: 1317,
  GONE_AWAY: 2006,
  LOST: 2013,
  MARIADB_JSON_CHECK: 4025,
} as const;

interface SqlError {
  errno?: number;
  code?: string;
  sqlMessage?: string;
  message?: string;
}

export function errnoOf(error: unknown): number | undefined {
  return (error as SqlError | undefined)?.errno;
}

/**
 * Conflicts with another transaction that running the same unit again resolves: lock conflicts,
 * and the write conflicts a multi-primary cluster finds at COMMIT (Galera reports those as a
 * deadlock, Group Replication as 3101). Either way the server has rolled the unit back.
 */
export function isLockConflict(error: unknown): boolean {
  const errno = errnoOf(error);
  return errno === ER.DEADLOCK || errno === ER.LOCK_WAIT_TIMEOUT || errno === ER.LOCK_NOWAIT || errno === ER.TRANSACTION_ROLLBACK_DURING_COMMIT;
}

/**
 * Errors of the server's network layer: it sends one, then closes the connection (it cannot tell
 * where the next packet would start). The reply comes before the close, so a pool that has not yet
 * seen the close would hand the connection out again.
 */
const SESSION_ENDING = new Set<number>([ER.PACKET_TOO_LARGE, ER.NET_PACKETS_OUT_OF_ORDER, ER.NET_READ_ERROR, ER.NET_READ_INTERRUPTED, ER.NET_ERROR_ON_WRITE, ER.NET_WRITE_INTERRUPTED]);

/** The server answered with an error after which it ends the session. */
export function endsSession(error: unknown): boolean {
  const errno = errnoOf(error);
  return errno !== undefined && SESSION_ENDING.has(errno);
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST', 'PROTOCOL_SEQUENCE_TIMEOUT', 'ER_SERVER_SHUTDOWN', 'ER_CONNECTION_KILLED',
  // src/db/stall-check.ts dropped a connection that stopped answering.
  'MAILQ_CONNECTION_STALLED',
]);

/** The server went away or cannot be reached: workers wait and reconnect instead of dying. */
export function isConnectionError(error: unknown): boolean {
  const { code, errno, message } = (error ?? {}) as SqlError;
  if (code && CONNECTION_CODES.has(code)) return true;
  if (errno === ER.SERVER_SHUTDOWN || errno === ER.CONNECTION_KILLED || errno === ER.GONE_AWAY || errno === ER.LOST) return true;
  if (errno === ER.QUERY_INTERRUPTED) return true;
  return typeof message === 'string' && /Knex: Timeout acquiring a connection|connection is in closed state|Can't add new command when connection is in closed state/i.test(message);
}

/** Turns the database errors a user can fix into one readable line. */
export function explainDatabaseError(error: unknown, redactedUrl: string): MailqError | undefined {
  const { code, errno, sqlMessage } = (error ?? {}) as SqlError;
  if (errno === ER.NO_SUCH_TABLE) {
    return new MailqError(`${sqlMessage ?? 'a mailq table is missing'}: run \`mailq migrate\` first`, { cause: error });
  }
  if (errno === ER.BAD_DB) return new MailqError(`${sqlMessage} (database URL ${redactedUrl}): create it first`, { cause: error });
  if (errno === ER.ACCESS_DENIED) return new MailqError(`access denied for ${redactedUrl}: check the user and password`, { cause: error });
  if (errno === ER.PACKET_TOO_LARGE) {
    return new MailqError("too large: the statement is bigger than the server's max_allowed_packet (a job's payload must fit in it: store large data elsewhere and pass its id)", { exitCode: 2, cause: error });
  }
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH') {
    return new MailqError(`cannot reach the database at ${redactedUrl} (${code}): is MySQL/MariaDB running?`, { cause: error });
  }
  return undefined;
}
