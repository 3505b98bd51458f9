import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killIfRunning, RECORDING_JOBS, startCli, waitFor, type CliProcess } from './support/processes.js';
import { recordingDatabase, type RecordingDatabase } from './support/recording.js';

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
let hostA: CliProcess | undefined;
let hostB: CliProcess | undefined;
const work = ['work', '--queue=lost-host', '--concurrency=2', '--jobs', RECORDING_JOBS, '--config', SHORT_LEASE_CONFIG, '--heartbeat=250ms', '--sleep=20ms'];
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
  killIfRunning(hostA);
  killIfRunning(hostB);
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
  it('is shown as lost while the other host stays live, and its running jobs run there once their leases end', async () => {
    const keys = Array.from({ length: JOBS }, (_, n) => `job-${n}`);
    await rec.mq.dispatchMany('record', keys.map((key) => ({ key, ms: 2_500 })), { queue: 'lost-host', tries: 3 });
    // Two hosts: one named by flag (a supervisor and two workers), one by MAILQ_HOSTNAME (one worker).
    hostA = startCli([...work, '--processes=2', '--hostname=host-a'], rec.env);
    const workersA = await waitFor('host-a\'s two worker processes', async () => {
      const rows = (await rec.workers()).filter((row) => row.host === 'host-a');
      return rows.length === 2 ? rows : undefined;
    });
    const pidsA = workersA.map((row) => Number(row.pid));
    await waitFor('both of host-a\'s workers in the middle of a job', async () => {
      const unfinished = (await rec.runs()).filter((run) => run.finished_at === null);
      return pidsA.every((pid) => unfinished.some((run) => run.pid === pid));
    });

    // host-a freezes: its supervisor and both workers, none of them exits.
    for (const pid of [hostA.pid, ...pidsA]) {
      process.kill(pid, 'SIGSTOP');
      stopped.push(pid);
    }
    const frozenAt = Date.now();
    const frozen = new Map<number, Date>(
      (await rec.mq.knex('jobs').whereNotNull('reserved_at').select('id', 'lease_until')).map((row) => [Number(row.id), row.lease_until as Date]),
    );
    expect(frozen.size).toBeGreaterThan(0);
    hostB = startCli(work, { ...rec.env, MAILQ_HOSTNAME: 'host-b' });

    // The JSON and the table come from two processes reading at slightly different moments: wait
    // until the table has seen host-b register too, then check what it says of both hosts.
    const seen = await waitFor('status to call host-a lost and host-b live, with host-b in the table', async () => {
      const { json, text } = await status();
      const state = Object.fromEntries(json.hosts.map((row: { host: string; state: string }) => [row.host, row.state]));
      return state['host-a'] === 'lost' && state['host-b'] === 'live' && /│\s*host-b\s*│/.test(text) ? { json, text } : undefined;
    }, 15_000);
    expect(seen.json.hosts).toEqual([
      expect.objectContaining({ host: 'host-a', state: 'lost', workers: 2, liveWorkers: 0, supervisors: 1 }),
      expect.objectContaining({ host: 'host-b', state: 'live', workers: 1, liveWorkers: 1, supervisors: 0 }),
    ]);
    expect(seen.json.workers.filter((worker: { host: string; id: string }) => worker.host === 'host-a' && worker.id.startsWith('host-a:'))).toHaveLength(2);
    expect(seen.text).toMatch(/host-a\s*│\s*LOST/);
    expect(seen.text).toMatch(/host-b\s*│\s*live/);

    await waitFor('every job done', async () => (await rec.count('jobs')) === 0, 60_000);
    const pidB = Number((await rec.workers()).find((row) => row.host === 'host-b')!.pid);
    const runs = await rec.runs();
    for (const key of keys) expect(runs.some((run) => run.job_key === key && run.finished_at !== null), `${key} finished`).toBe(true);
    // The frozen host's jobs ran again on host-b, each only once its lease had run out.
    const rerun = runs.filter((run) => frozen.has(Number(run.job_id)) && run.pid === pidB);
    expect(rerun.map((run) => Number(run.job_id)).sort()).toEqual([...frozen.keys()].sort());
    for (const run of rerun) expect(run.started_at.getTime()).toBeGreaterThanOrEqual(frozen.get(Number(run.job_id))!.getTime());
    console.log(`host frozen: its jobs ran again from ${Math.min(...rerun.map((run) => run.started_at.getTime())) - frozenAt} ms after the freeze (leases of ${LEASE_MS} ms; behind the jobs still pending)`);
  }, 90_000);
});
