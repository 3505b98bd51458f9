import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger, createMailq, Scheduler, type CommandRunner, type Mailq, type ScheduleEntryInput } from '../src/index.js';
import { scheduleEntrySchema, splitCommandLine } from '../src/schedule/entry.js';
import { main } from '../src/cli/main.js';
import type { Output } from '../src/cli/output.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

const silent = createLogger({ level: 'silent' });
let db: TestDatabase;
let instances: Mailq[];
let mq: Mailq;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase('schedule');
  instances = [0, 1].map(() => createMailq({ databaseUrl: db.url, logger: silent, poolMax: 4 }));
  mq = instances[0]!;
  await mq.migrate();
  dir = mkdtempSync(path.join(tmpdir(), 'mailq-schedule-'));
});

afterAll(async () => {
  await Promise.all((instances ?? []).map((instance) => instance.close()));
  await db?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await mq.knex(mq.tables.scheduleRuns).delete();
  await mq.knex(mq.tables.jobs).delete();
});

const entries = (...inputs: ScheduleEntryInput[]) => inputs.map((input) => scheduleEntrySchema.parse(input));

/** A runner that records what it ran, slowly enough for two schedulers to overlap. */
function recordingRunner(): CommandRunner & { calls: string[][] } {
  const calls: string[][] = [];
  const runner = (async (argv: string[]) => {
    calls.push(argv);
    await new Promise((resolve) => setTimeout(resolve, 20));
    return { exitCode: 0, batchIds: [] };
  }) as unknown as CommandRunner & { calls: string[][] };
  runner.calls = calls;
  return runner;
}

async function runRows(): Promise<Array<{ entry: string; slot: Date; status: string; batch_id: string | null; exit_code: number | null; detail: string | null }>> {
  return mq.knex(mq.tables.scheduleRuns).select('entry', 'slot', 'status', 'batch_id', 'exit_code', 'detail').orderBy('slot');
}

function capture(): Output & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, isTTY: false, out: (text) => void lines.push(text), err: (text) => void errors.push(text) };
}

describe('the scheduler', () => {
  it('fires each slot once when two schedulers run at the same moments', async () => {
    const schedule = entries({ cron: '*/5 * * * *', run: 'dispatch nightly' });
    const runners = [recordingRunner(), recordingRunner()];
    const schedulers = instances.map((instance, n) => new Scheduler(instance.knex, instance.tables, schedule, { runner: runners[n]!, logger: silent, runnerId: `host-${n}` }));
    const moments = ['02:00:00.000', '02:00:40', '02:03:10', '02:05:00.250', '02:05:59', '02:10:01'].map((time) => new Date(`2026-01-01T${time}Z`));
    for (const now of moments) {
      const results = await Promise.all(schedulers.map((scheduler) => scheduler.runDue(now)));
      expect(results.flat().map((result) => result.outcome).sort()).toEqual(results.flat().some((result) => result.outcome === 'fired') ? ['fired', 'taken'] : ['taken', 'taken']);
    }
    const rows = await runRows();
    expect(rows.map((row) => row.slot.toISOString())).toEqual(['2026-01-01T02:00:00.000Z', '2026-01-01T02:05:00.000Z', '2026-01-01T02:10:00.000Z']);
    expect(rows.every((row) => row.status === 'done' && row.exit_code === 0)).toBe(true);
    expect(runners[0]!.calls.length + runners[1]!.calls.length).toBe(3);
    expect([...runners[0]!.calls, ...runners[1]!.calls]).toEqual([['dispatch', 'nightly'], ['dispatch', 'nightly'], ['dispatch', 'nightly']]);
  });

  it('reads cron in the entry timezone, and does not fire a slot older than the grace period', async () => {
    const runner = recordingRunner();
    const scheduler = new Scheduler(mq.knex, mq.tables, entries({ cron: '0 2 * * *', timezone: 'America/Lima', run: 'sync-mailbox --queue' }), { runner, logger: silent, grace: '5m' });
    // 02:00 in Lima is 07:00 UTC.
    expect((await scheduler.runDue(new Date('2026-03-10T02:00:30Z')))[0]!.outcome).toBe('not-due');
    expect((await scheduler.runDue(new Date('2026-03-10T07:04:00Z')))[0]).toMatchObject({ outcome: 'fired', slot: new Date('2026-03-10T07:00:00Z') });
    expect((await scheduler.runDue(new Date('2026-03-11T07:06:00Z')))[0]!.outcome).toBe('not-due');
    expect(runner.calls).toEqual([['sync-mailbox', '--queue']]);
  });

  it('withoutOverlapping skips slots while the last run\'s batch is running', async () => {
    let batchId = '';
    const runner: CommandRunner = async () => {
      const batch = await mq.batch('nightly-work', [{ n: 1 }], { delay: '1h' });
      batchId = batch.id;
      return { exitCode: 0, batchIds: [batch.id] };
    };
    const scheduler = new Scheduler(mq.knex, mq.tables, entries({ cron: '* * * * *', run: 'sync-mailbox --queue', withoutOverlapping: true }), { runner, logger: silent });
    expect((await scheduler.runDue(new Date('2026-01-01T02:00:01Z')))[0]).toMatchObject({ outcome: 'fired', batchId });
    const first = batchId;
    const skipped = (await scheduler.runDue(new Date('2026-01-01T02:01:01Z')))[0]!;
    expect(skipped).toMatchObject({ outcome: 'skipped' });
    expect(skipped.reason).toContain(`the batch ${first} of the 2026-01-01T02:00:00.000Z run is still running (0/1 done)`);
    await mq.batches.cancel(first);
    expect((await scheduler.runDue(new Date('2026-01-01T02:02:01Z')))[0]).toMatchObject({ outcome: 'fired' });
    expect(batchId).not.toBe(first);
    expect((await runRows()).map((row) => [row.status, row.batch_id])).toEqual([
      ['done', first],
      ['skipped', null],
      ['done', batchId],
    ]);
  });

  it('records its host in each run it fires: the hostname option, else the machine\'s', async () => {
    const schedule = entries({ cron: '* * * * *', run: 'dispatch nightly' });
    const named = new Scheduler(mq.knex, mq.tables, schedule, { runner: recordingRunner(), logger: silent, hostname: 'sched-host-a' });
    await named.runDue(new Date('2026-01-01T02:00:00Z'));
    const unnamed = new Scheduler(mq.knex, mq.tables, schedule, { runner: recordingRunner(), logger: silent });
    await unnamed.runDue(new Date('2026-01-01T02:01:00Z'));
    const rows = await mq.knex(mq.tables.scheduleRuns).select('runner').orderBy('slot');
    expect(rows.map((row) => row.runner)).toEqual([`sched-host-a:${process.pid}`, `${hostname()}:${process.pid}`]);
  });

  it('records a run that throws as failed', async () => {
    const runner: CommandRunner = async () => {
      throw new Error('no such thing');
    };
    const scheduler = new Scheduler(mq.knex, mq.tables, entries({ cron: '* * * * *', run: 'whatever' }), { runner, logger: silent });
    expect((await scheduler.runDue(new Date('2026-01-01T02:00:01Z')))[0]).toMatchObject({ outcome: 'fired', exitCode: 1, reason: 'no such thing' });
    expect((await runRows())[0]).toMatchObject({ status: 'failed' });
  });
});

describe('old runs', () => {
  it('are pruned after 30 days in minute 17 of an hour, each entry keeping its newest run', async () => {
    const daysAgo = (days: number) => mq.knex.raw(`NOW(3) - INTERVAL ${days} DAY`);
    const row = (entry: string, days: number) => ({ entry, slot: daysAgo(days), status: 'done', runner: 'host-0' });
    await mq.knex(mq.tables.scheduleRuns).insert([row('hourly', 45), row('hourly', 31), row('hourly', 29), row('hourly', 0), row('yearly', 400), row('yearly', 40)]);
    const scheduler = new Scheduler(mq.knex, mq.tables, [], { runner: recordingRunner(), logger: silent });

    await scheduler.runDue(new Date('2026-01-01T02:16:00Z'));
    expect(await mq.knex(mq.tables.scheduleRuns).count({ n: '*' })).toEqual([{ n: 6 }]);

    await scheduler.runDue(new Date('2026-01-01T02:17:00Z'));
    const left = await mq.knex(mq.tables.scheduleRuns).select('entry', mq.knex.raw('DATEDIFF(NOW(), slot) AS days')).orderBy(['entry', 'slot']);
    expect(left.map((run: { entry: string; days: number }) => `${run.entry} ${run.days}`)).toEqual(['hourly 29', 'hourly 0', 'yearly 40']);
    expect(await scheduler.runs.prune()).toBe(0);
  });
});

describe('schedule entries', () => {
  it('splits command lines like a shell, quotes included', () => {
    expect(splitCommandLine(`dispatch probe '{"from": "cron"}' --queue  sched`)).toEqual(['dispatch', 'probe', '{"from": "cron"}', '--queue', 'sched']);
    expect(splitCommandLine('a "b c" d\\ e ""')).toEqual(['a', 'b c', 'd e', '']);
    expect(() => splitCommandLine('a "b')).toThrow('unclosed " in command line');
  });

  it('rejects a bad cron, an unknown timezone, and a command that never returns', () => {
    expect(() => scheduleEntrySchema.parse({ cron: '61 * * * *', run: 'x' })).toThrow("invalid cron '61 * * * *'");
    expect(() => scheduleEntrySchema.parse({ cron: '0 2 * * *', timezone: 'Mars/Base', run: 'x' })).toThrow("unknown timezone 'Mars/Base'");
    expect(() => scheduleEntrySchema.parse({ cron: '0 2 * * *', run: 'work --queue a' })).toThrow("'work' runs until stopped and cannot be scheduled");
  });
});

describe('mailq schedule:run / schedule / schedule:list', () => {
  function writeConfig(name: string, schedule: ScheduleEntryInput[], logLevel = 'warn'): string {
    const file = path.join(dir, `${name}.mjs`);
    writeFileSync(file, `export default ${JSON.stringify({ databaseUrl: db.url, logLevel, schedule })};\n`);
    return file;
  }

  async function probeJobs(): Promise<number> {
    const [row] = await mq.knex(mq.tables.jobs).where({ name: 'sched-probe' }).count({ n: '*' });
    return Number(row!.n);
  }

  it('runs the due entries through the CLI parser, once per slot, and fails when a run fails', async () => {
    const config = writeConfig('cli', [
      { cron: '* * * * *', run: `dispatch sched-probe '{"from":"cron"}' --queue sched --force`, name: 'probe' },
      { cron: '* * * * *', run: 'dispatch sched-bad not-json', name: 'bad' },
    ]);
    const first = capture();
    expect(await main(['schedule:run', '--config', config], first)).toBe(1);
    expect(first.lines.some((line) => /dispatch sched-probe .*: done$/.test(line))).toBe(true);
    expect(first.lines.some((line) => /dispatch sched-bad not-json: failed \(exit 2\)$/.test(line))).toBe(true);
    expect(await probeJobs()).toBe(1);
    const rows = await runRows();
    expect(rows.map((row) => [row.entry, row.status, row.exit_code]).sort()).toEqual([
      ['bad', 'failed', 2],
      ['probe', 'done', 0],
    ]);
    expect(rows.find((row) => row.entry === 'bad')!.detail).toContain('[payload]: not valid JSON');

    const list = capture();
    expect(await main(['schedule:list', '--json', '--config', config], list)).toBe(0);
    expect((JSON.parse(list.lines.join('\n')) as Array<{ key: string; last: { status: string } }>).map((entry) => [entry.key, entry.last.status])).toEqual([
      ['probe', 'done'],
      ['bad', 'failed'],
    ]);
  });

  it('names its runs after --hostname or MAILQ_HOSTNAME, as workers and supervisors name themselves', async () => {
    const config = writeConfig('host', [{ cron: '* * * * *', run: `dispatch sched-probe '{"from":"host"}' --queue sched --force`, name: 'host-probe' }]);
    const runners = async () => (await mq.knex(mq.tables.scheduleRuns).select('runner')).map((row) => String(row.runner));
    expect(await main(['schedule:run', '--config', config, '--hostname', 'cron-box-1'], capture())).toBe(0);
    expect(await runners()).toEqual([`cron-box-1:${process.pid}`]);

    await mq.knex(mq.tables.scheduleRuns).delete();
    expect(await main(['schedule:run', '--config', config], capture(), { env: { ...process.env, MAILQ_HOSTNAME: 'cron-box-2' } })).toBe(0);
    expect(await runners()).toEqual([`cron-box-2:${process.pid}`]);
  });

  it('says what is wrong with a bad schedule in one line, exit code 2', async () => {
    const bad = capture();
    expect(await main(['schedule:run', '--config', writeConfig('bad', [{ cron: '0 25 * * *', run: 'x' }])], bad)).toBe(2);
    expect(bad.errors[0]).toMatch(/^mailq: invalid setting schedule\.0\.cron: invalid cron '0 25 \* \* \*'/);
    const none = capture();
    expect(await main(['schedule:run', '--config', writeConfig('none', [])], none)).toBe(2);
    expect(none.errors[0]).toBe('mailq: no schedule: add `schedule: [{ cron, run }]` to mailq.config.js');
  });

  it('two `mailq schedule` processes and two `schedule:run` processes fire each slot once', async () => {
    // Every second, so a few seconds hold several slots that both processes race for.
    const config = writeConfig('loop', [{ cron: '* * * * * *', run: `dispatch sched-probe '{"from":"loop"}' --queue sched --force`, name: 'every-second' }], 'info');
    const loops = [0, 1].map(() => startProcess(['bin/mailq.js', 'schedule', '--config', config]));
    // Both schedulers up (their SIGTERM handler installed) and a few slots fired, however slow the machine.
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && !(loops.every((loop) => loop.stderr().includes('scheduler started')) && (await runRows()).length >= 4)) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const loop of loops) loop.child.kill('SIGTERM');
    const exits = await Promise.all(loops.map((loop) => loop.exit));
    for (const exit of exits) expect(exit, exit.stderr).toMatchObject({ code: 0 });
    const once = [0, 1].map(() => startProcess(['bin/mailq.js', 'schedule:run', '--config', config]));
    for (const exit of await Promise.all(once.map((run) => run.exit))) expect(exit, exit.stderr).toMatchObject({ code: 0 });

    const rows = await runRows();
    expect(rows.length).toBeGreaterThanOrEqual(3);
    expect(rows.every((row) => row.status === 'done')).toBe(true);
    // One dispatched job per fired slot: no slot ran twice.
    expect(await probeJobs()).toBe(rows.length);
  });
});

function startProcess(args: string[]) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exit = new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stderr }));
  });
  return { child, exit, stderr: () => stderr };
}
