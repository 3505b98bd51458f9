import { ConfigError } from '../errors.js';
import { parseDuration } from '../duration.js';

export interface DatabaseAddress {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** `?socket=/run/mysqld/mysqld.sock`: a local server over its Unix socket instead of TCP (host and port are then unused). */
  socketPath?: string;
  /** `?ssl=true` (verify the server's certificate) or `?ssl=skip-verify` (encrypt only). */
  ssl?: { rejectUnauthorized: boolean };
  /** `?connectTimeout=5s`: how long opening a connection may take. */
  connectTimeoutMs?: number;
  /** `?stallCheck=5s` (or `off`): how long a statement may go without a reply before mailq checks that the server is still running it. */
  stallCheckMs?: number;
  /** The URL with its password replaced by ***, safe for logs and error messages. */
  redacted: string;
}

const EXPECTED = 'expected mysql://user:password@host:3306/database';
const SSL_MODES: Record<string, DatabaseAddress['ssl'] | undefined> = {
  true: { rejectUnauthorized: true },
  required: { rejectUnauthorized: true },
  'skip-verify': { rejectUnauthorized: false },
  false: undefined,
};

export function parseDatabaseUrl(text: string): DatabaseAddress {
  const address = parseServerUrl(text);
  if (!address.database || address.database.includes('/')) throw new ConfigError(`database URL '${redactUrl(text)}' names no database: ${EXPECTED}`);
  return address;
}

/** Like parseDatabaseUrl, but the database may be left out (`database` is then ''): for statements about the server itself. */
export function parseServerUrl(text: string): DatabaseAddress {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`invalid database URL '${redactUrl(text)}': ${EXPECTED}`);
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:') {
    throw new ConfigError(`unsupported database URL scheme '${url.protocol}' (mailq runs on MySQL/MariaDB): ${EXPECTED}`);
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  const port = url.port ? Number(url.port) : 3306;
  return {
    host: url.hostname || '127.0.0.1',
    port,
    user: decodeURIComponent(url.username || 'root'),
    password: decodeURIComponent(url.password),
    database,
    ...urlOptions(url, text),
    redacted: redactUrl(text),
  };
}

type UrlOptions = Pick<DatabaseAddress, 'socketPath' | 'ssl' | 'connectTimeoutMs' | 'stallCheckMs'>;

const SUPPORTED_OPTIONS = 'socket=<path>, ssl=true|skip-verify|false, connectTimeout=<duration>, stallCheck=<duration>|off';

/** The URL's query. An unknown option is an error, not silently ignored. */
function urlOptions(url: URL, text: string): UrlOptions {
  const options: UrlOptions = {};
  for (const [key, value] of url.searchParams) {
    if (key === 'socket' && value) options.socketPath = value;
    else if (key === 'ssl' && value in SSL_MODES) options.ssl = SSL_MODES[value];
    else if (key === 'ssl') throw new ConfigError(`database URL '${redactUrl(text)}': ssl=${value}: expected ssl=true, ssl=skip-verify or ssl=false`);
    else if (key === 'connectTimeout') options.connectTimeoutMs = urlDuration(key, value, text);
    else if (key === 'stallCheck') options.stallCheckMs = value === 'off' ? 0 : urlDuration(key, value, text);
    else throw new ConfigError(`database URL '${redactUrl(text)}': unknown option '${key}' (supported: ${SUPPORTED_OPTIONS})`);
  }
  return options;
}

function urlDuration(key: string, value: string, text: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new ConfigError(`database URL '${redactUrl(text)}': ${key}=${value}: ${(error as Error).message}`);
  }
}

export function redactUrl(text: string): string {
  return text.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@');
}

/** The same server and credentials, another database: tests and tools create sibling databases. */
export function withDatabase(text: string, database: string): string {
  const url = new URL(text);
  url.pathname = `/${database}`;
  return url.toString();
}
