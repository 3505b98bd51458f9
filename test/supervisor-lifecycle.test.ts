import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../dist/src/cli/main.js';
import { killIfRunning, startCli, waitFor, type CliProcess } from './support/processes.js';
import { liveWorkers, recordingWork, supervisorLogs } from './support/supervisor.js';
import { recordingDatabase, type RecordingDatabase } from './support/recording.js';

// Real supervisors with real worker processes (compiled JS from dist: build first).

let rec: RecordingDatabase;
let supervisor: CliProcess | undefined;

const quiet = { out: () => undefined, err: () => undefined, isTTY: false };
const work = recordingWork;


beforeAll(async () => {
  rec = await recordingDatabase('supervisor lifecycle');
});

afterEach(() => {
  killIfRunning(supervisor);
  supervisor = undefined;
});

afterAll(async () => {
  await rec?.close();
});

describe('mailq work --processes', { timeout: 120_000 }, () => {
  it('mailq restart: every worker process finishes and is replaced exactly once', async () => {
    supervisor = startCli(work('restart', '--processes=3'), rec.env);
    const first = await liveWorkers(rec, 3);
    expect(new Set(first.map((row) => row.pid)).size).toBe(3);
    expect(first.every((row) => row.supervisor_id === first[0]!.supervisor_id)).toBe(true);

    expect(await main(['restart', '--database-url', rec.db.url], quiet)).toBe(0);
    const firstIds = new Set(first.map((row) => row.id));
    const second = await waitFor('3 new worker processes', async () => {
      const rows = await rec.workers();
      return rows.length === 3 && rows.every((row) => !firstIds.has(row.id)) ? rows : undefined;
    });
    // Let each new worker read the controls a few times: none may take the old signal for itself.
    await waitFor('3 beats of every new worker', async () => {
      const rows = await rec.workers();
      return rows.length === 3 && rows.every((row) => row.last_beat_at.getTime() - row.started_at.getTime() >= 3 * 200);
    });
    expect((await rec.workers()).map((row) => row.id)).toEqual(second.map((row) => row.id));
    const exits = supervisorLogs(supervisor).filter((line) => String(line.msg).startsWith('worker process exited'));
    expect(exits.map((line) => line.reason)).toEqual(['restart', 'restart', 'restart']);
    expect((await rec.supervisors())[0]).toMatchObject({ restarts: 3, state: 'running' });

    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
    expect(await rec.count(rec.mq.tables.workers)).toBe(0);
  });

  it('SIGHUP reloads the worker processes one by one, each after the previous replacement is ready', async () => {
    supervisor = startCli(work('reload', '--processes=2'), rec.env);
    const first = await liveWorkers(rec, 2);
    supervisor.child.kill('SIGHUP');
    await waitFor('the reload to finish', () => supervisorLogs(supervisor!).some((line) => line.msg === 'reload done'), 30_000);
    const second = await liveWorkers(rec, 2);
    expect(second.filter((row) => first.some((old) => old.id === row.id))).toEqual([]);

    const steps = supervisorLogs(supervisor)
      .filter((line) => String(line.msg).startsWith('worker process exited') || String(line.msg).startsWith('reloaded process'))
      .map((line) => `${String(line.msg).startsWith('reloaded') ? 'ready' : 'exited'} ${line.slot}`);
    expect(steps).toEqual(['exited 1', 'ready 1', 'exited 2', 'ready 2']);

    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
  });

  it('pause stops supervised workers claiming from a queue; resume lets them drain it', async () => {
    supervisor = startCli(work('paused', '--processes=2'), rec.env);
    await liveWorkers(rec, 2);
    expect(await main(['pause', 'paused', '--database-url', rec.db.url], quiet)).toBe(0);
    const { paused_at: pausedAt } = await rec.mq.knex(rec.mq.tables.queueControls).where({ queue: 'paused' }).first();
    // Two beats after the pause, every worker has read it.
    await waitFor('a beat of every worker after the pause', async () => (await rec.workers()).every((row) => row.last_beat_at > pausedAt));
    const afterPause = Math.max(...(await rec.workers()).map((row) => row.last_beat_at.getTime()));
    await waitFor('one more beat of every worker', async () => (await rec.workers()).every((row) => row.last_beat_at.getTime() > afterPause));

    await rec.mq.dispatchMany('record', [1, 2, 3, 4, 5].map((n) => ({ key: `paused-${n}` })), { queue: 'paused' });
    const afterDispatch = Math.max(...(await rec.workers()).map((row) => row.last_beat_at.getTime()));
    await waitFor('two more beats of every worker', async () => (await rec.workers()).every((row) => row.last_beat_at.getTime() > afterDispatch + 200));
    expect(await rec.runs()).toEqual([]);
    expect(await rec.count(rec.mq.tables.jobs, (query) => query.where({ queue: 'paused', attempts: 0 }).whereNull('reserved_at'))).toBe(5);

    expect(await main(['resume', 'paused', '--database-url', rec.db.url], quiet)).toBe(0);
    await waitFor('the queue to drain after resume', async () => (await rec.count(rec.mq.tables.jobs, (query) => query.where({ queue: 'paused' }))) === 0);
    expect((await rec.runs()).filter((run) => run.job_key.startsWith('paused-'))).toHaveLength(5);

    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
  });
});
