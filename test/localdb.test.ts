import { existsSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { findDatabaseServer } from '../src/localdb/find-server.js';
import {
  LocalServerUnavailableError,
  findServerBinaries,
  startThrowawayServer,
} from '../src/localdb/throwaway-server.js';
import { createTestDatabase, databaseName, type TestDatabase } from './support/database.js';

async function query<T = mysql.RowDataPacket>(url: string, sql: string, values?: unknown[]): Promise<T[]> {
  const conn = await mysql.createConnection({ uri: url, connectTimeout: 3_000 });
  try {
    const [rows] = await conn.query<mysql.RowDataPacket[]>(sql, values);
    return rows as T[];
  } finally {
    await conn.end();
  }
}

async function databaseExists(serverUrl: string, name: string): Promise<boolean> {
  const rows = await query(serverUrl, 'SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [name]);
  return rows.length === 1;
}

function throwawayFolders(): string[] {
  return readdirSync(tmpdir()).filter((entry) => entry.startsWith('mailq-db-'));
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

describe('findDatabaseServer', () => {
  it('returns a server that answers SELECT 1', async () => {
    const server = await findDatabaseServer({ envUrl: process.env.MAILQ_TEST_DATABASE_URL });
    try {
      expect(['env', 'local', 'container', 'throwaway']).toContain(server.source);
      const rows = await query(server.url, 'SELECT 1 AS one');
      expect(rows[0]?.['one']).toBe(1);
    } finally {
      await server.stop();
    }
  });

  it('uses an explicitly given URL that answers', async () => {
    const url = inject('mailqServerUrl');
    const server = await findDatabaseServer({ envUrl: url });
    expect(server.source).toBe('env');
    expect(server.url).toBe(url);
  });

  // An explicitly given URL is the caller's choice: if it fails, fall-back to another server would
  // hide the mistake and run the tests somewhere the caller did not ask for.
  it('rejects a given URL that does not answer instead of falling back', async () => {
    const attempt = findDatabaseServer({ envUrl: 'mysql://root:secret@127.0.0.1:1/mailq' });
    await expect(attempt).rejects.toThrow(/MAILQ_TEST_DATABASE_URL=mysql:\/\/root:\*\*\*@127\.0\.0\.1:1\/mailq does not answer: .*ECONNREFUSED/);
  });

  it('rejects a given URL with wrong credentials, naming the server error', async () => {
    const url = new URL(inject('mailqServerUrl'));
    url.username = 'mailq_no_such_user';
    url.password = 'wrong';
    await expect(findDatabaseServer({ envUrl: url.toString() })).rejects.toThrow(/Access denied/);
  });

  it('rejects a given value that is not a mysql:// URL', async () => {
    await expect(findDatabaseServer({ envUrl: 'localhost:3306' })).rejects.toThrow(/mysql:\/\//);
    await expect(findDatabaseServer({ envUrl: 'not a url', envName: 'MY_DB_URL' })).rejects.toThrow(
      /MY_DB_URL=.*not a valid URL/,
    );
  });
});

describe('createTestDatabase', () => {
  let a: TestDatabase;
  let b: TestDatabase;

  beforeAll(async () => {
    a = await createTestDatabase('localdb isolation A');
    b = await createTestDatabase('localdb isolation B');
  });

  afterAll(async () => {
    await a?.drop();
    await b?.drop();
  });

  it('names databases mq_<label>_<6 random chars> on the shared server', () => {
    expect(a.name).toMatch(/^mq_localdb_isolation_a_[a-z0-9]{6}$/);
    const server = new URL(inject('mailqServerUrl'));
    const url = new URL(a.url);
    expect([url.username, url.password, url.host]).toEqual([server.username, server.password, server.host]);
    expect(url.pathname).toBe(`/${a.name}`);
  });

  it('keeps names within MySQL’s 64 characters and to safe characters', () => {
    const name = databaseName(`Very Long Label – ${'x'.repeat(100)}`);
    expect(name.length).toBeLessThanOrEqual(64);
    expect(name).toMatch(/^mq_very_long_label_x+_[a-z0-9]{6}$/);
    expect(databaseName('!!!')).toMatch(/^mq_test_[a-z0-9]{6}$/);
  });

  it('gives each caller its own database: a table made in one is absent in the other', async () => {
    await query(a.url, 'CREATE TABLE widgets (id INT PRIMARY KEY)');
    await query(a.url, 'INSERT INTO widgets VALUES (1)');
    expect(await query(a.url, 'SELECT id FROM widgets')).toHaveLength(1);
    const inB = await query(b.url, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()");
    expect(inB).toEqual([]);
    await expect(query(b.url, 'SELECT id FROM widgets')).rejects.toThrow(/doesn't exist/);
  });

  it('drop() removes the database, and a second drop() is harmless', async () => {
    const c = await createTestDatabase('localdb drop');
    const serverUrl = inject('mailqServerUrl');
    expect(await databaseExists(serverUrl, c.name)).toBe(true);
    await c.drop();
    expect(await databaseExists(serverUrl, c.name)).toBe(false);
    await expect(c.drop()).resolves.toBeUndefined();
  });
});

const binaries = await findServerBinaries();

describe.skipIf(binaries === null)('startThrowawayServer (local binaries)', () => {
  it('starts a real server that answers, then stop() frees its port and deletes its folder', async () => {
    const startedAt = Date.now();
    const server = await startThrowawayServer();
    const startMs = Date.now() - startedAt;
    try {
      expect(server.url).toBe(`mysql://root@127.0.0.1:${server.port}/test`);
      expect(existsSync(server.dir)).toBe(true);
      const [row] = await query(server.url, 'SELECT 1 AS one, DATABASE() AS db, @@character_set_server AS charset');
      expect(row).toMatchObject({ one: 1, db: 'test', charset: 'utf8mb4' });
      expect(startMs).toBeLessThan(30_000);
    } finally {
      await server.stop();
    }
    expect(existsSync(server.dir)).toBe(false);
    await expect(query(server.url, 'SELECT 1')).rejects.toThrow(/ECONNREFUSED/);
    await expect(server.stop()).resolves.toBeUndefined();
  });

  it('fails with LocalServerUnavailableError and the log tail when the port is taken, leaving no folder', async () => {
    const blocker = await listenOn(0);
    const address = blocker.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const lines: string[] = [];
    try {
      const attempt = startThrowawayServer({ port, log: (line) => lines.push(line) });
      await expect(attempt).rejects.toBeInstanceOf(LocalServerUnavailableError);
      await expect(attempt).rejects.toThrow(/exited .* before it was ready[\s\S]*(in use|Can't start server)/);
    } finally {
      blocker.close();
    }
    // Its own folder is gone (other suites may be starting throwaway servers of their own meanwhile).
    const dir = /datadir in (\S+)/.exec(lines.join('\n'))?.[1];
    expect(dir).toMatch(/mailq-db-/);
    expect(existsSync(dir!)).toBe(false);
  });
});
