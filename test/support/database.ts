import { randomInt } from 'node:crypto';
import mysql from 'mysql2/promise';
import { inject } from 'vitest';
import { withDatabase } from '../../src/db/url.js';

export interface TestDatabase {
  /** The server URL (same user, password, host, port) with this database as its path. */
  url: string;
  name: string;
  /** Drops the database; safe to call twice. */
  drop(): Promise<void>;
}

const MAX_NAME_LENGTH = 64;
const SUFFIX_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/**
 * A fresh, empty database for one test file, so suites running in parallel never share tables.
 * Call it in beforeAll and drop() it in afterAll.
 */
export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const serverUrl = inject('mailqServerUrl');
  const name = databaseName(label);
  await onServer(serverUrl, `CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`);
  return {
    url: withDatabase(serverUrl, name),
    name,
    drop: () => onServer(serverUrl, `DROP DATABASE IF EXISTS \`${name}\``),
  };
}

export function databaseName(label: string): string {
  const suffix = Array.from({ length: 6 }, () => SUFFIX_ALPHABET[randomInt(SUFFIX_ALPHABET.length)]).join('');
  const room = MAX_NAME_LENGTH - 'mq_'.length - '_'.length - suffix.length;
  // Lower case only: database names are folder names, case-sensitive on some systems and not others.
  const cleaned = label.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '').slice(0, room);
  return `mq_${cleaned.replace(/_+$/, '') || 'test'}_${suffix}`;
}


async function onServer(serverUrl: string, sql: string): Promise<void> {
  // No database in the connection: the server URL may name one that does not exist.
  const conn = await mysql.createConnection({ uri: withDatabase(serverUrl, '') });
  try {
    await conn.query(sql);
  } finally {
    await conn.end();
  }
}
