import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrations } from '../migrations/index.js';
import { loadSettings, parseSettings } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { main as compiledMain } from '../dist/src/cli/main.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { loadJobModules } from '../src/cli/context.js';
import { captureOutput, openQueue, ROOT, type CapturedOutput } from './support/queue.js';

const main = compiledMain as (argv: string[], output: CapturedOutput) => Promise<number>;

const FILE_URL = 'mysql://file:pw@127.0.0.1:3306/from_file';
const ENV_URL = 'mysql://env:pw@127.0.0.1:3306/from_env';
const FLAG_URL = 'mysql://flag:pw@127.0.0.1:3306/from_flag';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'mailq-config-'));
  await writeFile(
    path.join(dir, 'mailq.config.mjs'),
    `export default {
       databaseUrl: '${FILE_URL}',
       tablePrefix: 'file_',
       logLevel: 'warn',
       jobs: ['./jobs/mail.mjs'],
       worker: { queues: ['mail', 'bulk'], concurrency: 4, timeout: '2m', backoff: [10, '1m'], sleep: '250ms' },
     };\n`,
  );
  await mkdir(path.join(dir, 'other'));
  await writeFile(path.join(dir, 'other', 'custom.mjs'), `export default async () => ({ tablePrefix: 'custom_', worker: { tries: 5 } });\n`);
  await writeFile(path.join(dir, 'other', 'broken.mjs'), `throw new Error('boom at load');\n`);
  await writeFile(path.join(dir, 'other', 'scalar.mjs'), `export default 42;\n`);
  await writeFile(path.join(dir, 'other', 'typed.ts'), `const prefix: string = 'ts_';\nexport default { tablePrefix: prefix };\n`);
  const defineJobFrom = path.join(ROOT, 'dist', 'src', 'index.js');
  await writeFile(
    path.join(dir, 'other', 'jobs.ts'),
    `import { defineJob } from '${defineJobFrom}';\nexport const named = defineJob({ name: 'named', handle: (): void => undefined });\nexport default [defineJob({ name: 'by-default', handle: (): void => undefined })];\n`,
  );
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('where settings come from', () => {
  it('flags beat env beat the config file beat defaults', async () => {
    const fileOnly = await loadSettings({ cwd: dir, env: {} });
    expect(fileOnly.configPath).toBe(path.join(dir, 'mailq.config.mjs'));
    expect(fileOnly.settings).toMatchObject({ databaseUrl: FILE_URL, tablePrefix: 'file_', logLevel: 'warn' });
    expect(fileOnly.settings.worker).toMatchObject({ queues: ['mail', 'bulk'], concurrency: 4, tries: 1, timeout: 120_000 });

    const withEnv = await loadSettings({ cwd: dir, env: { MAILQ_DATABASE_URL: ENV_URL, MAILQ_TABLE_PREFIX: 'env_', MAILQ_LOG_LEVEL: 'error' } });
    expect(withEnv.settings).toMatchObject({ databaseUrl: ENV_URL, tablePrefix: 'env_', logLevel: 'error' });

    const withFlags = await loadSettings({
      cwd: dir,
      env: { MAILQ_DATABASE_URL: ENV_URL, MAILQ_TABLE_PREFIX: 'env_' },
      flags: { databaseUrl: FLAG_URL, tablePrefix: 'flag_', worker: { concurrency: 9, timeout: undefined } },
    });
    expect(withFlags.settings).toMatchObject({ databaseUrl: FLAG_URL, tablePrefix: 'flag_' });
    // A flag overrides one worker setting; the file's others stay.
    expect(withFlags.settings.worker).toMatchObject({ concurrency: 9, queues: ['mail', 'bulk'], timeout: 120_000 });
  });

  it('MAILQ_DATABASE_URL wins over DATABASE_URL, which is the fallback', async () => {
    const empty = path.join(dir, 'other');
    expect((await loadSettings({ cwd: empty, env: { DATABASE_URL: ENV_URL } })).settings.databaseUrl).toBe(ENV_URL);
    expect((await loadSettings({ cwd: empty, env: { DATABASE_URL: ENV_URL, MAILQ_DATABASE_URL: FLAG_URL } })).settings.databaseUrl).toBe(FLAG_URL);
  });

  it('--config names a file (relative to cwd) that may export a function; .ts files load too', async () => {
    const custom = await loadSettings({ cwd: dir, configPath: 'other/custom.mjs', env: { MAILQ_DATABASE_URL: ENV_URL } });
    expect(custom.configPath).toBe(path.join(dir, 'other', 'custom.mjs'));
    expect(custom.settings.tablePrefix).toBe('custom_');
    expect(custom.settings.worker.tries).toBe(5);
    // The explicit file replaces the one in cwd: nothing of mailq.config.mjs leaks in.
    expect(custom.settings.worker.concurrency).toBe(1);

    const typed = await loadSettings({ cwd: dir, configPath: path.join(dir, 'other', 'typed.ts'), env: { MAILQ_DATABASE_URL: ENV_URL } });
    expect(typed.settings.tablePrefix).toBe('ts_');
  });

  it('a .ts job module outside a "type": "module" package loads its named and default exports', async () => {
    const jobs = await loadJobModules([path.join(dir, 'other', 'jobs.ts')]);
    expect(jobs.map((job) => job.name).sort()).toEqual(['by-default', 'named']);
  });

  it('job modules named in the file resolve from its folder; from flags, from cwd', async () => {
    const fromFile = await loadSettings({ cwd: path.join(dir, 'other'), configPath: path.join(dir, 'mailq.config.mjs'), env: {} });
    expect(fromFile.jobModules).toEqual([path.join(dir, 'jobs', 'mail.mjs')]);
    const fromFlag = await loadSettings({ cwd: path.join(dir, 'other'), configPath: path.join(dir, 'mailq.config.mjs'), env: {}, flags: { jobs: ['./mine.mjs', 'some-package/jobs'] } });
    expect(fromFlag.jobModules).toEqual([path.join(dir, 'other', 'mine.mjs'), 'some-package/jobs']);
  });

  it('a config file that is missing, throws, or exports no object is a ConfigError', async () => {
    await expect(loadSettings({ cwd: dir, configPath: 'nope.mjs', env: {} })).rejects.toThrow(new ConfigError('config file not found: nope.mjs'));
    await expect(loadSettings({ cwd: dir, configPath: 'other/broken.mjs', env: {} })).rejects.toThrow(/cannot load config file .*broken\.mjs: boom at load/);
    await expect(loadSettings({ cwd: dir, configPath: 'other/scalar.mjs', env: {} })).rejects.toThrow(/must export an object/);
  });
});

describe('durations and lists', () => {
  const base = { databaseUrl: ENV_URL };

  it.each([['120s'], [120], ['2m'], ['120'], ['120000ms']])('timeout %j is 120,000 ms', (timeout) => {
    expect(parseSettings({ ...base, worker: { timeout } }).worker.timeout).toBe(120_000);
  });

  it('sleep, backoff list, exponential backoff, queues from a comma list', () => {
    const settings = parseSettings({ ...base, worker: { sleep: '500ms', backoff: '60,120,300', queues: 'high, low' } });
    expect(settings.worker).toMatchObject({ sleep: 500, backoff: [60_000, 120_000, 300_000], queues: ['high', 'low'] });
    expect(parseSettings({ ...base, worker: { backoff: 'exp:1s:10m' } }).worker.backoff).toEqual({ exponential: { baseMs: 1_000, maxMs: 600_000, jitter: true } });
    expect(parseSettings({ ...base, worker: { backoff: [1, '2s'] } }).worker.backoff).toEqual([1_000, 2_000]);
  });

  it('defaults', () => {
    expect(parseSettings(base)).toMatchObject({
      tablePrefix: '',
      logLevel: 'info',
      worker: { queues: ['default'], concurrency: 1, tries: 1, timeout: 60_000, sleep: 100, stopWhenEmpty: false },
    });
  });
});

describe('bad values: a ConfigError that names the field', () => {
  it.each([
    [{ worker: { concurrency: 0 } }, /^invalid setting worker\.concurrency: /],
    [{ worker: { concurrency: 'lots' } }, /^invalid setting worker\.concurrency: /],
    [{ worker: { timeout: 'soon' } }, /^invalid setting worker\.timeout: invalid duration 'soon'/],
    [{ worker: { timeout: -5 } }, /^invalid setting worker\.timeout: invalid duration -5/],
    [{ worker: { backoff: [] } }, /^invalid setting worker\.backoff: backoff list is empty/],
    [{ worker: { queues: ' , ' } }, /^invalid setting worker\.queues: name at least one queue/],
    [{ tablePrefix: 'bad-prefix!' }, /^invalid setting tablePrefix: 'bad-prefix!' may hold letters, digits and _ only/],
    [{ tablePrefix: 'p'.repeat(25) }, /^invalid setting tablePrefix: 'p{25}' is 25 characters long: at most 24, so that every index name fits MySQL's 64/],
    [{ worker: { concurrency: true } }, /^invalid setting worker\.concurrency: expected an integer/],
    [{ worker: { processes: 1e9 } }, /^invalid setting worker\.processes: expected an integer ≤ 1000/],
    [{ worker: { timeout: '30d' } }, /^invalid setting worker\.timeout: at most 24 days/],
    [{ worker: { queues: "mail,x'; DROP TABLE jobs" } }, /^invalid setting worker\.queues: queue 'x'; DROP TABLE jobs' may hold letters, digits/],
    [{ mailbox: { queue: 'a b' } }, /^invalid setting mailbox\.queue: 'a b' may hold letters, digits/],
    [{ logLevel: 'loud' }, /^invalid setting logLevel: /],
    [{ databaseUrl: 'postgres://u@h/db' }, /^invalid setting databaseUrl: unsupported database URL scheme 'postgres:'/],
  ])('%j', (input, message) => {
    let error: unknown;
    try {
      parseSettings({ databaseUrl: ENV_URL, ...input });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).exitCode).toBe(2);
    expect((error as Error).message).toMatch(message);
  });

  it('a database URL with a password keeps it out of the error', () => {
    expect(() => parseSettings({ databaseUrl: 'mysql://me:hunter2@host:3306' })).toThrow(/mysql:\/\/me:\*\*\*@host:3306/);
    expect(() => parseSettings({ databaseUrl: 'mysql://me:hunter2@host:3306' })).not.toThrow(/hunter2/);
  });
});

describe('the CLI reads the config file', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('config');
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('`mailq migrate --config <file>` uses its database and table prefix', async () => {
    const file = path.join(dir, 'cli.config.mjs');
    await writeFile(file, `export default { databaseUrl: '${db.url}', tablePrefix: 'cfg_', logLevel: 'silent' };\n`);
    const saved = { MAILQ_DATABASE_URL: process.env.MAILQ_DATABASE_URL, DATABASE_URL: process.env.DATABASE_URL, MAILQ_TABLE_PREFIX: process.env.MAILQ_TABLE_PREFIX };
    for (const key of Object.keys(saved)) delete process.env[key];
    const output = captureOutput();
    try {
      expect(await main(['migrate', '--config', file], output)).toBe(0);
    } finally {
      for (const [key, value] of Object.entries(saved)) if (value !== undefined) process.env[key] = value;
    }
    const all = migrations.map((migration) => migration.name);
    expect(output.stdout).toEqual([`Migrated: ${all.join(', ')}`]);
    const mq = openQueue(db.url, { tablePrefix: 'cfg_' });
    try {
      expect(await mq.migrationStatus()).toEqual({ applied: all, pending: [] });
    } finally {
      await mq.close();
    }
  });
});
