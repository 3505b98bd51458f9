import { DatabaseError, MailqError } from '../errors.js';

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
  sqlState?: string;
  sqlMessage?: string;
  message?: string;
  /** The statement mysql2 sent, values included. */
  sql?: string;
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
  const { code, errno } = (error ?? {}) as SqlError;
  if (errno === ER.NO_SUCH_TABLE) {
    return new MailqError(`${driverMessage(error)}: run \`mailq migrate\` first`, { cause: error });
  }
  if (errno === ER.BAD_DB) return new MailqError(`${driverMessage(error)} (database URL ${redactedUrl}): create it first`, { cause: error });
  if (errno === ER.ACCESS_DENIED) return new MailqError(`access denied for ${redactedUrl}: check the user and password`, { cause: error });
  if (errno === ER.PACKET_TOO_LARGE) {
    return new MailqError("too large: the statement is bigger than the server's max_allowed_packet (a job's payload must fit in it: store large data elsewhere and pass its id)", { exitCode: 2, cause: error });
  }
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH') {
    return new MailqError(`cannot reach the database at ${redactedUrl} (${code}): is MySQL/MariaDB running?`, { cause: error });
  }
  return undefined;
}

/**
 * At most this much of a driver's message is kept: a server's message may quote a value (the key
 * of a duplicate entry, a trigger's SIGNAL text), and a message this function could not separate
 * from its statement would otherwise be the statement itself.
 */
const MAX_REASON_LENGTH = 300;

/** The driver's own message of each failed statement on mailq's pools, noted before knex rewrites it. */
const driverMessages = new WeakMap<object, string>();

/**
 * Notes a failed statement's message as the driver gave it. knex then writes the whole statement,
 * values included, in front of it (`<statement> - <message>`); see src/db/client.ts.
 */
export function noteDriverMessage(error: unknown): void {
  if (error instanceof Error) driverMessages.set(error, error.message);
}

/**
 * The driver's own words for a failed statement, without the statement knex writes in front of
 * them, at most MAX_REASON_LENGTH characters: "Lock wait timeout exceeded; try restarting transaction".
 */
export function driverMessage(error: unknown): string {
  if (error instanceof DatabaseError) return driverMessage(error.cause);
  const { sqlMessage, message, sql } = (error ?? {}) as SqlError;
  const noted = error instanceof Error ? driverMessages.get(error) : undefined;
  const own = noted ?? sqlMessage ?? withoutStatement(typeof message === 'string' ? message : String(error), sql);
  return own.length > MAX_REASON_LENGTH ? `${own.slice(0, MAX_REASON_LENGTH - 1)}…` : own;
}

/**
 * A message of knex's form without its statement. Errors on mailq's own pools had their driver's
 * message noted first; an app's knex (which dispatch may run on) leaves only this form: strip the
 * statement mysql2 says it sent, else, for a long message, keep what follows the last " - ".
 */
function withoutStatement(message: string, sql: string | undefined): string {
  if (typeof sql === 'string' && message.startsWith(`${sql} - `)) return message.slice(sql.length + 3);
  const separator = message.lastIndexOf(' - ');
  return separator >= 0 && message.length > MAX_REASON_LENGTH ? message.slice(separator + 3) : message;
}

/** The driver's message and the server's error number (or the driver's code when the server gave none). */
function reasonOf(error: unknown): string {
  const { errno, code } = error as SqlError;
  const tag = typeof errno === 'number' && errno > 0 ? String(errno) : code;
  return tag ? `${driverMessage(error)} (${tag})` : driverMessage(error);
}

/** Errors of the server, the driver or the connection (a DatabaseError describes one). */
export function isDriverError(error: unknown): error is Error & SqlError {
  if (!(error instanceof Error)) return false;
  const { errno, sqlMessage } = error as SqlError;
  return typeof errno === 'number' || typeof sqlMessage === 'string' || isConnectionError(error);
}

/**
 * A statement named by its verb and first table, never by a value it holds: "INSERT INTO `jobs`",
 * "SELECT … FROM `jobs`", "UPDATE `jobs`", "COMMIT". Only the text before the first quote or
 * placeholder is read: in every statement mailq sends, the tables come before the values.
 */
export function statementSummary(sql: string): string {
  // The claim sends `START TRANSACTION; SELECT …` as one text: name the SELECT.
  const text = sql.replace(/^\s*(?:START\s+TRANSACTION|BEGIN)\s*;\s*/i, '');
  const head = text.slice(0, text.search(/['"?]|$/)).replace(/\s+/g, ' ').trim();
  const verb = /^\w+/.exec(head)?.[0]?.toUpperCase();
  if (!verb) return 'statement';
  const target = /\b(FROM|INTO|UPDATE|TABLE) (`[^`]+`|\w+)/i.exec(head);
  if (!target) return verb;
  const keyword = target[1]!.toUpperCase();
  if (keyword === verb) return `${verb} ${target[2]}`;
  const skipped = head.slice(verb.length, target.index).trim() !== '';
  return `${verb}${skipped ? ' …' : ''} ${keyword} ${target[2]}`;
}

/**
 * A failed statement as a DatabaseError: one short line naming the statement (see statementSummary)
 * and the reason, with the driver's error as cause. Errors of any other kind are returned as they are.
 */
export function statementError(error: unknown, sql: string | undefined): unknown {
  if (error instanceof DatabaseError || !isDriverError(error)) return error;
  const { errno, code, sqlState } = error;
  return new DatabaseError(sql === undefined ? '' : statementSummary(sql), reasonOf(error), { errno: typeof errno === 'number' ? errno : undefined, code, sqlState, cause: error });
}

/**
 * A database error as a DatabaseError whose message begins with what mailq was doing, e.g.
 * "dispatch of 'note' to queue 'default'"; errors of any other kind (a bad payload, a bug) are
 * returned as they are. A driver's error that reached here without passing mailq's client (an
 * app's knex) is named by the statement mysql2 says it sent.
 */
export function inOperation(operation: string, error: unknown): unknown {
  const failure = statementError(error, (error as SqlError | undefined)?.sql);
  if (!(failure instanceof DatabaseError)) return failure;
  const within = failure.operation ? `${operation}: ${failure.operation}` : operation;
  return new DatabaseError(within, failure.reason, { errno: failure.errno, code: failure.code, sqlState: failure.sqlState, cause: failure.cause });
}

/**
 * What `work` returns; a database failure of it as a DatabaseError naming `operation` (see inOperation).
 *
 * @example
 * return asOperation(`dispatch of '${name}' to queue '${queue}'`, () => insert(row));
 */
export async function asOperation<T>(operation: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw inOperation(operation, error);
  }
}
