import { parseDuration, type Duration } from './duration.js';

/**
 * Errors the CLI turns into one clear line and an exit code, instead of a stack trace.
 * `exitCode` 2 means "you asked for something invalid"; 1 means "it could not be done".
 *
 * @example
 * try { await mq.dispatch('send-email', payload); } catch (error) { if (error instanceof MailqError) process.exitCode = error.exitCode; }
 */
export class MailqError extends Error {
  readonly exitCode: number;
  constructor(message: string, options?: { exitCode?: number; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.name = new.target.name;
    this.exitCode = options?.exitCode ?? 1;
  }
}

/**
 * A setting, flag or URL that fails validation.
 *
 * @example
 * expect(() => createMailq({ databaseUrl: 'postgres://db/app' })).toThrow(ConfigError);
 */
export class ConfigError extends MailqError {
  constructor(message: string) {
    super(message, { exitCode: 2 });
  }
}

/**
 * A payload that fails its job's schema, or a job name nobody defined.
 *
 * @example
 * await expect(mq.dispatch(sendEmail, { userId: 'not a number' })).rejects.toThrow(InvalidJobError);
 */
export class InvalidJobError extends MailqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { exitCode: 2, cause: options?.cause });
  }
}

/**
 * A statement the database refused or could not finish. The message is one short line: what mailq
 * was doing, the statement by its verb and table, and the server's reason with its code, e.g.
 * "dispatchMany of 3,000 'note' jobs to queue 'default': chunk of 1,000 rows from index 1,000:
 * INSERT INTO `jobs`: Lock wait timeout exceeded; try restarting transaction (1205)". Never the
 * statement's values: a bulk INSERT holds every payload of its chunk. The driver's error is the
 * `cause`; its message starts with the whole statement, so print `reason`, not the cause's message.
 *
 * @example
 * try { await mq.dispatchMany(note, payloads); } catch (error) { if (error instanceof DatabaseError && error.errno === 1205) retryLater(); }
 */
export class DatabaseError extends MailqError {
  /** What mailq was doing, outermost first: the message up to the reason. */
  readonly operation: string;
  /** The server's (or driver's) reason and its code, e.g. "Lock wait timeout exceeded; try restarting transaction (1205)". */
  readonly reason: string;
  /** The server's error number (1205, 1213, …); a negative system errno, or none, when the connection failed. */
  readonly errno?: number;
  /** The driver's code: 'ER_LOCK_WAIT_TIMEOUT', 'PROTOCOL_CONNECTION_LOST', 'ECONNRESET', … */
  readonly code?: string;
  readonly sqlState?: string;
  constructor(operation: string, reason: string, details: { errno?: number; code?: string; sqlState?: string; cause: unknown }) {
    super(operation ? `${operation}: ${reason}` : reason, { cause: details.cause });
    this.operation = operation;
    this.reason = reason;
    this.errno = details.errno;
    this.code = details.code;
    this.sqlState = details.sqlState;
  }
}

/**
 * Thrown by a handler: the job can never succeed, so it goes to failed_jobs without further retries.
 *
 * @example
 * if (response.status === 404) throw new PermanentError(`no account ${accountId}`);
 */
export class PermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PermanentError';
  }
}

/**
 * Thrown by a handler (or via `ctx.defer`) to put the job back without counting the attempt,
 * e.g. when an upstream API answers 429: waiting must never exhaust a job's tries.
 *
 * @example
 * if (response.status === 429) throw new DeferJobError('30s', 'upstream rate limit');
 */
export class DeferJobError extends Error {
  readonly delayMs: number;
  /** `delay` as everywhere in mailq: a number of seconds, or a string with a unit ('500ms', '2m'). */
  constructor(delay: Duration, reason = 'deferred') {
    super(reason);
    this.name = 'DeferJobError';
    this.delayMs = Math.max(0, parseDuration(delay));
  }
}

/**
 * The attempt outlived its timeout (the error a worker records; the handler sees its signal abort).
 *
 * @example
 * worker.on('job:retrying', (job, error) => { if (error instanceof JobTimeoutError) console.warn(`job ${job.id} timed out`); });
 */
export class JobTimeoutError extends Error {
  constructor(timeoutMs: number) {
    super(`job timed out after ${timeoutMs} ms`);
    this.name = 'JobTimeoutError';
  }
}

/**
 * The reason a job's signal carries when its worker can no longer vouch for its reservation: the
 * lease could not be renewed before it ran out (a partition from the database), or another worker
 * took the job over. The worker writes nothing for that run; the job's next run is elsewhere.
 */
export class LeaseLostError extends Error {
  constructor(detail: string) {
    super(`lease lost: ${detail}`);
    this.name = 'LeaseLostError';
  }
}
