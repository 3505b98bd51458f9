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

// Placeholders in <>: text that reads as a URL with a password would itself be masked when printed.
const EXPECTED = 'expected mysql://<user>:<password>@<host>:3306/<database>';
/** A Map, not an object: `ssl=toString` must not find Object.prototype's members. */
const SSL_MODES = new Map<string, DatabaseAddress['ssl']>([
  ['true', { rejectUnauthorized: true }],
  ['required', { rejectUnauthorized: true }],
  ['skip-verify', { rejectUnauthorized: false }],
  ['false', undefined],
]);

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
  const decode = (part: string, what: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      throw new ConfigError(`invalid database URL '${redactUrl(text)}': the ${what} has a bad %-escape (write % as %25)`);
    }
  };
  const port = url.port ? Number(url.port) : 3306;
  return {
    host: url.hostname || '127.0.0.1',
    port,
    user: decode(url.username || 'root', 'user'),
    password: decode(url.password, 'password'),
    database: decode(url.pathname.replace(/^\//, ''), 'database name'),
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
    else if (key === 'ssl' && SSL_MODES.has(value)) options.ssl = SSL_MODES.get(value);
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

const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * The URL with its password replaced by `***`: the one function every printed URL goes through
 * (errors, logs, the demo, doctor, status). The password is the one the URL parser finds, which
 * splits user info at the last `@` of the authority, so `p@ss`, `p:ss`, `p%40ss` and unicode are
 * masked whole. Text the parser refuses, or whose path still holds an `@` (a `/` in the password
 * ends the authority early), is masked up to its last `@` instead: more than needed, never less.
 *
 * @example
 * redactUrl('mysql://app:p@ss@db:3306/queue'); // 'mysql://app:***@db:3306/queue'
 */
export function redactUrl(text: string): string {
  const scheme = SCHEME.exec(text)?.[0];
  if (!scheme) return text;
  const rest = text.slice(scheme.length);
  const authorityEnd = rest.search(/[/?#]/);
  const afterAuthority = authorityEnd === -1 ? '' : rest.slice(authorityEnd);
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (url && !afterAuthority.includes('@')) {
    if (!url.password) return text;
    url.password = '***';
    return url.href;
  }
  const lastAt = rest.lastIndexOf('@');
  if (lastAt !== -1) {
    const colon = rest.indexOf(':');
    const user = colon !== -1 && colon < lastAt ? rest.slice(0, colon + 1) : '';
    return `${scheme}${user}***${rest.slice(lastAt)}`;
  }
  // No user info at all, but unparsable: `mysql://root:secret` (host forgotten) reads as host:port.
  const authority = authorityEnd === -1 ? rest : rest.slice(0, authorityEnd);
  const colon = authority.indexOf(':');
  if (colon !== -1 && !/^\d*$/.test(authority.slice(colon + 1))) return `${scheme}${authority.slice(0, colon + 1)}***${afterAuthority}`;
  return text;
}

/**
 * Free text (an error message, a stack) with every URL in it masked by redactUrl, and the given
 * secrets (a configured URL's password, decoded and as written) replaced by `***` wherever they appear.
 */
export function redactSecrets(text: string, urls: ReadonlyArray<string | undefined> = []): string {
  let result = text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s'"`<>]+/gi, (found) => redactUrl(found));
  for (const secret of urls.flatMap(passwordsOf)) result = result.split(secret).join('***');
  return result;
}

/** A URL's password as written and decoded (both may appear in text), if it has one worth hiding. */
function passwordsOf(text: string | undefined): string[] {
  if (!text) return [];
  let raw: string;
  try {
    raw = new URL(text).password;
  } catch {
    return [];
  }
  let decoded = raw;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    // A bad escape: the raw form is all there is.
  }
  // Very short passwords would mask ordinary letters all over the message; the URL itself is masked above.
  return [...new Set([raw, decoded])].filter((secret) => secret.length >= 4);
}

/** The same server and credentials, another database: tests and tools create sibling databases. */
export function withDatabase(text: string, database: string): string {
  const url = new URL(text);
  url.pathname = `/${database}`;
  return url.toString();
}
