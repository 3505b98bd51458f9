import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, createMailq, Scheduler, type Mailq } from '../src/index.js';
import { findServerBinaries, freePort, startThrowawayServer, type ThrowawayServer } from '../src/localdb/throwaway-server.js';
import { killIfRunning, RECORDING_JOBS, startCli, waitFor, type CliProcess } from './support/processes.js';
import { createJobRunsTable, overlappingRuns, recordInProcess, type JobRun } from './support/recording.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';

/**
 * Failover: the address in the database URL (here a proxy) starts pointing at another server with
 * the same data (here the throwaway server, stopped and started again on another port). Worker
 * processes under a supervisor, a worker and a scheduler in this process all carry on by
 * themselves: no process restarts, no job is lost, none runs twice at once. Compiled JS from
 * dist for the worker processes: build first.
 */
const IN_PROCESS_JOBS = 400;
const PROCESS_JOBS = 400;

let server: ThrowawayServer | undefined;
let proxy: TcpProxy;
let mq: Mailq;
let supervisor: CliProcess | undefined;
let unavailable = '';

/** Runs in this process, recorded in job_runs like the worker processes' `record` jobs. */
const ledger = recordInProcess(() => mq.knex);

beforeAll(async () => {
  if (!(await findServerBinaries())) {
    unavailable = 'no local mariadbd/mysqld binaries to start a server of its own';
    return;
  }
  server = await startThrowawayServer();
  proxy = await startTcpProxy({ host: '127.0.0.1', port: server.port });
  const url = new URL(proxy.urlThrough(server.url));
  url.searchParams.set('stallCheck', '1s');
  url.searchParams.set('connectTimeout', '2s');
  mq = createMailq({ databaseUrl: url.toString(), jobs: [ledger], logger: createLogger({ level: 'silent' }) });
  await mq.migrate();
  await createJobRunsTable(mq.knex);
}, 120_000);

afterAll(async () => {
  killIfRunning(supervisor);
  await mq?.close();
  await proxy?.close();
  await server?.stop();
});

async function runs(): Promise<JobRun[]> {
  return mq.knex('job_runs').orderBy('id');
}

async function remaining(queue: string): Promise<number | undefined> {
  try {
    return Number((await mq.knex('jobs').where({ queue }).count({ n: '*' }))[0]!.n);
  } catch {
    return undefined; // the database is between servers
  }
}

describe('failover to another server behind the same address', () => {
  it('workers, supervisor and scheduler reconnect without a restart; no job lost, none run twice at once', async (context) => {
    if (!server) return context.skip(unavailable);
    const inProcessKeys = Array.from({ length: IN_PROCESS_JOBS }, (_, n) => `in-${n}`);
    const processKeys = Array.from({ length: PROCESS_JOBS }, (_, n) => `proc-${n}`);
    await mq.dispatchMany(ledger, inProcessKeys.map((key) => ({ key, ms: 10 })), { queue: 'in-process', tries: 20 });
    await mq.dispatchMany('record', processKeys.map((key) => ({ key, ms: 10 })), { queue: 'processes', tries: 20 });

    const worker = mq.worker({ queues: ['in-process'], concurrency: 4, sleep: '20ms', heartbeat: '250ms', timeout: '30s' });
    const working = worker.run();
    const fired: Date[] = [];
    const scheduler = new Scheduler(mq.knex, mq.tables, [{ cron: '* * * * * *', run: 'tick', withoutOverlapping: false }], {
      logger: createLogger({ level: 'silent' }),
      runner: async () => {
        fired.push(new Date());
        return { exitCode: 0, batchIds: [], output: '' };
      },
    });
    const stopScheduler = new AbortController();
    const scheduling = scheduler.loop(stopScheduler.signal);
    // The worker processes reach the server through the proxy too (the fixture's own ledger connection as well).
    supervisor = startCli(['work', '--queue=processes', '--processes=2', '--concurrency=4', '--jobs', RECORDING_JOBS, '--heartbeat=250ms', '--sleep=20ms'], {
      MAILQ_DATABASE_URL: proxy.urlThrough(server.url),
    });

    await waitFor('a quarter of each queue done', async () => {
      const [inProcess, processes] = [await remaining('in-process'), await remaining('processes')];
      return inProcess !== undefined && processes !== undefined && inProcess <= IN_PROCESS_JOBS * 0.75 && processes <= PROCESS_JOBS * 0.75;
    }, 60_000);
    const pidsBefore = (await mq.knex(mq.tables.workers).select('pid', 'kind')).map((row) => Number(row.pid)).sort();

    // The failover: the server stops, comes back on another port, and the address follows it.
    const failoverAt = Date.now();
    const newPort = await freePort();
    await server.moveTo(newPort, 500);
    proxy.redirect({ host: '127.0.0.1', port: newPort });
    const serverBackAt = Date.now();

    await waitFor('both queues to drain after the failover', async () => (await remaining('in-process')) === 0 && (await remaining('processes')) === 0, 90_000, 100);
    const drainedAt = Date.now();
    await waitFor('the scheduler to fire again after the failover', () => fired.some((at) => at.getTime() > serverBackAt + 1_000), 15_000);

    // Nobody restarted: the same supervisor and worker processes beat in the workers table.
    const pidsAfter = (await mq.knex(mq.tables.workers).select('pid', 'kind')).map((row) => Number(row.pid)).sort();
    expect(pidsAfter).toEqual(pidsBefore);
    expect(supervisor.child.exitCode).toBeNull();
    expect(worker.isStopping).toBe(false);

    const recorded = await runs();
    const finished = new Set(recorded.filter((run) => run.finished_at).map((run) => run.job_key));
    expect([...inProcessKeys, ...processKeys].filter((key) => !finished.has(key)), 'jobs that never completed').toEqual([]);
    expect(overlappingRuns(recorded), 'jobs run twice at once').toEqual([]);
    expect(Number((await mq.knex('failed_jobs').count({ n: '*' }))[0]!.n)).toBe(0);
    const firstRunAfter = Math.min(...recorded.filter((run) => run.started_at.getTime() > serverBackAt).map((run) => run.started_at.getTime()));
    console.log(
      `failover: server down ${serverBackAt - failoverAt} ms; first job started ${firstRunAfter - serverBackAt} ms after it came back; ` +
        `queues drained ${drainedAt - serverBackAt} ms after; ` +
        `${recorded.length - finished.size} extra runs of ${finished.size} jobs`,
    );

    stopScheduler.abort();
    await scheduling;
    await worker.stop();
    await working;
    supervisor.child.kill('SIGTERM');
    expect((await supervisor.exited).code).toBe(0);
  }, 180_000);
});
