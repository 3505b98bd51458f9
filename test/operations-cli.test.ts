import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../dist/src/cli/main.js';
import { createMailq, defineJob, type Mailq } from '../src/index.js';
import { createLogger } from '../src/logger.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { startCli, waitFor } from './support/processes.js';

const noop = defineJob<{ n: number }>({ name: 'noop', handle: () => undefined });

let db: TestDatabase;
let mq: Mailq;

/** Runs the CLI in this process and captures what it prints. */
async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main([...args, '--database-url', db.url], { out: (text) => void out.push(text), err: (text) => void err.push(text), isTTY: false });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

beforeAll(async () => {
  db = await createTestDatabase('operations cli');
  mq = createMailq({ databaseUrl: db.url, jobs: [noop], logger: createLogger({ level: 'silent' }) });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

describe('mailq monitor', () => {
  beforeAll(async () => {
    await mq.dispatchMany(noop, [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: 'mon' });
    await mq.dispatch(noop, { n: 4 }, { queue: 'mon', delay: '1h' });
    await mq.knex(mq.tables.jobs).where({ queue: 'mon' }).update({ available_at: mq.knex.raw("available_at - INTERVAL IF(available_at <= NOW(3), 90, 0) SECOND") });
    await mq.knex(mq.tables.failedJobs).insert({ uuid: 'f-1', queue: 'mon', name: 'noop', payload: '{}', attempts: 1, exception: 'Error: x' });
    await mq.knex(mq.tables.queueStats).insert({ queue: 'mon', minute: mq.knex.raw("DATE_FORMAT(NOW(), '%Y-%m-%d %H:%i:00')"), completed: 10, failed: 2 });
  });

  it('exits 0 when every queue is within --max and 3 when one is over, naming it', async () => {
    expect(await cli('monitor', 'mon', '--max=3')).toMatchObject({ code: 0 });
    const over = await cli('monitor', 'mon', '--max=2');
    expect(over.code).toBe(3);
    expect(over.out).toContain('Over --max=2: mon (3 pending)');
    expect(over.out).toMatch(/mon\s*│ 3\s*│ 1\s*│ 0\s*│ 1\s*│/);
  });

  it('--json prints pending, delayed, reserved, failed, oldest wait, throughput, workers and paused per queue', async () => {
    const { code, out } = await cli('monitor', 'mon', 'unknown-queue', '--max=2', '--json');
    expect(code).toBe(3);
    const report = JSON.parse(out);
    expect(report).toMatchObject({ max: 2, ok: false, overMax: ['mon'] });
    expect(Date.parse(report.checkedAt)).not.toBeNaN();
    expect(report.queues).toHaveLength(2);
    const [mon, unknown] = report.queues;
    expect(mon).toMatchObject({ queue: 'mon', pending: 3, delayed: 1, reserved: 0, failed: 1, workers: 0, paused: false });
    expect(mon.oldestPendingSeconds).toBeGreaterThanOrEqual(90);
    expect(mon.oldestPendingSeconds).toBeLessThan(3600);
    expect(mon.throughput.last5Minutes).toMatchObject({ completed: 10, failed: 2 });
    expect(Object.keys(mon.throughput)).toEqual(['lastMinute', 'last5Minutes', 'last15Minutes']);
    expect(unknown).toMatchObject({ queue: 'unknown-queue', pending: 0, delayed: 0, reserved: 0, failed: 0, oldestPendingSeconds: null, workers: 0 });
  });

  it('without queue names lists every queue seen; a negative --max is a usage error', async () => {
    const { out } = await cli('monitor', '--json');
    expect(JSON.parse(out).queues.map((queue: { queue: string }) => queue.queue)).toContain('mon');
    expect((await cli('monitor', '--max=-1')).code).toBe(2);
  });

  it('--watch prints a line per refresh until interrupted, then exits 0', async () => {
    const watcher = startCli(['monitor', 'mon', '--watch', '--json', '--interval=200ms', '--database-url', db.url], {});
    await waitFor('two refreshes', () => watcher.output().split('\n').filter((line) => line.startsWith('{"checkedAt"')).length >= 2, 20_000);
    watcher.child.kill('SIGINT');
    expect(await watcher.exited).toEqual({ code: 0, signal: null });
    const first = JSON.parse(watcher.output().split('\n')[0]!);
    expect(first.queues[0]).toMatchObject({ queue: 'mon', pending: 3 });
  });
});

describe('mailq pause / resume / restart', () => {
  it('pause writes the control row, resume clears it, and pause without a queue is a usage error', async () => {
    const paused = await cli('pause', 'alpha', 'beta');
    expect(paused).toMatchObject({ code: 0 });
    expect(paused.out).toContain("Paused 'alpha', 'beta'");
    const rows = await mq.knex(mq.tables.queueControls).whereIn('queue', ['alpha', 'beta']).whereNotNull('paused_at').pluck('queue');
    expect(rows.sort()).toEqual(['alpha', 'beta']);
    expect(JSON.parse((await cli('monitor', 'alpha', '--json')).out).queues[0].paused).toBe(true);

    expect((await cli('resume', 'alpha')).out).toBe("Resumed 'alpha'.");
    expect((await cli('resume', 'alpha')).out).toBe("Not paused: 'alpha'.");
    expect(await mq.knex(mq.tables.queueControls).whereNotNull('paused_at').pluck('queue')).toEqual(['beta']);
    await cli('resume', 'beta');

    const usage = await cli('pause');
    expect(usage.code).toBe(2);
    expect(usage.err).toContain('name a queue');
  });

  it('restart records the signal time for every queue (or one queue with --queue)', async () => {
    const { code, out, err } = await cli('restart', '--json');
    expect(err).toBe('');
    expect(code).toBe(0);
    const signal = JSON.parse(out);
    expect(signal.queue).toBe('*');
    const row = await mq.knex(mq.tables.queueControls).where({ queue: '*' }).first();
    expect(new Date(signal.requestedAt).getTime()).toBe(row.restart_requested_at.getTime());

    expect((await cli('restart', '--queue=mailbox-sync')).out).toContain("for 'mailbox-sync'");
    expect(await mq.knex(mq.tables.queueControls).where({ queue: 'mailbox-sync' }).whereNotNull('restart_requested_at').count({ n: '*' })).toEqual([{ n: 1 }]);
  });
});

describe('mailq clear', () => {
  it('removes the waiting jobs of the named queues; running jobs and other queues stay; a batch that loses jobs is cancelled and finishes', async () => {
    const jobs = () => mq.knex(mq.tables.jobs);
    await mq.dispatchMany(noop, [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: 'clr' });
    await mq.dispatch(noop, { n: 4 }, { queue: 'clr', delay: '1h' });
    const running = await mq.dispatch(noop, { n: 5 }, { queue: 'clr' });
    await jobs()
      .where({ id: running.id })
      .update({ reserved_at: mq.knex.raw('NOW(3)'), reserved_by: 'busy-worker', attempts: 1, lease_until: mq.knex.raw('NOW(3) + INTERVAL 1 MINUTE') });
    const batch = await mq.batch(noop, [{ n: 6 }, { n: 7 }], { queue: 'clr', finally: { job: 'noop', payload: { n: 99 }, options: { queue: 'after-clear' } } });
    await mq.dispatch(noop, { n: 8 }, { queue: 'keep' });

    expect(await cli('clear', 'clr')).toEqual({ code: 0, out: `Cleared 6 waiting jobs from 'clr'; cancelled batch ${batch.id}.`, err: '' });
    expect(await jobs().where({ queue: 'clr' }).pluck('id')).toEqual([running.id]);
    expect(await jobs().where({ queue: 'keep' }).count({ n: '*' })).toEqual([{ n: 1 }]);
    expect(await mq.batches.find(batch.id)).toMatchObject({ state: 'cancelled', pending: 0, failed: 0 });
    expect(await jobs().where({ queue: 'after-clear' }).count({ n: '*' })).toEqual([{ n: 1 }]);

    const again = await cli('clear', 'clr,keep', '--json');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.out)).toEqual([
      { queue: 'clr', removed: 0, cancelledBatches: [] },
      { queue: 'keep', removed: 1, cancelledBatches: [] },
    ]);
    expect(await jobs().where({ queue: 'clr' }).pluck('id')).toEqual([running.id]);
    expect((await cli('clear')).code).toBe(2);
  });
});

describe('mailq status', () => {
  it('--json reports queues, live workers, supervisors, paused queues and the last restart', async () => {
    await mq.controls.pause(['gamma']);
    const worker = mq.worker({ queues: ['mon-status'], heartbeat: '100ms', sleep: '20ms' });
    const run = worker.run();
    await waitFor('the worker row', () => mq.knex(mq.tables.workers).where({ id: worker.id }).first());
    const { code, out } = await cli('status', '--json');
    await worker.stop();
    await run;
    await mq.controls.resume(['gamma']);

    expect(code).toBe(0);
    const report = JSON.parse(out);
    expect(Object.keys(report).sort()).toEqual(['checkedAt', 'database', 'hosts', 'paused', 'queues', 'restartRequestedAt', 'supervisors', 'workers']);
    expect(report.hosts).toEqual([expect.objectContaining({ host: report.workers[0].host, state: 'live', workers: 1, liveWorkers: 1 })]);
    expect(report.workers).toHaveLength(1);
    expect(report.workers[0]).toMatchObject({ id: worker.id, kind: 'worker', pid: process.pid, queues: ['mon-status'], alive: true, state: 'running' });
    expect(report.paused.map((row: { queue: string }) => row.queue)).toEqual(['gamma']);
    expect(report.restartRequestedAt).not.toBeNull();
    expect(report.queues.find((queue: { queue: string }) => queue.queue === 'mon-status')).toMatchObject({ workers: 1 });
  });

  it('prints tables for people', async () => {
    const { code, out } = await cli('status');
    expect(code).toBe(0);
    expect(out).toContain('No workers are running.');
    expect(out).toMatch(/queue\s*│ pending/);
  });
});

describe('mailq doctor', () => {
  it('passes on a migrated schema, with the claim EXPLAINed through the claim index', async () => {
    const { code, out } = await cli('doctor', '--json');
    expect(code).toBe(0);
    const report = JSON.parse(out);
    expect(report.ok).toBe(true);
    const byName = Object.fromEntries(report.checks.map((check: { name: string }) => [check.name, check]));
    expect(Object.keys(byName)).toEqual(
      expect.arrayContaining(['server version', 'SKIP LOCKED', 'schema', 'claim index', 'claim plan', 'innodb_lock_wait_timeout', 'transaction isolation']),
    );
    expect(byName['claim plan']).toMatchObject({ status: 'ok' });
    expect(report.claimPlan[0].key).toBe('jobs_claim_index');
    expect(report.claimPlan[0].Extra ?? '').not.toMatch(/filesort/i);
    expect(byName['transaction isolation'].value).toMatch(/READ|SERIALIZABLE/);
  });

  it('fails (exit 1) when the claim index is missing, and says how to fix it', async () => {
    await mq.knex.raw('CREATE TABLE broken_jobs LIKE jobs');
    await mq.knex.raw('ALTER TABLE broken_jobs DROP INDEX jobs_claim_index');
    const { code, out } = await cli('doctor', '--prefix=broken_', '--json');
    expect(code).toBe(1);
    const report = JSON.parse(out);
    expect(report.ok).toBe(false);
    const check = (name: string) => report.checks.find((entry: { name: string }) => entry.name === name);
    expect(check('claim index')).toMatchObject({ status: 'fail', value: 'missing' });
    expect(check('claim index').detail).toContain('mailq migrate');
    expect(check('claim plan').status).toBe('fail');
    expect(check('schema').status).toBe('fail');
  });
});
