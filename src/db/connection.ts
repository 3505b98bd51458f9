import knexFactory, { type Knex } from 'knex';
import { parseDatabaseUrl, type DatabaseAddress } from './url.js';
import { probeThread, watchForStalls, type WatchedConnection } from './stall-check.js';

export type { Knex };

export interface ConnectOptions {
  poolMax?: number;
}

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
  const settings = {
    ...mysqlConnectionOptions(address),
    timezone: 'Z',
    charset: 'utf8mb4',
    supportBigNumbers: true,
    connectTimeout: address.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    // The claim sends `START TRANSACTION; SELECT …` as one round trip (every value is a bound parameter).
    multipleStatements: true,
  };
  const stallCheckMs = address.stallCheckMs ?? DEFAULT_STALL_CHECK_MS;
  return knexFactory({
    client: 'mysql2',
    connection: settings,
    pool: {
      min: 0,
      max: options.poolMax ?? 10,
      afterCreate(connection: WatchedConnection, done: (error: unknown, connection: unknown) => void) {
        connection.query("SET time_zone = '+00:00'", (error: unknown) => {
          if (error || stallCheckMs <= 0) return done(error, connection);
          // The check finds this session in the server's processlist by its id. Behind a pooling proxy
          // (ProxySQL) the id the handshake gave is the proxy's, not the server's: leave such a connection unwatched.
          connection.query('SELECT CONNECTION_ID() AS id', (idError: unknown, rows: unknown) => {
            if (!idError && Number((rows as Array<{ id: number }>)[0]?.id) === connection.threadId) {
              watchForStalls(connection, { afterMs: stallCheckMs, askServer: (threadId, drop) => probeThread(settings, threadId, stallCheckMs, drop) });
            }
            done(idError, connection);
          });
        });
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
