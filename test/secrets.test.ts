import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main as compiledMain } from '../dist/src/cli/main.js';
import { withoutDatabaseUrl } from '../src/cli/commands/work.js';
import { withSchedulerFlags } from '../src/cli/schedule-runner.js';
import { parseDatabaseUrl, redactSecrets, redactUrl, withDatabase } from '../src/db/url.js';
import { ConfigError } from '../src/errors.js';
import { serializeError } from '../src/logger.js';
import { parseSettings } from '../src/config.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { killIfRunning, startCli, waitFor, type CliProcess } from './support/processes.js';
import { captureOutput, openQueue, type CapturedOutput } from './support/queue.js';
import { recordingWork } from './support/supervisor.js';
import type { Mailq } from '../src/mailq.js';
import { defineJob } from '../src/job.js';
import { resolveRateLimit } from '../src/ratelimit/rate-limit.js';
import { z } from 'zod';

const main = compiledMain as (argv: string[], output: CapturedOutput) => Promise<number>;

/** The grant the README documents: no SUPER, no FILE, no PROCESS, nothing outside mailq's database. */
const MAILQ_PRIVILEGES = 'SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX';

/** Every character a password may hold that a careless mask stops at: @ : / % # ? and unicode. */
const PASSWORD = 'Zq@9:x/y%40#?秘密ü';
/** The password as a URL carries it: the parser splits user info at the last @, so @ and : may stay as they are. */
const IN_URL = 'Zq@9:x%2Fy%2540%23%3F秘密ü';
/** Pieces of the password that must never be printed (each would already tell an attacker something). */
const PIECES = ['Zq@9', '9:x', 'x/y', 'x%2Fy', '%2540', '%40#', '秘密', 'Zq%409', '%E7%A7%98'];

function expectNoPassword(text: string): void {
  for (const piece of PIECES) expect(text, `'${piece}' leaked`).not.toContain(piece);
}

describe('redactUrl masks the password the URL parser finds, whatever it holds', () => {
  it.each([
    ['mysql://u:p@ss@127.0.0.1:3306/x', 'mysql://u:***@127.0.0.1:3306/x'],
    ['mysql://u:p:a:ss@h/x', 'mysql://u:***@h/x'],
    ['mysql://u:p%40ss@h/x', 'mysql://u:***@h/x'],
    ['mysql://u:p%2Fss@h:3307/x?ssl=true', 'mysql://u:***@h:3307/x?ssl=true'],
    ['mysql://u:pässwörd秘密@h/x', 'mysql://u:***@h/x'],
    ['mysql://u:p ss@h/x', 'mysql://u:***@h/x'],
    [`mysql://app:${IN_URL}@db.internal:3306/queue`, 'mysql://app:***@db.internal:3306/queue'],
    // Refused by the parser (a raw / # ? ends the authority): masked up to the last @, never less.
    ['mysql://u:pa/ss@h/x', 'mysql://u:***@h/x'],
    ['mysql://u:p#ss@h/x', 'mysql://u:***@h/x'],
    ['mysql://u:p?ss@h/x', 'mysql://u:***@h/x'],
    ['mysql://u:p@ss/word@h/x', 'mysql://u:***@h/x'],
    ['mysql://root:secret', 'mysql://root:***'],
    // Nothing to hide: unchanged.
    ['mysql://u@h/x', 'mysql://u@h/x'],
    ['mysql://127.0.0.1:3306/x', 'mysql://127.0.0.1:3306/x'],
  ])('%s', (url, masked) => {
    expect(redactUrl(url)).toBe(masked);
  });

  it('masks every URL in free text, and a configured password wherever it appears', () => {
    const url = `mysql://app:${IN_URL}@db:3306/queue`;
    const text = `connect mysql://u:p@ss@h/x failed; retry ${url} (password ${PASSWORD})`;
    const masked = redactSecrets(text, [url]);
    expect(masked).toBe('connect mysql://u:***@h/x failed; retry mysql://app:***@db:3306/queue (password ***)');
  });

  it('logs an error whose message quotes a URL with the password masked', () => {
    const error = new Error(`cannot reach mysql://app:${IN_URL}@db:3306/queue`);
    const logged = serializeError(error) as { message: string; stack: string };
    expect(logged.message).toBe('cannot reach mysql://app:***@db:3306/queue');
    expectNoPassword(JSON.stringify(logged));
  });

  it('parse errors quote the URL masked: a bad %-escape, an unknown ssl mode, ssl=toString', () => {
    for (const [url, message] of [
      ['mysql://u:p%zz@ss@h/x', "invalid database URL 'mysql://u:***@h/x': the password has a bad %-escape (write % as %25)"],
      ['mysql://u:p@ss@h/x?ssl=toString', "database URL 'mysql://u:***@h/x?ssl=toString': ssl=toString: expected ssl=true, ssl=skip-verify or ssl=false"],
      ['mysql://u:p@ss@h/x?ssl=constructor', /ssl=constructor: expected ssl=true/],
      ['mysql://u:p@ss@h/x?ssl=__proto__', /ssl=__proto__: expected ssl=true/],
      ['mysql://u:p@ss@h', "database URL 'mysql://u:***@h' names no database: expected mysql://<user>:<password>@<host>:3306/<database>"],
    ] as const) {
      expect(() => parseDatabaseUrl(url)).toThrow(ConfigError);
      expect(() => parseDatabaseUrl(url)).toThrow(message);
      expect(() => parseSettings({ databaseUrl: url })).toThrow(ConfigError);
    }
  });
});

describe('the password in a real deployment', { timeout: 90_000 }, () => {
  let db: TestDatabase;
  let mq: Mailq;
  let url = '';
  let user = '';
  let cannotCreateUser = '';
  let supervisor: CliProcess | undefined;

  async function asRoot(sql: string, values: unknown[] = []): Promise<void> {
    const conn = await mysql.createConnection({ uri: withDatabase(db.url, '') });
    try {
      await conn.query(sql, values);
    } finally {
      await conn.end();
    }
  }

  beforeAll(async () => {
    db = await createTestDatabase('secrets');
    mq = openQueue(db.url);
    await mq.migrate();
    user = `mq_secret_${randomBytes(3).toString('hex')}`;
    try {
      await asRoot('CREATE USER ?@? IDENTIFIED BY ?', [user, '%', PASSWORD]);
      // What the README's Security section says mailq needs, and nothing more.
      await asRoot(`GRANT ${MAILQ_PRIVILEGES} ON \`${db.name}\`.* TO ?@?`, [user, '%']);
    } catch (error) {
      cannotCreateUser = (error as Error).message;
    }
    const server = new URL(db.url);
    url = `mysql://${user}:${IN_URL}@${server.host}/${db.name}`;
  });

  afterAll(async () => {
    killIfRunning(supervisor);
    await mq?.close();
    if (!cannotCreateUser) await asRoot('DROP USER IF EXISTS ?@?', [user, '%']).catch(() => undefined);
    await db?.drop();
  });

  async function mailq(...args: string[]) {
    const output = captureOutput();
    const code = await main([...args, '--log-level', 'silent'], output);
    return { code, text: output.text, out: output.stdout.join('\n'), err: output.stderr.join('\n') };
  }

  it('the URL reaches the server: the password is decoded right', async (context) => {
    if (cannotCreateUser) return context.skip(`the test server's user cannot create users: ${cannotCreateUser}`);
    expect(parseDatabaseUrl(url).password).toBe(PASSWORD);
    const { code, text } = await mailq('failed', '--database-url', url);
    expect(code, text).toBe(0);
    expect(text).toBe('No failed jobs.');
  });

  it('access denied names the URL with the password masked (the issue: `p@ss` printed `***@ss`)', async () => {
    const wrong = `mysql://${user || 'u'}:p@ss@${new URL(db.url).host}/${db.name}`;
    const { code, err } = await mailq('failed', '--database-url', wrong);
    expect(code).toBe(1);
    expect(err).toBe(`mailq: access denied for mysql://${user || 'u'}:***@${new URL(db.url).host}/${db.name}: check the user and password`);
    expect(err).not.toContain('ss@');
  });

  it('doctor and status say which database they read, masked', async (context) => {
    if (cannotCreateUser) return context.skip(`the test server's user cannot create users: ${cannotCreateUser}`);
    const masked = `mysql://${user}:***@${new URL(db.url).host}/${db.name}`;
    for (const verb of ['doctor', 'status']) {
      const plain = await mailq(verb, '--database-url', url);
      expect(plain.out.split('\n')[0]).toBe(`Database: ${masked}`);
      expectNoPassword(plain.text);
      const json = await mailq(verb, '--database-url', url, '--json');
      expect(JSON.parse(json.out).database).toBe(masked);
      expectNoPassword(json.text);
    }
  });

  it('--verbose stack traces are masked too', async () => {
    const { err } = await mailq('failed', '--database-url', `mysql://u:${IN_URL}@127.0.0.1:1/${db.name}`, '--verbose');
    expect(err).toMatch(/^mailq: cannot reach the database at mysql:\/\/u:\*\*\*@127\.0\.0\.1:1\//);
    expectNoPassword(err);
  });

  it('worker processes get the URL by environment: no password in any child argv (/proc/<pid>/cmdline)', async (context) => {
    if (process.platform !== 'linux') return context.skip('reads /proc');
    if (cannotCreateUser) return context.skip(`the test server's user cannot create users: ${cannotCreateUser}`);
    supervisor = startCli([...recordingWork('secrets', '--processes=2'), '--database-url', url], {});
    const pids = await waitFor('two worker processes', () => {
      const started = supervisor!.logs().filter((line) => line.msg === 'worker process started').map((line) => Number(line.pid));
      return started.length === 2 ? started : undefined;
    });
    for (const pid of pids) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      expect(argv.join(' ')).toContain('work --queue=secrets');
      expect(argv.some((arg) => arg.startsWith('--database-url') || arg.startsWith('--databaseUrl'))).toBe(false);
      expectNoPassword(argv.join(' '));
      // The environment is readable by the same user only (and root), unlike the argument list.
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      expect(env).toContain(`MAILQ_DATABASE_URL=${url}`);
    }
    await waitFor('both workers registered', async () => (await mq.knex(mq.tables.workers).where({ kind: 'worker' }).count({ n: '*' }))[0]!.n == 2);
    supervisor.child.kill('SIGTERM');
    expect((await supervisor.exited).code).toBe(0);
    expectNoPassword(supervisor.output());
  });

  it('the documented grant is enough to migrate, and its DML part to run everything else', async (context) => {
    if (cannotCreateUser) return context.skip(`the test server's user cannot create users: ${cannotCreateUser}`);
    const migrator = openQueue(url);
    try {
      expect(await migrator.rollback({ all: true })).not.toEqual([]);
      expect(await migrator.migrate()).not.toEqual([]);
    } finally {
      await migrator.close();
    }
    // The workers' user: the DDL part revoked (a new pool: privileges are read when a session starts).
    await asRoot(`REVOKE CREATE, DROP, ALTER, INDEX ON \`${db.name}\`.* FROM ?@?`, [user, '%']);
    const ran: number[] = [];
    const work = defineJob({ name: 'least-privilege', schema: z.object({ n: z.number() }), handle: ({ n }) => void ran.push(n) });
    const fails = defineJob({ name: 'fails-once', tries: 1, handle: () => Promise.reject(new Error('first time')) });
    const restricted = openQueue(url, { jobs: [work, fails] });
    try {
      await expect(restricted.knex.raw('CREATE TABLE not_allowed (id INT)')).rejects.toThrow(/denied/);
      await restricted.dispatchMany(work, [{ n: 1 }, { n: 2 }]);
      await restricted.batch(work, [{ n: 3 }], { finally: { job: work, payload: { n: 4 } } });
      await restricted.dispatch(fails, {});
      await restricted.rateLimits.take(resolveRateLimit({ key: 'grant', limit: 5, per: '1s' }), 1);
      await restricted.controls.pause(['elsewhere']);
      await restricted.controls.resume(['elsewhere']);
      await restricted.worker({ queues: ['default'], stopWhenEmpty: true, sweepInterval: 0, heartbeat: '50ms' }).run();
      expect(ran.sort()).toEqual([1, 2, 3, 4]);
      expect((await restricted.failed.retry('all')).retried).toBe(1);
      const report = await restricted.doctor();
      expect(report.checks.filter((check) => check.status === 'fail')).toEqual([]);
      expect(await restricted.migrate()).toEqual([]);
    } finally {
      await restricted.close();
      await asRoot(`GRANT ${MAILQ_PRIVILEGES} ON \`${db.name}\`.* TO ?@?`, [user, '%']);
    }
  });

  it('withoutDatabaseUrl drops the flag in each spelling yargs reads, and nothing else', () => {
    expect(withoutDatabaseUrl(['work', '--database-url=mysql://u:p@h/d', '--queue=a'])).toEqual(['work', '--queue=a']);
    expect(withoutDatabaseUrl(['work', '--database-url', 'mysql://u:p@h/d', '--queue', 'a'])).toEqual(['work', '--queue', 'a']);
    expect(withoutDatabaseUrl(['work', '--databaseUrl=mysql://u:p@h/d', '--processes=2'])).toEqual(['work', '--processes=2']);
    expect(withoutDatabaseUrl(['work', '--database-url-ish', 'x'])).toEqual(['work', '--database-url-ish', 'x']);
    expect(withoutDatabaseUrl(['dispatch', 'x', '--', '--database-url=literal'])).toEqual(['dispatch', 'x', '--', '--database-url=literal']);
  });

  it("the scheduler's commands get the database by environment, not in their argv", () => {
    const settings = parseSettings({ databaseUrl: url || 'mysql://u:p@ss@h/x', tablePrefix: 'mq_' });
    const argv = withSchedulerFlags(['sync-mailbox', '--queue'], settings, '/etc/mailq.config.js');
    expect(argv).toEqual(['sync-mailbox', '--queue', '--config=/etc/mailq.config.js', '--prefix=mq_']);
  });
});
