import { ConfigError } from '../errors.js';

export interface DatabaseAddress {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** The URL with its password replaced by ***, safe for logs and error messages. */
  redacted: string;
}

const EXPECTED = 'expected mysql://user:password@host:3306/database';

export function parseDatabaseUrl(text: string): DatabaseAddress {
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
  if (!database || database.includes('/')) throw new ConfigError(`database URL '${redactUrl(text)}' names no database: ${EXPECTED}`);
  const port = url.port ? Number(url.port) : 3306;
  return {
    host: url.hostname || '127.0.0.1',
    port,
    user: decodeURIComponent(url.username || 'root'),
    password: decodeURIComponent(url.password),
    database,
    redacted: redactUrl(text),
  };
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
