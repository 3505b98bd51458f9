import knexFactory, { type Knex } from 'knex';
import { ConfigError } from '../errors.js';
import { parseDatabaseUrl, type DatabaseAddress } from './url.js';

export type { Knex };

export interface ConnectOptions {
  poolMax?: number;
}

/** mysql2 connection options: an object, or a function returning one (knex's connection provider form). */
type ConnectionSettings = Record<string, unknown>;
type ConnectionSource = ConnectionSettings | (() => ConnectionSettings | Promise<ConnectionSettings>);

/**
 * A knex pool on mysql2. Sessions run in UTC so DATETIME values mean the same thing on every
 * host; queue times come from the database clock (NOW(3)), never from a worker's clock.
 */
export function connect(databaseUrl: string, options: ConnectOptions = {}): Knex {
  return mailqPool(mysqlConnectionOptions(parseDatabaseUrl(databaseUrl)), options);
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
  const connection = client.config?.connection;
  if (typeof connection === 'function') {
    const provide = connection as () => ConnectionSettings | Promise<ConnectionSettings>;
    return mailqPool(async () => ({ ...(await provide()) }), options);
  }
  if (typeof connection !== 'object' || connection === null) throw new ConfigError("createMailq({ knex }): this knex has no connection settings mailq can read; pass createMailq({ databaseUrl }) instead");
  return mailqPool({ ...(connection as ConnectionSettings) }, options);
}

function mailqPool(connection: ConnectionSource, options: ConnectOptions): Knex {
  const withSessionSettings = (settings: ConnectionSettings) => ({
    ...settings,
    timezone: 'Z',
    charset: 'utf8mb4',
    supportBigNumbers: true,
    connectTimeout: settings.connectTimeout ?? 10_000,
    // The claim sends `START TRANSACTION; SELECT …` as one round trip (every value is a bound parameter).
    multipleStatements: true,
  });
  return knexFactory({
    client: 'mysql2',
    connection: typeof connection === 'function' ? async () => withSessionSettings(await connection()) : withSessionSettings(connection),
    pool: {
      min: 0,
      max: options.poolMax ?? 10,
      afterCreate(session: { query: (sql: string, cb: (error: unknown) => void) => void }, done: (error: unknown, session: unknown) => void) {
        session.query("SET time_zone = '+00:00'", (error) => done(error, session));
      },
    },
    acquireConnectionTimeout: 15_000,
    // knex would print connection errors to the console itself; callers report them once, clearly.
    log: { warn: noop, error: noop, debug: noop, deprecate: noop },
  });
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
