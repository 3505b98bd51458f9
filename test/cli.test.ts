import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { migrations } from '../migrations/index.js';
import { PermanentError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import { main as compiledMain } from '../dist/src/cli/main.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { captureOutput, count, createSideEffectTables, FIXTURE_JOBS, openQueue, runCli, type CapturedOutput } from './support/queue.js';

const main = compiledMain as (argv: string[], output: CapturedOutput) => Promise<number>;

const doomed = defineJob({
  name: 'doomed',
  handle() {
    throw new PermanentError('the upstream account is closed');
  },
});

let db: TestDatabase;
/** A second database without mailq's tables. */
let empty: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  [db, empty] = await Promise.all([createTestDatabase('cli'), createTestDatabase('cli_empty')]);
  mq = openQueue(db.url, { jobs: [doomed] });
  await mq.migrate();
  await createSideEffectTables(mq.knex);
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
  await empty?.drop();
});

beforeEach(async () => {
  await mq.knex('jobs').delete();
  await mq.knex('failed_jobs').delete();
  await mq.knex('test_runs').delete();
});

/** Runs `mailq …` in this process against the test database; returns the exit code and what it printed. */
async function mailq(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const output = captureOutput();
  const code = await main([...args, '--database-url', db.url, '--log-level', 'silent'], output);
  return { code, out: output.stdout.join('\n'), err: output.stderr.join('\n') };
}

async function failJobs(n: number, queue = 'default'): Promise<number[]> {
  await mq.dispatchMany(doomed, Array.from({ length: n }, () => ({})), { queue });
  await mq.worker({ queues: [queue], stopWhenEmpty: true, sweepInterval: 0 }).run();
  return (await mq.knex('failed_jobs').where({ queue }).orderBy('id').select('id')).map((row: { id: number }) => Number(row.id));
}

/** The error a user sees: one line starting `mailq:`, no stack trace. */
function expectOneLineError(stderr: string, pattern: RegExp): void {
  const [first] = stderr.split('\n');
  expect(first).toMatch(/^mailq: /);
  expect(first).toMatch(pattern);
  expect(stderr).not.toMatch(/^\s+at /m);
}

describe('usage errors (exit 2)', () => {
  it('an unknown flag, as a real process: one line, no stack', async () => {
    const result = await runCli(['failed', '--bogus-flag'], { env: { MAILQ_DATABASE_URL: db.url } });
    expect(result.code).toBe(2);
    expectOneLineError(result.stderr, /Unknown arguments?: bogus-flag/i);
    expect(result.stdout).toBe('');
  });

  it('a mistyped flag runs nothing: `flush --hour 2` deletes no failed job', async () => {
    await failJobs(2);
    const result = await mailq('flush', '--hour', '2');
    expect(result.code).toBe(2);
    expectOneLineError(result.err, /Unknown argument: hour/);
    expect(result.out).toBe('');
    expect(await count(mq.knex, 'failed_jobs')).toBe(2);
  });

  it('an unknown command and no command at all', async () => {
    const unknown = await mailq('frobnicate');
    expect(unknown.code).toBe(2);
    expectOneLineError(unknown.err, /frobnicate/);
    const none = captureOutput();
    expect(await main([], none)).toBe(2);
    expectOneLineError(none.stderr.join('\n'), /name a command/);
  });

  it('a bad database URL', async () => {
    for (const [url, pattern] of [
      ['http://root@127.0.0.1/app', /unsupported database URL scheme 'http:'/],
      ['not a url', /invalid database URL/],
      ['mysql://root@127.0.0.1:3306/', /names no database/],
    ] as const) {
      const output = captureOutput();
      expect(await main(['failed', '--database-url', url], output), url).toBe(2);
      expectOneLineError(output.stderr.join('\n'), pattern);
    }
  });

  it('no database configured at all', async () => {
    const result = await runCli(['failed']);
    expect(result.code).toBe(2);
    expectOneLineError(result.stderr, /no database configured: set MAILQ_DATABASE_URL/);
  });

  it('a bad flag names the flag and the value', async () => {
    const result = await mailq('work', '--concurrency', '0');
    expect(result.code).toBe(2);
    expectOneLineError(result.err, /--concurrency: expected an integer from 1 to 10000, got '0'/);
    const timeout = await mailq('work', '--timeout', 'soonish');
    expect(timeout.code).toBe(2);
    expectOneLineError(timeout.err, /--timeout: invalid duration 'soonish'/);
  });

  it('a bad setting from the environment names the setting', async () => {
    const result = await runCli(['work'], { env: { MAILQ_DATABASE_URL: db.url, MAILQ_TABLE_PREFIX: 'mq-' } });
    expect(result.code).toBe(2);
    expectOneLineError(result.stderr, /invalid setting tablePrefix: 'mq-' may hold letters, digits and _ only/);
  });

  it('an invalid id or payload', async () => {
    const id = await mailq('failed:show', 'abc');
    expect(id.code).toBe(2);
    const payload = await mailq('dispatch', 'greet', '{not json');
    expect(payload.code).toBe(2);
    expectOneLineError(payload.err, /\[payload\]: not valid JSON/);
    const flush = await mailq('flush', '--hours', '-1');
    expect(flush.code).toBe(2);
    expectOneLineError(flush.err, /--hours: expected a number from 0 to 1000000, got '-1'/);
    expect(await count(mq.knex, 'jobs')).toBe(0);
  });
});

describe('database errors (exit 1)', () => {
  it('an unreachable server, as a real process: "cannot reach"', async () => {
    const result = await runCli(['failed', '--database-url', 'mysql://root@127.0.0.1:1/app']);
    expect(result.code).toBe(1);
    expectOneLineError(result.stderr, /cannot reach the database at mysql:\/\/root@127\.0\.0\.1:1\/app/);
  });

  it('missing tables: "run `mailq migrate`"', async () => {
    const output = captureOutput();
    expect(await main(['failed', '--database-url', empty.url], output)).toBe(1);
    expectOneLineError(output.stderr.join('\n'), /run `mailq migrate` first/);
  });

  it('--verbose adds the stack trace', async () => {
    const output = captureOutput();
    expect(await main(['failed', '--database-url', empty.url, '--verbose', '--log-level', 'silent'], output)).toBe(1);
    expect(output.stderr[0]).toMatch(/run `mailq migrate`/);
    expect(output.stderr.join('\n')).toMatch(/^\s+at /m);
  });
});

describe('migrate', () => {
  it('migrates, says so, is idempotent, reports status (table and JSON), rolls back', async () => {
    const target = await createTestDatabase('cli_migrate');
    try {
      const run = async (...args: string[]) => {
        const output = captureOutput();
        const code = await main(['migrate', ...args, '--database-url', target.url], output);
        return { code, out: output.stdout.join('\n') };
      };
      const all = migrations.map((migration) => migration.name);
      expect(await run()).toEqual({ code: 0, out: `Migrated: ${all.join(', ')}` });
      expect(await run()).toEqual({ code: 0, out: 'Nothing to migrate: the schema is up to date.' });
      const status = await run('--status');
      expect(status.code).toBe(0);
      for (const name of all) expect(status.out).toMatch(new RegExp(`${name}\\s*│\\s*applied`));
      expect(JSON.parse((await run('--status', '--json')).out)).toEqual({ applied: all, pending: [] });
      // One batch went in, so one rollback undoes all of it.
      expect(await run('--rollback')).toEqual({ code: 0, out: `Rolled back: ${[...all].reverse().join(', ')}` });
      expect(JSON.parse((await run('--status', '--json')).out)).toEqual({ applied: [], pending: all });
      expect(await run('--rollback')).toEqual({ code: 0, out: 'Nothing to roll back.' });
    } finally {
      await target.drop();
    }
  });
});

describe('dispatch and work', () => {
  it('dispatch prints the job (or JSON) and validates against --jobs definitions', async () => {
    const plain = await mailq('dispatch', 'record', '{"n":1}', '--queue', 'cli', '--jobs', FIXTURE_JOBS);
    expect(plain.code).toBe(0);
    expect(plain.out).toMatch(/^Dispatched record as job \d+ on queue cli\.$/);
    const json = await mailq('dispatch', 'record', '{"n":2}', '--json', '--delay', '10m', '--priority', '3', '--jobs', FIXTURE_JOBS);
    expect(JSON.parse(json.out)).toMatchObject({ queue: 'default', uuid: expect.any(String), id: expect.any(Number) });
    expect(await mq.knex('jobs').where({ id: JSON.parse(json.out).id }).first()).toMatchObject({ priority: 3, name: 'record' });

    const invalid = await mailq('dispatch', 'record', '{"n":"one"}', '--jobs', FIXTURE_JOBS);
    expect(invalid.code).toBe(2);
    expectOneLineError(invalid.err, /invalid payload for job 'record': n: /);
    expect(await count(mq.knex, 'jobs')).toBe(2);
  });

  it('work, as a real process, loads --jobs modules and runs the jobs until the queue is empty', async () => {
    await mq.dispatchMany('record', [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: 'cli-work' });
    const result = await runCli(['work', '--jobs', FIXTURE_JOBS, '--queue', 'cli-work', '--concurrency', '2', '--stop-when-empty'], { env: { MAILQ_DATABASE_URL: db.url } });
    expect(result.code, result.stderr).toBe(0);
    expect(await count(mq.knex, 'test_runs')).toBe(3);
    expect(await count(mq.knex, 'jobs')).toBe(0);
    // pino JSON lines on stderr (not a terminal): started and stopped.
    const messages = result.stderr.trim().split('\n').map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(messages).toEqual(expect.arrayContaining(['worker started', 'worker stopped']));
  });

  it('work --once runs one job; a job module that cannot be loaded is a usage error', async () => {
    await mq.dispatchMany('record', [{ n: 1 }, { n: 2 }], { queue: 'once' });
    // The fixture jobs write their side effects to the database in MAILQ_DATABASE_URL.
    const previous = process.env.MAILQ_DATABASE_URL;
    process.env.MAILQ_DATABASE_URL = db.url;
    try {
      const once = await mailq('work', '--jobs', FIXTURE_JOBS, '--queue', 'once', '--once');
      expect(once.code).toBe(0);
    } finally {
      if (previous === undefined) delete process.env.MAILQ_DATABASE_URL;
      else process.env.MAILQ_DATABASE_URL = previous;
    }
    expect(await count(mq.knex, 'test_runs')).toBe(1);
    expect(await count(mq.knex, 'jobs', { queue: 'once' })).toBe(1);

    const missing = await mailq('work', '--jobs', './no/such/module.mjs');
    expect(missing.code).toBe(2);
    expectOneLineError(missing.err, /cannot load job module .*no\/such\/module\.mjs/);
  });
});

describe('failed jobs', () => {
  it('failed: a table, --queue, --json; "No failed jobs." when there are none', async () => {
    expect(await mailq('failed')).toEqual({ code: 0, out: 'No failed jobs.', err: '' });
    const [first] = await failJobs(2, 'mail');
    await failJobs(1, 'other');

    const listed = await mailq('failed', '--queue', 'mail');
    expect(listed.code).toBe(0);
    expect(listed.out).toMatch(new RegExp(`│\\s*${first}\\s*│\\s*mail\\s*│\\s*doomed\\s*│\\s*1\\s*│.*PermanentError: the upstream account is closed`));
    expect(listed.out).not.toMatch(/other/);

    const json = JSON.parse((await mailq('failed', '--json')).out) as Array<{ id: number; queue: string; reason: string }>;
    expect(json.map((job) => job.queue)).toEqual(['other', 'mail', 'mail']);
    expect(json[0]!.reason).toBe('PermanentError: the upstream account is closed');

    const limited = await mailq('failed', '--limit', '1');
    expect(limited.out).toContain('Showing 1 of 3 failed jobs');
  });

  it('failed:show prints payload and exception (or JSON); an unknown id exits 1', async () => {
    const [id] = await failJobs(1);
    const shown = await mailq('failed:show', String(id));
    expect(shown.code).toBe(0);
    expect(shown.out).toContain(`id:        ${id}`);
    expect(shown.out).toMatch(/exception:\nPermanentError: the upstream account is closed\n\s+at /);
    expect(JSON.parse((await mailq('failed:show', String(id), '--json')).out)).toMatchObject({ id, name: 'doomed', attempts: 1 });

    const unknown = await mailq('failed:show', '424242');
    expect(unknown.code).toBe(1);
    expectOneLineError(unknown.err, /no failed job with id 424242/);
  });

  it('retry ids | all [--queue]; unknown ids exit 1 after retrying the rest', async () => {
    const [a, b] = await failJobs(2, 'mail');
    await failJobs(2, 'other');

    expect(await mailq('retry', String(a))).toEqual({ code: 0, out: 'Retried 1 failed job.', err: '' });
    const partly = await mailq('retry', String(b), '999999', '--json');
    expect(partly.code).toBe(1);
    expect(JSON.parse(partly.out)).toEqual({ retried: 1, missing: [999_999], alreadyQueued: [] });
    expectOneLineError(partly.err, /no failed job with id 999999/);

    expect((await mailq('retry', 'all', '--queue', 'other')).out).toBe('Retried 2 failed jobs.');
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
    expect(await count(mq.knex, 'jobs')).toBe(4);
    expect((await mailq('retry', 'all')).out).toBe('Retried 0 failed jobs.');
  });

  it('retry of a unique job whose key a pending job holds says so and exits 0', async () => {
    await mq.dispatch(doomed, {}, { queue: 'keyed', unique: 'k1' });
    await mq.worker({ queues: ['keyed'], stopWhenEmpty: true, sweepInterval: 0 }).run();
    const [failedId] = (await mq.knex('failed_jobs').where({ queue: 'keyed' }).select('id')).map((row: { id: number }) => Number(row.id));
    const holder = await mq.dispatch(doomed, {}, { queue: 'keyed', unique: 'k1' });
    expect(await mailq('retry', String(failedId))).toEqual({
      code: 0,
      out: `Retried 0 failed jobs.\nFailed job ${failedId} is already queued: job ${holder.id} holds its unique key (removed from failed jobs).`,
      err: '',
    });
    expect(await mq.knex('jobs').where({ queue: 'keyed' }).pluck('id')).toEqual([holder.id]);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });

  it('forget ids; an unknown id exits 1', async () => {
    const [a, b] = await failJobs(2);
    expect(await mailq('forget', String(a))).toEqual({ code: 0, out: 'Forgot 1 failed job.', err: '' });
    const unknown = await mailq('forget', String(b), '888888');
    expect(unknown.code).toBe(1);
    expectOneLineError(unknown.err, /forgot 1 of 2/);
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });

  it('flush [--hours] [--queue]', async () => {
    const old = await failJobs(2, 'mail');
    await failJobs(1, 'mail');
    await failJobs(1, 'other');
    await mq.knex('failed_jobs').whereIn('id', old).update({ failed_at: mq.knex.raw('NOW(3) - INTERVAL 5 HOUR') });
    expect(await mailq('flush', '--hours', '4')).toEqual({ code: 0, out: 'Flushed 2 failed jobs.', err: '' });
    expect((await mailq('flush', '--queue', 'other')).out).toBe('Flushed 1 failed job.');
    expect((await mailq('flush')).out).toBe('Flushed 1 failed job.');
    expect(await count(mq.knex, 'failed_jobs')).toBe(0);
  });
});

describe('secrets', () => {
  const user = `mq_cli_${randomBytes(4).toString('hex')}`;
  const password = `Pw-${randomBytes(9).toString('hex')}`;
  let secretUrl: string;

  beforeAll(async () => {
    await mq.knex.raw(`CREATE USER ?@'%' IDENTIFIED BY ?`, [user, password]);
    await mq.knex.raw(`GRANT ALL PRIVILEGES ON \`${db.name}\`.* TO ?@'%'`, [user]);
    await mq.knex.raw(`GRANT ALL PRIVILEGES ON \`${empty.name}\`.* TO ?@'%'`, [user]);
    const url = new URL(db.url);
    url.username = user;
    url.password = password;
    secretUrl = url.toString();
  });

  afterAll(async () => {
    await mq.knex.raw(`DROP USER IF EXISTS ?@'%'`, [user]);
  });

  it('the database password never appears in output or logs, whatever the command or error', async () => {
    await mq.dispatchMany('record', [{ n: 1 }, { n: 2 }], { queue: 'secret' });
    const emptyUrl = Object.assign(new URL(secretUrl), { pathname: `/${empty.name}` }).toString();
    const wrongPassword = Object.assign(new URL(secretUrl), { password: `${password}-wrong` }).toString();
    const runs = await Promise.all([
      runCli(['work', '--jobs', FIXTURE_JOBS, '--queue', 'secret', '--stop-when-empty', '--verbose'], { env: { MAILQ_DATABASE_URL: secretUrl } }),
      runCli(['migrate', '--status', '--verbose', '--database-url', secretUrl]),
      runCli(['failed', '--verbose', '--database-url', emptyUrl]),
      runCli(['failed:show', '31337', '--verbose'], { env: { DATABASE_URL: secretUrl } }),
      runCli(['failed', '--verbose', '--database-url', wrongPassword]),
      runCli(['failed', '--verbose', '--database-url', secretUrl.replace(/:\d+\//, ':1/')]),
    ]);
    expect(runs.map((run) => run.code)).toEqual([0, 0, 1, 1, 1, 1]);
    // The worker really ran with debug logs, so there was plenty of output to leak into.
    expect(await count(mq.knex, 'test_runs')).toBe(2);
    expect(runs[0]!.stderr).toContain('"level":20');
    expect(runs[4]!.stderr).toMatch(/access denied for mysql:\/\/mq_cli_\w+:\*\*\*@/);
    for (const run of runs) {
      expect(run.stdout).not.toContain(password);
      expect(run.stderr).not.toContain(password);
    }
  });
});
