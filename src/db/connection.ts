import knexFactory, { type Knex } from 'knex';
import { parseDatabaseUrl, type DatabaseAddress } from './url.js';

export type { Knex };

export interface ConnectOptions {
  poolMax?: number;
}

/**
 * A knex pool on mysql2. Sessions run in UTC so DATETIME values mean the same thing on every
 * host; queue times come from the database clock (NOW(3)), never from a worker's clock.
 */
export function connect(databaseUrl: string, options: ConnectOptions = {}): Knex {
  return knexFactory({
    client: 'mysql2',
    connection: {
      ...mysqlConnectionOptions(parseDatabaseUrl(databaseUrl)),
      timezone: 'Z',
      charset: 'utf8mb4',
      supportBigNumbers: true,
      connectTimeout: 10_000,
      // The claim sends `START TRANSACTION; SELECT …` as one round trip (every value is a bound parameter).
      multipleStatements: true,
    },
    pool: {
      min: 0,
      max: options.poolMax ?? 10,
      afterCreate(connection: { query: (sql: string, cb: (error: unknown) => void) => void }, done: (error: unknown, connection: unknown) => void) {
        connection.query("SET time_zone = '+00:00'", (error) => done(error, connection));
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
