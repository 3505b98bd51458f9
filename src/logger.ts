import pino, { type Logger, type LoggerOptions } from 'pino';
import { driverMessage, isDriverError } from './db/errors.js';
import { redactSecrets } from './db/url.js';
import { DatabaseError } from './errors.js';

export type { Logger };

/** Paths pino censors wherever they appear: secrets never reach logs. */
export const REDACTED_PATHS = [
  'password', '*.password', 'token', '*.token', 'apiToken', '*.apiToken', 'databaseUrl', '*.databaseUrl',
  'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization', 'connection.password',
];

export interface CreateLoggerOptions {
  level?: LoggerOptions['level'];
  /** Human-readable lines (pino-pretty); defaults to true on a terminal. */
  pretty?: boolean;
  destination?: NodeJS.WritableStream;
}

/**
 * A pino logger that censors secrets (passwords, tokens, database URLs) wherever they appear.
 *
 * @example
 * const mq = createMailq({ databaseUrl, logger: createLogger({ level: 'warn' }) });
 */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const pretty = options.pretty ?? Boolean(process.stderr.isTTY);
  const base: LoggerOptions = {
    level: options.level ?? 'info',
    base: { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: { err: (error: unknown) => serializeError(error) },
  };
  if (pretty && !options.destination) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(base, (options.destination as pino.DestinationStream | undefined) ?? pino.destination(2));
}

/**
 * An error as mailq's logs show it. knex writes the whole statement, values included, in front of
 * a failed query's message, and so into its stack (mysql2 keeps it in `sql` too): for a bulk INSERT
 * that is every payload of a chunk. A driver's error is logged with its own words, its codes and its
 * stack frames; a DatabaseError (whose cause such an error is) with its short message. pino's own
 * serializer appends every cause's message and stack to the error's: here each cause is logged the
 * same way under `cause`. A URL in a message or stack is logged with its password masked.
 */
export function serializeError(error: unknown, depth = 0): unknown {
  const serialized = pino.stdSerializers.err(error as Error) as unknown as Record<string, unknown>;
  if (!serialized || typeof serialized !== 'object') return serialized;
  const { sql: _statement, ...fields } = serialized;
  if (!(error instanceof Error)) return { ...fields, message: masked(fields.message), stack: masked(fields.stack) };
  const quotesStatement = isDriverError(error) && !(error instanceof DatabaseError);
  const message = quotesStatement ? driverMessage(error) : error.message;
  const stack = quotesStatement ? error.stack?.split('\n').filter((line) => /^\s+at /.test(line)).join('\n') : error.stack;
  const logged: Record<string, unknown> = { ...fields, message: masked(message), stack: masked(stack) };
  if (error.cause !== undefined && depth < MAX_CAUSES) logged.cause = serializeError(error.cause, depth + 1);
  return logged;
}

/** Causes logged below an error at most: enough for any chain mailq builds, finite for one that refers to itself. */
const MAX_CAUSES = 4;

function masked(value: unknown): unknown {
  return typeof value === 'string' ? redactSecrets(value) : value;
}

/**
 * An app's own logger as mailq logs through it: errors serialized by serializeError, whatever
 * serializer the app's pino has (its default would print a failed INSERT's whole statement).
 *
 * @example
 * const logger = withErrorSerializer(appLogger); // what createMailq({ logger: appLogger }) logs with
 */
export function withErrorSerializer(logger: Logger): Logger {
  return logger.child({}, { serializers: { err: (error: unknown) => serializeError(error) } });
}
