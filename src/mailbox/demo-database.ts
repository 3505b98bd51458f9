import mysql from 'mysql2/promise';
import { parseDatabaseUrl, parseServerUrl, withDatabase } from '../db/url.js';
import { mysqlConnectionOptions } from '../db/connection.js';
import { MailqError } from '../errors.js';
import { findDatabaseServer } from '../localdb/find-server.js';

export const DEMO_DATABASE = 'mailq_demo';
/** In a database the user configured, the demo's tables carry this prefix and never touch the app's. */
export const DEMO_TABLE_PREFIX = 'mailq_demo_';

export interface DemoDatabase {
  url: string;
  tablePrefix: string;
  /** Where the demo runs, in words (password redacted). */
  description: string;
  /** A database of the demo's own: emptied before the run and dropped after (unless kept). */
  dedicated: boolean;
  /** The data disappears with the process (a throwaway server): --keep cannot keep it. */
  ephemeral: boolean;
  /** Drops the dedicated database unless kept; stops a throwaway server. */
  close(keep: boolean): Promise<void>;
}

/**
 * The demo's database: the configured one (MAILQ_DATABASE_URL) if any, with prefixed tables; else
 * a `mailq_demo` database on the local server (root at 127.0.0.1:3306); else a throwaway server
 * started from local MariaDB/MySQL binaries; else an error that says how to get one.
 */
export async function openDemoDatabase(configuredUrl: string | undefined, log: (line: string) => void = () => {}): Promise<DemoDatabase> {
  if (configuredUrl) {
    return {
      url: configuredUrl,
      tablePrefix: DEMO_TABLE_PREFIX,
      description: `the configured database ${parseDatabaseUrl(configuredUrl).redacted} (tables ${DEMO_TABLE_PREFIX}*)`,
      dedicated: false,
      ephemeral: false,
      close: async () => {},
    };
  }
  let server;
  try {
    server = await findDatabaseServer({ envName: 'MAILQ_DATABASE_URL', allowContainer: false, allowThrowaway: true, log });
  } catch (error) {
    throw new MailqError((error as Error).message);
  }
  const url = withDatabase(server.url, DEMO_DATABASE);
  try {
    await onServer(server.url, `DROP DATABASE IF EXISTS \`${DEMO_DATABASE}\``);
    await onServer(server.url, `CREATE DATABASE \`${DEMO_DATABASE}\` CHARACTER SET utf8mb4`);
  } catch (error) {
    await server.stop();
    throw new MailqError(`cannot create the demo database on ${parseDatabaseUrl(url).redacted}: ${(error as Error).message}`);
  }
  const ephemeral = server.source === 'throwaway';
  const where = ephemeral ? `a throwaway ${server.version} server started for this demo` : `the local server ${server.version}`;
  return {
    url,
    tablePrefix: '',
    description: `database ${DEMO_DATABASE} on ${where}`,
    dedicated: true,
    ephemeral,
    async close(keep) {
      try {
        if (!keep && !ephemeral) await onServer(server.url, `DROP DATABASE IF EXISTS \`${DEMO_DATABASE}\``);
      } finally {
        await server.stop();
      }
    },
  };
}

async function onServer(serverUrl: string, sql: string): Promise<void> {
  const connection = await mysql.createConnection({ ...mysqlConnectionOptions(parseServerUrl(withDatabase(serverUrl, ''))), connectTimeout: 10_000 });
  try {
    await connection.query(sql);
  } finally {
    await connection.end();
  }
}
