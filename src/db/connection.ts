import knexFactory, { type Knex } from 'knex';
import { ConfigError } from '../errors.js';
import { MailqMysql2Client } from './client.js';
import { parseDatabaseUrl, type DatabaseAddress } from './url.js';
import { PoolHealth, type PooledConnection } from './pool-health.js';
import { probeThread, watchForStalls, type WatchedConnection } from './stall-check.js';

export type { Knex };

export interface ConnectOptions {
  poolMax?: number;
  /**
   * Statements run on each new connection of the pool, before mailq's own session settings (which
   * win where they meet: the time zone). For what mailq's sessions need from your set-up: a role,
   * a lock wait timeout, `wsrep_sync_wait`.
   */
  sessionSetup?: readonly string[];
}

/** mysql2 connection options: an object, or a function returning one (knex's connection provider form). */
type ConnectionSettings = Record<string, unknown>;
type ConnectionSource = ConnectionSettings | (() => ConnectionSettings | Promise<ConnectionSettings>);

/** Defaults of the URL's `connectTimeout` and `stallCheck`. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_STALL_CHECK_MS = 5_000;

/**
 * A knex pool on mysql2. Sessions run in UTC so DATETIME values mean the same thing on every
 * host; queue times come from the database clock (NOW(3)), never from a worker's clock.
 *
 * @example
 * const db = connect(process.env.DATABASE_URL!);       // the app's own pool, shared with mailq
 * const mq = createMailq({ knex: db });
 */
export function connect(databaseUrl: string, options: ConnectOptions = {}): Knex {
  const address = parseDatabaseUrl(databaseUrl);
  return mailqPool({ ...mysqlConnectionOptions(address), connectTimeout: address.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS }, options, address.stallCheckMs ?? DEFAULT_STALL_CHECK_MS);
}

/**
 * mailq's own pool to the database an app's knex reaches: the same server, user and database,
 * with the session settings mailq needs (UTC, several statements per round trip). The app's pool
 * is left as it is; mailq never sends stacked statements over it.
 *
 * @example
 * const own = poolLike(appKnex, { poolMax: 5 }); // mailq's claims, controls and reads; appKnex keeps serving the app
 */
export function poolLike(appKnex: Knex, options: ConnectOptions = {}): Knex {
  const client = appKnex.client as { dialect?: string; config?: { connection?: unknown } };
  if (client.dialect !== 'mysql') throw new ConfigError(`createMailq({ knex }): mailq runs on MySQL/MariaDB, and this knex's client is '${client.dialect ?? 'unknown'}' (use the mysql2 client)`);
  // The app's pool.afterCreate is not run: it was written for the app's sessions (it may turn
  // autocommit off, change the character set, count connections). What mailq's sessions need from
  // it is passed explicitly, as options.sessionSetup.
  const connection = client.config?.connection;
  if (typeof connection === 'function') {
    const provide = connection as () => ConnectionSettings | Promise<ConnectionSettings>;
    return mailqPool(async () => ({ ...(await provide()) }), options, DEFAULT_STALL_CHECK_MS);
  }
  if (typeof connection !== 'object' || connection === null) throw new ConfigError("createMailq({ knex }): this knex has no connection settings mailq can read; pass createMailq({ databaseUrl }) instead");
  return mailqPool({ ...(connection as ConnectionSettings) }, options, DEFAULT_STALL_CHECK_MS);
}

/** The mysql2 connection a new session arrives as in knex's `pool.afterCreate`. */
type Session = WatchedConnection & PooledConnection;
type Callback = (error: unknown, results?: unknown) => void;

/** mailq's own session settings: sessions run in UTC. */
const MAILQ_SESSION_SETTINGS = "SET time_zone = '+00:00'";

function mailqPool(connection: ConnectionSource, options: ConnectOptions, stallCheckMs: number): Knex {
  const sessionSetup = checkedSessionSetup(options.sessionSetup);
  const withSessionSettings = (settings: ConnectionSettings) => ({
    ...settings,
    timezone: 'Z',
    charset: 'utf8mb4',
    supportBigNumbers: true,
    connectTimeout: settings.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS,
    // The claim sends `START TRANSACTION; SELECT …` as one round trip (every value is a bound parameter).
    multipleStatements: true,
  });
  // The stall check's probe opens a connection like the pool's: the settings last handed to the pool.
  let latest: ConnectionSettings = typeof connection === 'function' ? {} : withSessionSettings(connection);
  const provide =
    typeof connection === 'function'
      ? async () => {
          latest = withSessionSettings(await connection());
          return latest;
        }
      : latest;
  const health = new PoolHealth();
  const afterCreate = (session: Session, done: (error: unknown, session: unknown) => void) => {
    health.watch(session);
    runInOrder(session, [...sessionSetup, MAILQ_SESSION_SETTINGS], (error) => {
      if (error || stallCheckMs <= 0) return done(error, session);
      // The check finds this session in the server's processlist by its id. Behind a pooling proxy
      // (ProxySQL) the id the handshake gave is the proxy's, not the server's: leave such a connection unwatched.
      const settings = latest;
      session.query('SELECT CONNECTION_ID() AS id', ((idError: unknown, rows: unknown) => {
        if (!idError && Number((rows as Array<{ id: number }>)[0]?.id) === session.threadId) {
          watchForStalls(session, { afterMs: stallCheckMs, askServer: (threadId, drop) => probeThread(settings, threadId, stallCheckMs, drop) });
        }
        done(idError, session);
      }) as Callback);
    });
  };
  return knexFactory({
    client: MailqMysql2Client,
    connection: provide,
    pool: { min: 0, max: options.poolMax ?? 10, afterCreate, validate: (session: Session) => health.mayHandOut(session) },
    acquireConnectionTimeout: 15_000,
    // knex would print connection errors to the console itself; callers report them once, clearly.
    log: { warn: noop, error: noop, debug: noop, deprecate: noop },
  });
}

function runInOrder(session: Session, statements: readonly string[], done: (error: unknown) => void): void {
  const [first, ...rest] = statements;
  if (first === undefined) return done(null);
  session.query(first, ((error: unknown) => (error ? done(error) : runInOrder(session, rest, done))) as Callback);
}

function checkedSessionSetup(statements: unknown): readonly string[] {
  if (statements === undefined) return [];
  if (!Array.isArray(statements) || !statements.every((statement) => typeof statement === 'string' && statement.trim() !== '')) {
    throw new ConfigError('sessionSetup: expected a list of SQL statements, e.g. ["SET SESSION innodb_lock_wait_timeout = 5"]');
  }
  return statements;
}

function noop(): void {}

/** What mysql2 needs to reach the server a URL names: TCP or Unix socket, TLS if asked. */
export function mysqlConnectionOptions(address: DatabaseAddress) {
  return {
    host: address.host,
    port: address.port,
    user: address.user,
    password: address.password,
    ...(address.database ? { database: address.database } : {}),
    ...(address.socketPath ? { socketPath: address.socketPath } : {}),
    ...(address.ssl ? { ssl: address.ssl } : {}),
  };
}
