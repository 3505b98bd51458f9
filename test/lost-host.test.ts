import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killIfRunning, RECORDING_JOBS, startCli, waitFor, type CliProcess } from './support/processes.js';
import { recordingDatabase, recordInProcess, type RecordingDatabase } from './support/recording.js';

/**
 * A host that disappears: all of its processes stop answering and none exits (SIGSTOP, as a
 * hung or partitioned machine looks from the database). Its heartbeats stop, `mailq status` calls
 * the host lost, and the jobs it was running come back when their leases end. Compiled JS from
 * dist for the CLI: build first.
 */
const SHORT_LEASE_CONFIG = fileURLToPath(new URL('./fixtures/short-lease.config.mjs', import.meta.url));
/** From the config: a job's lease is its timeout (3 s) plus the lease grace (2 s). */
const LEASE_MS = 5_000;
const JOBS = 16;

let rec: RecordingDatabase;
let host: CliProcess | undefined;
const stopped: number[] = [];

beforeAll(async () => {
  rec = await recordingDatabase('lost host');
});

afterEach(() => {
  for (const pid of stopped.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  killIfRunning(host);
});

afterAll(async () => {
  await rec?.close();
});

async function status(): Promise<{ json: any; text: string }> {
  const asJson = startCli(['status', '--json'], rec.env);
  const asText = startCli(['status'], rec.env);
  const [json, text] = await Promise.all([asJson.exited, asText.exited]);
  expect(json.code).toBe(0);
  return { json: JSON.parse(asJson.output()), text: asText.output() };
}

describe('a host that stops answering', () => {
  it('is shown as lost, not live, and its running jobs return after their leases', async () => {
    const keys = Array.from({ length: JOBS }, (_, n) => `job-${n}`);
    await rec.mq.dispatchMany('record', keys.map((key) => ({ key, ms: 2_500 })), { queue: 'lost-host', tries: 3 });
    host = startCli(
      ['work', '--queue=lost-host', '--processes=2', '--concurrency=2', '--jobs', RECORDING_JOBS, '--config', SHORT_LEASE_CONFIG, '--heartbeat=250ms', '--sleep=20ms'],
      rec.env,
    );
    const workers = await waitFor('two worker processes', async () => ((await rec.workers()).length === 2 ? rec.workers() : undefined));
    const hostName = String(workers[0]!.host);
    expect((await status()).json.hosts).toEqual([expect.objectContaining({ host: hostName, state: 'live', liveWorkers: 2 })]);
    const workerPids = workers.map((row) => Number(row.pid));
    await waitFor('both worker processes in the middle of a job', async () => {
      const unfinished = (await rec.runs()).filter((run) => run.finished_at === null);
      return workerPids.every((pid) => unfinished.some((run) => run.pid === pid));
    });

    // The whole host freezes: its supervisor and both workers, none of them exits.
    const pids = [host.pid, ...workerPids];
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    stopped.push(...pids);
    const frozenAt = Date.now();
    const frozenRuns = (await rec.runs()).filter((run) => run.finished_at === null).map((run) => run.job_key);
    expect(frozenRuns.length).toBeGreaterThan(0);
    const leases = new Map<number, Date>(
      (await rec.mq.knex('jobs').whereNotNull('reserved_at').select('id', 'lease_until')).map((row) => [Number(row.id), row.lease_until as Date]),
    );

    const lost = await waitFor('status to call the host lost', async () => {
      const { json, text } = await status();
      return json.hosts[0]?.state === 'lost' ? { json, text } : undefined;
    }, 10_000);
    expect(lost.json.hosts).toEqual([expect.objectContaining({ host: hostName, state: 'lost', workers: 2, liveWorkers: 0, supervisors: 1 })]);
    expect(lost.json.workers.every((worker: { alive: boolean }) => !worker.alive)).toBe(true);
    expect(lost.text).toMatch(new RegExp(`${hostName}\\s*│\\s*LOST`));

    // Another host picks up: a worker in this process (no heartbeat row of its own, so the frozen host stays the only one).
    const worker = rec.mq.worker({
      queues: ['lost-host'], concurrency: 4, heartbeat: 0, sweepInterval: '500ms', sleep: '20ms', timeout: '3s', leaseGrace: '2s',
      jobs: [recordInProcess(() => rec.mq.knex)],
    });
    const running = worker.run();
    await waitFor('every job done', async () => (await rec.count('jobs')) === 0, 60_000);
    await worker.stop();
    await running;

    const runs = await rec.runs();
    for (const key of keys) expect(runs.some((run) => run.job_key === key && run.finished_at !== null), `${key} finished`).toBe(true);
    // The frozen host's jobs ran again here, each only once its lease had run out.
    const rerun = runs.filter((run) => frozenRuns.includes(run.job_key) && run.pid === process.pid);
    expect(rerun.map((run) => run.job_key).sort()).toEqual([...frozenRuns].sort());
    for (const run of rerun) expect(run.started_at.getTime()).toBeGreaterThanOrEqual(leases.get(Number(run.job_id))!.getTime());
    console.log(`host frozen: reruns started ${Math.min(...rerun.map((run) => run.started_at.getTime())) - frozenAt} ms after the freeze (lease ${LEASE_MS} ms)`);
  }, 90_000);
});
