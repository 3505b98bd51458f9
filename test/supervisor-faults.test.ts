import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killIfRunning, RECORDING_JOBS, startCli, waitFor, type CliProcess } from './support/processes.js';
import { recordingDatabase, type JobRun, type RecordingDatabase } from './support/recording.js';

// The fault suite: real supervisors and worker processes, real faults (kill -9, killed
// connections), and the recorded runs of every job afterwards. Compiled JS from dist: build first.
// Waits poll the tables; the generous timeouts only matter on a machine busy with other work.

let rec: RecordingDatabase;
let supervisor: CliProcess | undefined;
/** A connection of its own, so killing every other connection of the test database spares the test. */
let admin: mysql.Connection;
let adminId: number;

const SHORT_LEASE_CONFIG = fileURLToPath(new URL('./fixtures/short-lease.config.mjs', import.meta.url));
const work = (queue: string, ...flags: string[]) => [
  'work', `--queue=${queue}`, '--jobs', RECORDING_JOBS, '--config', SHORT_LEASE_CONFIG, '--heartbeat=250ms', '--sleep=20ms', ...flags,
];

async function count(sql: string, values: unknown[] = []): Promise<number> {
  const [rows] = (await admin.query(sql, values)) as [Array<{ n: number }>, unknown];
  return Number(rows[0]!.n);
}

const remaining = (queue: string) => count('SELECT COUNT(*) AS n FROM jobs WHERE queue = ?', [queue]);

async function dispatchKeys(queue: string, prefix: string, total: number): Promise<string[]> {
  const keys = Array.from({ length: total }, (_, n) => `${prefix}-${n}`);
  await rec.mq.dispatchMany('record', keys.map((key, n) => ({ key, ms: n % 15 })), { queue, tries: 50 });
  return keys;
}

/** Every key ran to the end at least once; returns the keys that ran more than once, with their runs. */
function checkRuns(keys: string[], runs: JobRun[]): Map<string, JobRun[]> {
  const byKey = new Map<string, JobRun[]>();
  for (const run of runs) byKey.set(run.job_key, [...(byKey.get(run.job_key) ?? []), run]);
  const unfinished = keys.filter((key) => !byKey.get(key)?.some((run) => run.finished_at));
  expect(unfinished, 'jobs that never completed').toEqual([]);
  return new Map([...byKey].filter(([, list]) => list.length > 1));
}

beforeAll(async () => {
  rec = await recordingDatabase('supervisor faults');
  admin = await mysql.createConnection({ uri: rec.db.url });
  const [rows] = (await admin.query('SELECT CONNECTION_ID() AS id')) as [Array<{ id: number }>, unknown];
  adminId = rows[0]!.id;
});

afterEach(() => {
  killIfRunning(supervisor);
  supervisor = undefined;
});

afterAll(async () => {
  await admin?.end();
  await rec?.close();
});

describe('fault suite', () => {
  it('kill -9 of random worker processes while 5,000 jobs drain: every job completes, none is lost, duplicates only for jobs running at a kill', async () => {
    const keys = await dispatchKeys('kill9', 'k', 5_000);
    // Each process also holds up to 8 claimed jobs it has not started: a kill must lose none of those either.
    supervisor = startCli(work('kill9', '--processes=4', '--concurrency=4', '--prefetch=8'), rec.env);

    const killed = new Set<number>();
    for (const threshold of [4_500, 4_000, 3_500, 3_000, 2_500, 2_000, 1_500, 1_000]) {
      await waitFor(`the queue to reach ${threshold} jobs`, async () => (await remaining('kill9')) <= threshold, 60_000, 100);
      const victim = await waitFor('a live worker process to kill', async () => {
        const candidates = (await rec.workers()).filter((row) => !killed.has(row.pid) && Number(row.running) > 0);
        const pick = candidates[Math.floor(Math.random() * candidates.length)];
        if (!pick) return undefined;
        try {
          process.kill(pick.pid, 'SIGKILL');
          return pick.pid as number;
        } catch {
          return undefined; // it exited meanwhile
        }
      });
      killed.add(victim);
    }

    await waitFor('every job to finish', async () => (await remaining('kill9')) === 0, 120_000, 100);

    expect(await count("SELECT COUNT(*) AS n FROM failed_jobs WHERE queue = 'kill9'")).toBe(0);
    const runs = (await rec.runs()).filter((run) => run.job_key.startsWith('k-'));
    const duplicates = checkRuns(keys, runs);
    // A job ran more than once only if a killed process had it: at most one run per job outside them.
    const reranOutsideKills = [...duplicates].filter(([, list]) => list.filter((run) => !killed.has(run.pid)).length > 1);
    expect(reranOutsideKills).toEqual([]);
    const cutShort = runs.filter((run) => killed.has(run.pid) && !run.finished_at);
    expect(cutShort.length).toBeGreaterThan(0);
    const released = supervisor.logs().filter((line) => line.msg === 'returned the jobs of a dead worker process');
    expect(released.length).toBeGreaterThan(0);
    console.log(
      `kill -9: ${killed.size} worker processes killed while 5,000 jobs drained; ${runs.length} runs, ` +
        `${duplicates.size} jobs ran more than once (${cutShort.length} runs cut short by a kill), ` +
        `${released.length} immediate releases by the supervisor`,
    );

    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
    expect(await count('SELECT COUNT(*) AS n FROM workers')).toBe(0);
  }, 150_000);

  it('KILL CONNECTION of every worker connection, again and again mid-run: workers reconnect and finish, and no process dies', async () => {
    const keys = await dispatchKeys('killconn', 'c', 1_200);
    supervisor = startCli(work('killconn', '--processes=3', '--concurrency=4'), rec.env);
    await waitFor('3 worker processes', async () => (await count("SELECT COUNT(*) AS n FROM workers WHERE kind = 'worker'")) === 3);

    let killedConnections = 0;
    for (const threshold of [1_000, 800, 600, 400]) {
      await waitFor(`the queue to reach ${threshold} jobs`, async () => (await remaining('killconn')) <= threshold, 60_000, 50);
      const [connections] = (await admin.query('SELECT id FROM information_schema.processlist WHERE db = ? AND id <> ?', [rec.db.name, adminId])) as [
        Array<{ id: number }>,
        unknown,
      ];
      for (const { id } of connections) {
        await admin.query(`KILL CONNECTION ${Number(id)}`).catch(() => undefined); // gone already
        killedConnections++;
      }
    }
    await waitFor('every job to finish', async () => (await remaining('killconn')) === 0, 120_000, 100);

    expect(await count("SELECT COUNT(*) AS n FROM failed_jobs WHERE queue = 'killconn'")).toBe(0);
    const runs = (await rec.runs()).filter((run) => run.job_key.startsWith('c-'));
    const duplicates = checkRuns(keys, runs);
    const ended = supervisor.logs().filter((line) => line.supervisor !== undefined && line.code !== undefined);
    expect(ended, 'worker processes that ended').toEqual([]);
    expect(supervisor.output()).not.toMatch(/^mailq: /m);
    const warnings = supervisor.logs().filter((line) => line.worker !== undefined && line.level === 40);
    const leaseReturns = warnings.filter((line) => line.msg === 'returned jobs whose lease expired').reduce((sum, line) => sum + Number(line.released ?? 0), 0);
    console.log(
      `KILL CONNECTION: ${killedConnections} connections killed in 4 rounds while 1,200 jobs drained; ${duplicates.size} jobs ran more than once; ` +
        `${warnings.length} worker warnings (retries) logged; ${leaseReturns} jobs came back through the lease sweep (claim committed, reply lost); no worker process died`,
    );

    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited).toEqual({ code: 0, signal: null });
  }, 150_000);
});
