import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.js';
import { createLogger, createMailq, type Mailq } from '../src/index.js';
import { parseDatabaseUrl } from '../src/db/url.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

const silent = createLogger({ level: 'silent' });

describe('database URL options', () => {
  it('socket= and ssl= are read; anything else is a ConfigError that names it', () => {
    expect(parseDatabaseUrl('mysql://app:pw@localhost/queue?socket=/run/mysqld/mysqld.sock')).toMatchObject({
      database: 'queue',
      socketPath: '/run/mysqld/mysqld.sock',
    });
    expect(parseDatabaseUrl('mysql://app:pw@db.example.com/queue?ssl=true').ssl).toEqual({ rejectUnauthorized: true });
    expect(parseDatabaseUrl('mysql://app:pw@db.example.com/queue?ssl=skip-verify').ssl).toEqual({ rejectUnauthorized: false });
    expect(parseDatabaseUrl('mysql://app:pw@db.example.com/queue?ssl=false').ssl).toBeUndefined();
    expect(() => parseDatabaseUrl('mysql://app:secret@h/queue?sslmode=require')).toThrow(ConfigError);
    expect(() => parseDatabaseUrl('mysql://app:secret@h/queue?sslmode=require')).toThrow(
      "database URL 'mysql://app:***@h/queue?sslmode=require': unknown option 'sslmode' (supported: socket=<path>, ssl=true|skip-verify|false, connectTimeout=<duration>, stallCheck=<duration>|off)",
    );
    expect(() => parseDatabaseUrl('mysql://app@h/queue?ssl=maybe')).toThrow(/ssl=maybe: expected ssl=true, ssl=skip-verify or ssl=false/);
  });

  it('connectTimeout= and stallCheck= take durations (stallCheck=off turns the check off)', () => {
    expect(parseDatabaseUrl('mysql://app@h/queue?connectTimeout=3s&stallCheck=750ms')).toMatchObject({ connectTimeoutMs: 3_000, stallCheckMs: 750 });
    expect(parseDatabaseUrl('mysql://app@h/queue?stallCheck=off').stallCheckMs).toBe(0);
    expect(parseDatabaseUrl('mysql://app@h/queue').stallCheckMs).toBeUndefined();
    expect(() => parseDatabaseUrl('mysql://app@h/queue?stallCheck=soon')).toThrow(/stallCheck=soon: invalid duration/);
  });
});

describe('connecting with them', () => {
  let db: TestDatabase;
  let tcp: Mailq;
  let serverSocket = '';
  let haveSsl = '';

  beforeAll(async () => {
    db = await createTestDatabase('database_url');
    tcp = createMailq({ databaseUrl: db.url, logger: silent });
    const [[row]] = (await tcp.knex.raw(`SELECT @@socket AS socket, @@have_ssl AS haveSsl`)) as [[{ socket: string | null; haveSsl: string }]];
    const local = ['127.0.0.1', 'localhost', '::1'].includes(new URL(db.url).hostname);
    serverSocket = local && row.socket && existsSync(row.socket) ? row.socket : '';
    haveSsl = row.haveSsl;
  });

  afterAll(async () => {
    await tcp?.close();
    await db?.drop();
  });

  /** How the server sees this session's client: 'localhost' over a Unix socket, 'address:port' over TCP. */
  async function clientHost(mq: Mailq): Promise<string> {
    const [[row]] = (await mq.knex.raw('SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()')) as [[{ host: string }]];
    return row.host;
  }

  it('?socket= reaches a local server over its Unix socket, and the queue works there', async (context) => {
    if (!serverSocket) return context.skip('the test server has no Unix socket on this machine');
    const url = new URL(db.url);
    url.searchParams.set('socket', serverSocket);
    const overSocket = createMailq({ databaseUrl: url.toString(), logger: silent });
    try {
      expect(await clientHost(overSocket)).toBe('localhost');
      expect(await clientHost(tcp)).toMatch(/:\d+$/);
      await overSocket.migrate();
      const { id } = await overSocket.dispatch('socket-job', { n: 1 });
      expect(await tcp.knex('jobs').where({ id }).pluck('name')).toEqual(['socket-job']);
    } finally {
      await overSocket.close();
    }
  });

  it('?ssl= asks for TLS: refused with a clear error by a server without it, encrypted by one with it', async () => {
    if (haveSsl !== 'YES') {
      const url = new URL(db.url);
      url.searchParams.set('ssl', 'true');
      const wantsTls = createMailq({ databaseUrl: url.toString(), logger: silent });
      try {
        await expect(wantsTls.knex.raw('SELECT 1')).rejects.toThrow(/does not support secure connection/i);
      } finally {
        await wantsTls.close();
      }
      return;
    }
    const url = new URL(db.url);
    url.searchParams.set('ssl', 'skip-verify');
    const encrypted = createMailq({ databaseUrl: url.toString(), logger: silent });
    try {
      const [[row]] = (await encrypted.knex.raw(`SHOW SESSION STATUS LIKE 'Ssl_cipher'`)) as [[{ Value: string }]];
      expect(row.Value).not.toBe('');
    } finally {
      await encrypted.close();
    }
  });
});
