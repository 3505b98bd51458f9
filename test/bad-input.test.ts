import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Argv, CommandModule } from 'yargs';
// The compiled CLI, as the other CLI suites run it (and as users do): faster than through the test transform.
import { commands } from '../dist/src/cli/commands/index.js';
import { main as compiledMain } from '../dist/src/cli/main.js';
import { ruleOf } from '../dist/src/cli/options.js';
import type { ValueRule } from '../src/cli/options.js';
import { MAX_TABLE_PREFIX_LENGTH } from '../src/db/tables.js';
import { InvalidJobError } from '../src/errors.js';
import type { Mailq } from '../src/mailq.js';
import type { Output } from '../src/cli/output.js';

const main = compiledMain as (argv: string[], output: Output) => Promise<number>;
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { captureOutput, FIXTURE_JOBS, openQueue, runCli } from './support/queue.js';

// Every verb, every option and argument, given values it cannot use: one clear line on stderr,
// exit 2, no stack trace, and not a row written anywhere. The options are read from the verbs
// themselves, so a flag added later is walked too (and one whose kind this file does not know
// fails the coverage test below). Runs main() in this process; a few real processes at the end
// prove the exit codes.

type Spec = Record<string, unknown> & { type?: string; array?: boolean };
interface Declared {
  verb: string;
  positionals: Array<{ key: string; required: boolean; variadic: boolean }>;
  specs: Map<string, Spec>;
}

/** Runs a verb's builder against a recorder: every option and positional it declares, with its spec. */
function declared(command: CommandModule): Declared {
  const specs = new Map<string, Spec>();
  const recorder: Argv = new Proxy({} as Argv, {
    get: (_, method) => (...args: unknown[]) => {
      if ((method === 'option' || method === 'positional') && typeof args[0] === 'string') specs.set(args[0], args[1] as Spec);
      return recorder;
    },
  });
  (command.builder as (yargs: Argv) => Argv)(recorder);
  const [verb, ...rest] = String(command.command).split(' ');
  const positionals = rest.map((part) => ({ key: part.replace(/[<>[\]]|\.\./g, ''), required: part.startsWith('<'), variadic: part.includes('..') }));
  return { verb: verb!, positionals, specs };
}

const verbs = commands.map((command) => declared(command as CommandModule));

/** Global flags (src/cli/main.ts) and their bad values: checked by the settings schema, for every verb. */
const GLOBAL_BAD: Record<string, string[]> = {
  'database-url': ['', 'http://db/x', 'mysql://u:p@ss@127.0.0.1:3306', 'mysql://127.0.0.1/x?ssl=toString', 'mysql://u:p%zz@127.0.0.1/x', 'mysql://127.0.0.1/x?sslmode=require', 'not a url'],
  // (An empty --prefix= is fine: no prefix, overriding a config file's.)
  prefix: ["x'; DROP TABLE jobs; --", 'mq-', 'p'.repeat(MAX_TABLE_PREFIX_LENGTH + 1), 'préfixe_'],
  'log-level': ['loud', '', "info'; --"],
  config: ['/nonexistent/mailq.config.js', ''],
};

const HUGE_DIGITS = '9'.repeat(400);
const SQL = "1'; DROP TABLE jobs; --";
const NAMES_BAD = [SQL, 'a"b', '`jobs`', '', 'a'.repeat(192), 'bad\u202ename', 'tab\tname', '*', 'a b', '-x'];

/** Values a rule must refuse. */
function badValues(rule: ValueRule | undefined, spec: Spec, key: string): string[] {
  if (!rule) {
    if (spec.type === 'boolean') return ['maybe', '2', 'yes please'];
    if (key === 'jobs') return ['/nonexistent/jobs.mjs', ''];
    throw new Error(`--${key}: no rule to test (declare it with a helper of src/cli/options.ts)`);
  }
  switch (rule.kind) {
    case 'integer': {
      const below = rule.min - 1 >= Number.MIN_SAFE_INTEGER ? [String(rule.min - 1)] : [];
      const above = rule.max < Number.MAX_SAFE_INTEGER ? String(rule.max + 1) : '99999999999999999999';
      return ['abc', '', ...below, above, '1.5', '1e3', '0x10', 'NaN', 'Infinity', HUGE_DIGITS, SQL, '٣', '１'];
    }
    case 'number':
      return ['abc', '', String(rule.min - 0.5), String(rule.max + 1), 'NaN', 'Infinity', '1e400', '1,5', SQL];
    case 'duration':
      return ['abc', '', '-5s', HUGE_DIGITS, '1e400', '5 parsecs', '٣s', SQL, ...(rule.maxMs < Number.MAX_SAFE_INTEGER ? ['30d'] : ['11y'])];
    case 'name':
      return rule.list ? [...NAMES_BAD.filter(Boolean), 'ok,bad;name'] : NAMES_BAD;
    case 'uuid':
      return ['abc', '', SQL, '00000000-0000-0000-0000-00000000000g', 'x'.repeat(1_000)];
    case 'json':
      return ['{bad', '', SQL, '{"a":1}{'];
    case 'text':
      return ['', 'bell\u0007', 'x'.repeat(100_001)];
    case 'backoff':
      return ['', 'abc', '-5', '1,,2', 'exp:abc', HUGE_DIGITS];
    case 'bytes':
      return ['', 'abc', '-5', '0', '1e400', '5 parsecs'];
    case 'rate':
      return ['', 'abc', '0/min', '5/0s', '10/fortnight', SQL];
    case 'ids':
      return ['abc', '0', '-1', '1.5', '', '1e3', SQL, ...(rule.all ? [] : ['all'])];
  }
}

/** A valid invocation of each verb, so that only the value under test is wrong. */
const BASE: Record<string, { positionals?: string[]; flags?: Record<string, string> }> = {
  dispatch: { positionals: ['record', '{"n":1}'], flags: { jobs: FIXTURE_JOBS } },
  'failed:show': { positionals: ['1'] },
  retry: { positionals: ['1'] },
  forget: { positionals: ['1'] },
  clear: { positionals: ['q'] },
  batch: { positionals: ['6f9619ff-8b86-4011-b42d-00c04fc964ff'] },
  'batch:cancel': { positionals: ['6f9619ff-8b86-4011-b42d-00c04fc964ff'] },
  pause: { positionals: ['q'] },
  resume: { positionals: ['q'] },
};

interface Case {
  name: string;
  argv: string[];
}

/** Verbs walked with every bad value of the global flags; the others with the first of each (one code path reads them all). */
const GLOBALS_IN_FULL = new Set(['failed', 'demo', 'work']);

function cases(dbUrl: string): Case[] {
  const all: Case[] = [];
  for (const { verb, positionals, specs } of verbs) {
    const base = BASE[verb] ?? {};
    const baseFlags = (except?: string) => Object.entries(base.flags ?? {}).filter(([key]) => key !== except).flatMap(([key, value]) => [`--${key}`, value]);
    const args = (positionalValues: string[], flags: string[], except?: string) => [verb, ...positionalValues, ...baseFlags(except), ...flags, `--database-url=${dbUrl}`, '--log-level=silent'];
    for (const [key, spec] of specs) {
      const positional = positionals.findIndex((p) => p.key === key);
      const values = badValues(ruleOf(spec), spec, key);
      // Booleans all go through one check: one bad value each, all three on the first verb.
      for (const value of spec.type === 'boolean' && verb !== 'migrate' ? values.slice(0, 1) : values) {
        if (positional === -1) {
          all.push({ name: `${verb} --${key}=${JSON.stringify(value).slice(0, 40)}`, argv: args(base.positionals ?? [], [`--${key}=${value}`], key) });
        } else {
          const values = [...(base.positionals ?? [])];
          values[positional] = value;
          all.push({ name: `${verb} <${key}>=${JSON.stringify(value).slice(0, 40)}`, argv: [verb, ...values, ...baseFlags(), `--database-url=${dbUrl}`, '--log-level=silent'] });
          // After `--` too, where yargs would leave arguments unread.
          if (value === SQL) all.push({ name: `${verb} -- ${JSON.stringify(value).slice(0, 40)}`, argv: [verb, ...baseFlags(), `--database-url=${dbUrl}`, '--log-level=silent', '--', ...values] });
        }
      }
    }
    for (const [flag, values] of Object.entries(GLOBAL_BAD)) {
      for (const value of GLOBALS_IN_FULL.has(verb) ? values : values.slice(0, 1)) all.push({ name: `${verb} --${flag}=${JSON.stringify(value).slice(0, 40)}`, argv: [verb, ...(base.positionals ?? []), ...baseFlags(), `--${flag}=${value}`, ...(flag === 'database-url' ? [] : [`--database-url=${dbUrl}`]), ...(flag === 'log-level' ? [] : ['--log-level=silent'])] });
    }
    all.push({ name: `${verb} --verbose=maybe`, argv: [...args(base.positionals ?? [], ['--verbose=maybe'])] });
    // A flag given twice where one value is expected.
    const single = [...specs].find(([key, spec]) => !spec.array && spec.type !== 'boolean' && !positionals.some((p) => p.key === key) && !(base.flags ?? {})[key]);
    if (single) all.push({ name: `${verb} --${single[0]} twice`, argv: args(base.positionals ?? [], [`--${single[0]}=1`, `--${single[0]}=2`]) });
  }
  return all;
}

let db: TestDatabase;
let mq: Mailq;

/** Rows in every table of the test database: nothing a refused command does may change them. */
async function rowCounts(): Promise<Record<string, number>> {
  const [tables] = (await mq.knex.raw('SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME')) as [Array<{ name: string }>];
  const [rows] = (await mq.knex.raw(tables.map((table) => `SELECT '${table.name}' AS name, COUNT(*) AS n FROM \`${table.name}\``).join(' UNION ALL '))) as [Array<{ name: string; n: number }>];
  return Object.fromEntries(rows.map((row) => [row.name, Number(row.n)]));
}

async function run(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const output = captureOutput();
  let timer: NodeJS.Timeout | undefined;
  const ranAway = new Promise<number>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`accepted and still running after 10 s: ${argv.join(' ').slice(0, 200)}`)), 10_000);
  });
  try {
    const code = await Promise.race([main(argv, output), ranAway]);
    return { code, out: output.stdout, err: output.stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** One clear line (plus, for usage errors, the pointer to --help), no stack trace, nothing on stdout. */
function expectOneClearLine(result: { code: number; out: string[]; err: string[] }, name: string, code = 2): void {
  expect(result.code, `${name}: ${result.err.join(' | ')}${result.out.join(' | ')}`).toBe(code);
  expect(result.out, name).toEqual([]);
  expect(result.err[0], name).toMatch(/^mailq: \S/);
  expect(result.err.length, `${name}: ${result.err.join(' | ')}`).toBeLessThanOrEqual(2);
  if (result.err[1] !== undefined) expect(result.err[1], name).toBe('Run `mailq --help` for usage.');
  expect(result.err.join('\n'), name).not.toMatch(/^\s+at |\n\s+at |Error: /);
}

beforeAll(async () => {
  db = await createTestDatabase('bad_input');
  mq = openQueue(db.url);
  await mq.migrate();
  // A row in each table a verb could touch, so that "nothing written" also means "nothing deleted".
  await mq.dispatch('record', { n: 1 }, { queue: 'q' });
  await mq.knex(mq.tables.failedJobs).insert({ uuid: '6f9619ff-8b86-4011-b42d-00c04fc96400', queue: 'q', name: 'record', payload: '{"n":2}', attempts: 1, exception: 'Error: x' });
  await mq.batch('record', [{ n: 3 }], { name: 'kept' });
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

describe('every verb, every option, values it cannot use', { timeout: 180_000 }, () => {
  it('knows a bad value for every option of every verb', () => {
    for (const { specs } of verbs) for (const [key, spec] of specs) expect(badValues(ruleOf(spec), spec, key).length).toBeGreaterThan(0);
    expect(verbs.map((verb) => verb.verb)).toEqual(expect.arrayContaining(['dispatch', 'work', 'failed', 'retry', 'sync-mailbox', 'demo', 'fake-tws', 'schedule:run']));
  });

  it('one clear line, exit 2, no stack trace, no row written', async () => {
    const before = await rowCounts();
    const all = cases(db.url);
    expect(all.length).toBeGreaterThan(500);
    const seen: string[] = [];
    for (const { name, argv } of all) {
      const result = await run(argv);
      seen.push(`${name.padEnd(60)} ${result.err[0]}`);
      expectOneClearLine(result, name);
    }
    // MAILQ_SHOW_BAD_INPUT=1 prints every case and the line it got, to read the messages as a user would.
    if (process.env.MAILQ_SHOW_BAD_INPUT) console.log(`${all.length} cases\n${seen.join('\n')}`);
    expect(await rowCounts()).toEqual(before);
  });

  it('the values the issue names: --limit=abc and ?ssl=toString', async () => {
    const limit = await run(['failed', '--limit=abc', `--database-url=${db.url}`]);
    expectOneClearLine(limit, 'failed --limit=abc');
    expect(limit.err[0]).toBe("mailq: --limit: expected an integer from 1 to 10000, got 'abc'");
    const ssl = await run(['failed', `--database-url=${db.url}?ssl=toString`]);
    expectOneClearLine(ssl, 'ssl=toString');
    expect(ssl.err[0]).toMatch(/ssl=toString: expected ssl=true, ssl=skip-verify or ssl=false$/);
  });
});

describe('dispatch: names, payloads and jobs nobody defines', () => {
  async function dispatch(...args: string[]) {
    return run(['dispatch', ...args, `--database-url=${db.url}`, '--log-level=silent']);
  }

  it('a job no loaded module defines is refused with what to do, and queued with --force', async () => {
    const before = await rowCounts();
    const unknown = await dispatch('send-welcome-emial', '{}');
    expectOneClearLine(unknown, 'unknown job');
    expect(unknown.err[0]).toBe(
      "mailq: no loaded module defines job 'send-welcome-emial': load its module with --jobs <module> (or the config file's jobs), or pass --force to dispatch it for another service's workers",
    );
    expect(await rowCounts()).toEqual(before);

    const forced = await dispatch('send-welcome-email', '{"to":"ana@example.com"}', '--force', '--queue', 'emails');
    expect(forced.code).toBe(0);
    expect(forced.out[0]).toMatch(/^Dispatched send-welcome-email as job \d+ on queue emails\.$/);
    // The mailbox add-on's job is loaded wherever the add-on is enabled.
    expect((await dispatch('sync-taxpayer-mailbox', '{"taxpayerId":1}', '--mailbox')).code).toBe(0);
    await mq.knex(mq.tables.jobs).whereIn('name', ['send-welcome-email', 'sync-taxpayer-mailbox']).delete();
  });

  it('unicode queue names are names: stored and read back as given', async () => {
    const result = await dispatch('record', '{"n":5}', '--jobs', FIXTURE_JOBS, '--queue', 'correos-año');
    expect(result.code, result.err.join('\n')).toBe(0);
    expect(await mq.knex(mq.tables.jobs).where({ queue: 'correos-año' }).count({ n: '*' })).toEqual([{ n: 1 }]);
    await mq.knex(mq.tables.jobs).where({ queue: 'correos-año' }).delete();
  });

  it("a payload over the server's max_allowed_packet: one line, exit 2, nothing written", async () => {
    const [[{ packet }]] = (await mq.knex.raw('SELECT @@max_allowed_packet AS packet')) as [[{ packet: number }]];
    const before = await rowCounts();
    const result = await dispatch('record', JSON.stringify({ n: 1, blob: 'x'.repeat(Number(packet) + 1024) }), '--force');
    expectOneClearLine(result, 'huge payload');
    expect(result.err[0]).toMatch(/^mailq: invalid payload for job 'record': too large: its row is bigger than the server's max_allowed_packet \(\d+MB of JSON\): store large data elsewhere/);
    expect(await rowCounts()).toEqual(before);
  });
});

describe('the library refuses the same values', () => {
  it.each([
    [{ queue: SQL }, /queue '1'; DROP TABLE jobs; --' may hold letters, digits/],
    [{ queue: 'q'.repeat(192) }, /is 192 characters long \(at most 191\)/],
    [{ delay: 'soonish' }, /^delay: invalid duration 'soonish'/],
    [{ delay: HUGE_DIGITS }, /^delay: invalid duration '9+…': longer than 10 years/],
    [{ timeout: '30d' }, /^timeout: at most 24 days/],
    [{ backoff: [] }, /^backoff: backoff list is empty/],
  ])('dispatch options %j', async (options, message) => {
    await expect(mq.dispatch('record', { n: 1 }, options)).rejects.toThrow(InvalidJobError);
    await expect(mq.dispatch('record', { n: 1 }, options)).rejects.toThrow(message);
  });

  it('job names too', async () => {
    await expect(mq.dispatch(SQL, {})).rejects.toThrow(/^job name '1'; DROP TABLE jobs; --' may hold letters, digits/);
  });
});

describe('as real processes: the exit codes', () => {
  it.each([
    [['failed', '--limit=abc'], /^mailq: --limit: expected an integer from 1 to 10000, got 'abc'$/m],
    [['dispatch', 'no-such-job'], /^mailq: no loaded module defines job 'no-such-job'/m],
    [['work', '--concurrency=lots'], /^mailq: --concurrency: expected an integer from 1 to 10000, got 'lots'$/m],
  ])('%j exits 2 with one line', async (argv, message) => {
    const result = await runCli(argv, { env: { MAILQ_DATABASE_URL: db.url } });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).not.toMatch(/^\s+at /m);
    expect(result.stdout).toBe('');
  });
});
