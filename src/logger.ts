import pino, { type Logger, type LoggerOptions } from 'pino';
import { redactSecrets } from './db/url.js';

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
    serializers: { err: serializeError },
  };
  if (pretty && !options.destination) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(base, (options.destination as pino.DestinationStream | undefined) ?? pino.destination(2));
}

/**
 * knex puts the whole statement in a failed query's message (and mysql2 in `sql`): with bulk
 * statements that is kilobytes of values per log line. Keep the server's own message and codes.
 * A URL in a message or stack is logged with its password masked.
 */
export function serializeError(error: unknown): unknown {
  const serialized = pino.stdSerializers.err(error as Error) as unknown as Record<string, unknown>;
  if (!serialized || typeof serialized !== 'object') return serialized;
  const { sql, ...rest } = serialized;
  const sqlMessage = rest.sqlMessage;
  const masked = (value: unknown) => (typeof value === 'string' ? redactSecrets(value) : value);
  if (sql === undefined && sqlMessage === undefined) return { ...serialized, message: masked(serialized.message), stack: masked(serialized.stack) };
  const message = typeof sqlMessage === 'string' ? sqlMessage : rest.message;
  const stack = typeof rest.stack === 'string' ? rest.stack.split('\n').filter((line) => /^\s+at /.test(line)).join('\n') : rest.stack;
  return { ...rest, message: masked(message), stack: masked(stack) };
}
