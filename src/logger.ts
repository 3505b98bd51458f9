import pino, { type Logger, type LoggerOptions } from 'pino';

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

export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const pretty = options.pretty ?? Boolean(process.stderr.isTTY);
  const base: LoggerOptions = {
    level: options.level ?? 'info',
    base: { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  };
  if (pretty && !options.destination) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(base, (options.destination as pino.DestinationStream | undefined) ?? pino.destination(2));
}
