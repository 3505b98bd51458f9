/**
 * `npm run bench`: mailq against plain-mysql2 yardsticks on the local server, in one run.
 * Prints a table and writes bench/results.json (with the machine it ran on).
 */
import { execFileSync, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import Table from 'cli-table3';
import mysql, { type Pool, type RowDataPacket } from 'mysql2/promise';
import { createLogger, createMailq, defineJob, type Mailq } from '../src/index.js';
import { parseDatabaseUrl } from '../src/db/url.js';
import type { ChildMessage, ChildTask } from './child.js';
import { noop, SLEEP_MS, sleep50 } from './jobs.js';
import { plainInsert } from './yardsticks.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** bench/results.json in the repository, whether run from bench/ (tsx) or dist/bench/ (compiled). */
const RESULTS_FILE = path.resolve(HERE, HERE.includes(`${path.sep}dist${path.sep}`) ? '../../bench/results.json' : 'results.json');
const CHILD_SCRIPT = path.join(HERE, 'child.js');

const DISPATCH_JOBS = 100_000;
const DISPATCH_ROUNDS = 2;
const DRAIN_JOBS = 20_000;
const DRAIN_PROCESSES = 2;
const DRAIN_CONCURRENCY = 10;
const IO_JOBS = 3_025;
const IO_CONCURRENCY = 10;
const PICKUPS = 200;

const TARGETS = { drainOfBatchYardstick: 0.8, dispatchFraction: 0.8, efficiency: 0.98, pickupP50Ms: 50 };
/**
 * mailq's workers claim ahead by this many (MAILQ_BENCH_PREFETCH=n to try others). 40 at concurrency 10
 * makes claims of 20–50 jobs, the batch yardstick's ≤ 50: like against like. The library's default is 0.
 */
const PREFETCH = Number(process.env.MAILQ_BENCH_PREFETCH ?? 40);

interface DrainResult {
  jobs: number;
  seconds: number;
  jobsPerSecond: number;
  exactlyOnce: boolean;
  /** CPU time of the worker processes as a share of one core over the run, per process. */
  workerCpu: number[];
  /** The same for the database server process, when it runs on this machine (it serves every client, not only us). */
  serverCpu: number | null;
  /** CPU time per job, in microseconds: all worker processes together, and the server. */
  cpuPerJobUs: { workers: number; server: number | null };
}

/** CPU seconds used so far by the local mariadbd/mysqld, or null when there is none to read (remote server, not Linux). */
function serverCpuSeconds(): number | null {
  try {
    const pid = execFileSync('pidof', ['mariadbd', 'mysqld'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split(/\s+/)[0];
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime, in clock ticks (100 per second on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

const silent = createLogger({ level: 'silent', pretty: false });
const log = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const BENCH_URL = process.env.MAILQ_BENCH_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/mailq_bench';

async function main(): Promise<void> {
  const url = BENCH_URL;
  await recreateDatabase(url);
  const mq = createMailq({ databaseUrl: url, jobs: [noop, sleep50], logger: silent });
  const pool = mysql.createPool({ uri: url, connectionLimit: 4, timezone: 'Z' });
  try {
    await mq.migrate();
    const machine = await machineInfo(pool);
    log(`mailq bench on ${machine.cores} cores, ${machine.server.version}, load ${machine.loadAverage.join(' ')}`);

    const dispatch = await benchDispatch(mq, pool);
    const drain = await benchDrain(mq, pool, 'mailq');
    const batchDrain = await benchDrain(mq, pool, 'batch');
    const yardstickDrain = await benchDrain(mq, pool, 'one-row');
    const efficiency = await benchEfficiency(mq, pool);
    const pickup = { sameProcess: await benchPickup(mq, url, 'same'), otherProcess: await benchPickup(mq, url, 'other') };

    const results = {
      date: new Date().toISOString(),
      machine: { ...machine, loadAverageAfter: os.loadavg().map((load) => +load.toFixed(2)) },
      dispatch: { ...dispatch, fractionOfInsert: +(dispatch.mailq.jobsPerSecond / dispatch.plainInsert.jobsPerSecond).toFixed(3) },
      drain: {
        mailq: drain,
        prefetch: PREFETCH,
        batchYardstick: batchDrain,
        oneRowYardstick: yardstickDrain,
        multipleOfBatchYardstick: +(drain.jobsPerSecond / batchDrain.jobsPerSecond).toFixed(2),
        multipleOfYardstick: +(drain.jobsPerSecond / yardstickDrain.jobsPerSecond).toFixed(1),
      },
      efficiency,
      pickup,
      /** mailq's phases; the yardstick's own check is under drain.oneRowYardstick. */
      exactlyOnce: dispatch.exactlyOnce && drain.exactlyOnce && efficiency.exactlyOnce && pickup.sameProcess.exactlyOnce && pickup.otherProcess.exactlyOnce,
      targets: TARGETS,
    };
    print(results);
    await writeFile(RESULTS_FILE, `${JSON.stringify(results, null, 2)}\n`);
    log(`wrote ${path.relative(process.cwd(), RESULTS_FILE)}`);
  } finally {
    await pool.end();
    await mq.close();
  }
}

/** Drops and creates the bench database; refuses a database whose name does not say it is one. */
async function recreateDatabase(url: string): Promise<void> {
  const { database } = parseDatabaseUrl(url);
  if (!/bench/i.test(database)) throw new Error(`refusing to recreate database '${database}': the bench database's name must contain "bench"`);
  const server = new URL(url);
  server.pathname = '/';
  const connection = await mysql.createConnection({ uri: server.toString() });
  try {
    await connection.query(`DROP DATABASE IF EXISTS \`${database}\``);
    await connection.query(`CREATE DATABASE \`${database}\` CHARACTER SET utf8mb4`);
  } finally {
    await connection.end();
  }
}

async function machineInfo(pool: Pool) {
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT VERSION() AS version, @@innodb_flush_log_at_trx_commit AS flushLogAtTrxCommit, @@log_bin AS binlog,
            @@innodb_buffer_pool_size AS bufferPool, @@transaction_isolation AS isolation`,
  ).catch(() => pool.query<RowDataPacket[]>(`SELECT VERSION() AS version, @@innodb_flush_log_at_trx_commit AS flushLogAtTrxCommit, @@log_bin AS binlog, @@innodb_buffer_pool_size AS bufferPool, @@tx_isolation AS isolation`));
  const server = rows[0]!;
  return {
    cores: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadAverage: os.loadavg().map((load) => +load.toFixed(2)),
    server: {
      version: String(server.version),
      flushLogAtTrxCommit: Number(server.flushLogAtTrxCommit),
      binlog: Boolean(Number(server.binlog)),
      bufferPoolMiB: Math.round(Number(server.bufferPool) / 2 ** 20),
      isolation: String(server.isolation),
    },
  };
}

async function emptyTables(pool: Pool): Promise<void> {
  await pool.query('TRUNCATE TABLE jobs');
  await pool.query('TRUNCATE TABLE failed_jobs');
}

async function countRows(pool: Pool, table: string): Promise<number> {
  const [rows] = await pool.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${table}\``);
  return Number(rows[0]!.n);
}

const rate = (jobs: number, ms: number) => Math.round(jobs / (ms / 1000));

/** dispatchMany of 100,000 validated jobs against the same rows as plain multi-row INSERTs; best of rounds, alternating. */
async function benchDispatch(mq: Mailq, pool: Pool) {
  const payloads = Array.from({ length: DISPATCH_JOBS }, (_, n) => ({ n }));
  const rounds: Array<{ plainInsertMs: number; mailqMs: number }> = [];
  let exactlyOnce = true;
  for (let round = 1; round <= DISPATCH_ROUNDS; round++) {
    await emptyTables(pool);
    let started = performance.now();
    await plainInsert(pool, 'jobs', 'dispatch', noop.name, payloads);
    const plainInsertMs = performance.now() - started;
    exactlyOnce &&= (await countRows(pool, 'jobs')) === DISPATCH_JOBS;

    await emptyTables(pool);
    started = performance.now();
    await mq.dispatchMany(noop, payloads, { queue: 'dispatch' });
    const mailqMs = performance.now() - started;
    exactlyOnce &&= (await countRows(pool, 'jobs')) === DISPATCH_JOBS;
    rounds.push({ plainInsertMs: Math.round(plainInsertMs), mailqMs: Math.round(mailqMs) });
    log(`dispatch round ${round}: plain INSERT ${rate(DISPATCH_JOBS, plainInsertMs)}/s, mailq ${rate(DISPATCH_JOBS, mailqMs)}/s`);
  }
  const best = (key: 'plainInsertMs' | 'mailqMs') => Math.min(...rounds.map((round) => round[key]));
  return {
    jobs: DISPATCH_JOBS,
    rounds,
    mailq: { ms: best('mailqMs'), jobsPerSecond: rate(DISPATCH_JOBS, best('mailqMs')) },
    plainInsert: { ms: best('plainInsertMs'), jobsPerSecond: rate(DISPATCH_JOBS, best('plainInsertMs')) },
    exactlyOnce,
  };
}

/** Forks worker processes, starts them together once all are ready, and times until the last reports done. */
async function runChildren(tasks: ChildTask[]): Promise<{ ms: number; handled: number[][]; cpuMs: number[] }> {
  const children = tasks.map((task) => fork(CHILD_SCRIPT, [JSON.stringify(task)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const next = (child: (typeof children)[number]) =>
    new Promise<ChildMessage>((resolve, reject) => {
      child.once('message', (message) => resolve(message as ChildMessage));
      child.once('exit', (code) => reject(new Error(`bench worker exited with ${code} before reporting`)));
    });
  const ready = await Promise.all(children.map(next));
  if (ready.some((message) => message.type !== 'ready')) throw new Error('a bench worker failed to start');
  const done = children.map(next);
  const started = performance.now();
  for (const child of children) child.send('go');
  const reports = await Promise.all(done);
  const ms = performance.now() - started;
  await Promise.all(children.map((child) => (child.exitCode === null ? new Promise((resolve) => child.once('exit', resolve)) : undefined)));
  for (const report of reports) if (report.type === 'done' && report.error) throw new Error(`bench worker failed: ${report.error}`);
  const finished = reports as Array<Extract<ChildMessage, { type: 'done' }>>;
  return { ms, handled: finished.map((report) => report.handled), cpuMs: finished.map((report) => report.cpuMs) };
}

/** Every id ran once: as many handled as dispatched, no duplicates, and nothing left in either table. */
async function ranExactlyOnce(pool: Pool, handled: number[][], expected: number): Promise<boolean> {
  const all = handled.flat();
  return all.length === expected && new Set(all).size === expected && (await countRows(pool, 'jobs')) === 0 && (await countRows(pool, 'failed_jobs')) === 0;
}

/** 20,000 no-op jobs, 2 processes × 10: mailq's worker, the batch claimer, or the one-row-per-transaction yardstick. */
async function benchDrain(mq: Mailq, pool: Pool, role: ChildTask['role']): Promise<DrainResult> {
  await emptyTables(pool);
  await mq.dispatchMany(noop, Array.from({ length: DRAIN_JOBS }, (_, n) => ({ n })), { queue: 'drain' });
  const url = BENCH_URL;
  const tasks = Array.from({ length: DRAIN_PROCESSES }, (): ChildTask => ({ role, url, queue: 'drain', concurrency: DRAIN_CONCURRENCY, prefetch: PREFETCH }));
  const serverBefore = serverCpuSeconds();
  const { ms, handled, cpuMs } = await runChildren(tasks);
  const serverAfter = serverCpuSeconds();
  const serverMs = serverBefore === null || serverAfter === null ? null : (serverAfter - serverBefore) * 1000;
  const result = {
    jobs: DRAIN_JOBS,
    seconds: +(ms / 1000).toFixed(2),
    jobsPerSecond: rate(DRAIN_JOBS, ms),
    exactlyOnce: await ranExactlyOnce(pool, handled, DRAIN_JOBS),
    workerCpu: cpuMs.map((cpu) => +(cpu / ms).toFixed(2)),
    serverCpu: serverMs === null ? null : +(serverMs / ms).toFixed(2),
    cpuPerJobUs: {
      workers: Math.round((cpuMs.reduce((sum, cpu) => sum + cpu, 0) * 1000) / DRAIN_JOBS),
      server: serverMs === null ? null : Math.round((serverMs * 1000) / DRAIN_JOBS),
    },
  };
  log(
    `drain (${role}): ${result.jobsPerSecond}/s in ${result.seconds} s, worker CPU ${result.workerCpu.join(', ')}, server CPU ${result.serverCpu ?? 'n/a'}; ` +
      `per job ${result.cpuPerJobUs.workers} µs workers, ${result.cpuPerJobUs.server ?? 'n/a'} µs server`,
  );
  return result;
}

/** 3,025 jobs that each await 50 ms, concurrency 10, one process: ideal time ÷ actual time. */
async function benchEfficiency(mq: Mailq, pool: Pool) {
  await emptyTables(pool);
  await mq.dispatchMany(sleep50, Array.from({ length: IO_JOBS }, (_, n) => ({ n })), { queue: 'io' });
  const { ms, handled } = await runChildren([{ role: 'mailq', url: BENCH_URL, queue: 'io', concurrency: IO_CONCURRENCY, prefetch: PREFETCH }]);
  const idealMs = (IO_JOBS * SLEEP_MS) / IO_CONCURRENCY;
  const result = {
    jobs: IO_JOBS,
    idealSeconds: +(idealMs / 1000).toFixed(2),
    actualSeconds: +(ms / 1000).toFixed(2),
    efficiency: +(idealMs / ms).toFixed(3),
    exactlyOnce: await ranExactlyOnce(pool, handled, IO_JOBS),
  };
  log(`I/O efficiency: ${result.efficiency} (${result.actualSeconds} s for an ideal ${result.idealSeconds} s)`);
  return result;
}

/**
 * Dispatch → handler start with one idle worker on default settings, in this process so one
 * monotonic clock times both ends. Dispatches come one at a time, 20–80 ms apart. 'same': the worker
 * belongs to the dispatching Mailq instance (an app that embeds its workers: the dispatch wakes it);
 * 'other': it has its own instance and pool, as a worker in another process would (it polls).
 */
async function benchPickup(mq: Mailq, url: string, side: 'same' | 'other') {
  await mq.knex('jobs').truncate();
  const dispatchedAt = new Map<number, number>();
  const latencies: number[] = [];
  let seen = 0;
  const ranOnce = new Set<number>();
  let duplicate = false;
  const probe = defineJob<{ n: number }>({
    name: 'bench-pickup',
    handle({ n }) {
      latencies.push(performance.now() - dispatchedAt.get(n)!);
      if (ranOnce.has(n)) duplicate = true;
      ranOnce.add(n);
      seen++;
    },
  });
  const workerSide = side === 'same' ? mq : createMailq({ databaseUrl: url, jobs: [probe], logger: silent });
  const worker = workerSide.worker({ queues: ['pickup'], jobs: side === 'same' ? [probe] : [] });
  const running = worker.run();
  await sleep(500);
  for (let n = 0; n < PICKUPS; n++) {
    await sleep(20 + Math.random() * 60);
    dispatchedAt.set(n, performance.now());
    await mq.dispatch(probe, { n }, { queue: 'pickup' });
  }
  const deadline = Date.now() + 10_000;
  while (seen < PICKUPS && Date.now() < deadline) await sleep(20);
  await worker.stop();
  await running;
  if (workerSide !== mq) await workerSide.close();
  const sorted = [...latencies].sort((a, b) => a - b);
  const percentile = (p: number) => +(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN).toFixed(1);
  const result = {
    dispatches: PICKUPS,
    p50Ms: percentile(50),
    p99Ms: percentile(99),
    maxMs: +(sorted.at(-1) ?? NaN).toFixed(1),
    workerSleepMs: 100,
    exactlyOnce: seen === PICKUPS && ranOnce.size === PICKUPS && !duplicate,
  };
  log(`pickup latency (${side === 'same' ? 'same process' : 'other process'}): p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms`);
  return result;
}

function print(results: {
  machine: Awaited<ReturnType<typeof machineInfo>> & { loadAverageAfter: number[] };
  dispatch: Awaited<ReturnType<typeof benchDispatch>> & { fractionOfInsert: number };
  drain: { mailq: DrainResult; batchYardstick: DrainResult; oneRowYardstick: DrainResult; multipleOfBatchYardstick: number; multipleOfYardstick: number; prefetch: number | string };
  efficiency: Awaited<ReturnType<typeof benchEfficiency>>;
  pickup: { sameProcess: Awaited<ReturnType<typeof benchPickup>>; otherProcess: Awaited<ReturnType<typeof benchPickup>> };
  exactlyOnce: boolean;
}): void {
  const { machine, dispatch, drain, efficiency, pickup } = results;
  const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const jobsPerSecond = (result: DrainResult) => `${result.jobsPerSecond.toLocaleString('en')} jobs/s`;
  const drainLabel = `drain ${DRAIN_JOBS.toLocaleString('en')} no-op, ${DRAIN_PROCESSES} proc × ${DRAIN_CONCURRENCY} (prefetch ${drain.prefetch})`;
  const table = new Table({ head: ['measure', 'mailq', 'yardstick (plain mysql2)', 'ratio', 'target'], style: { head: [], border: [] } });
  table.push(
    [`dispatch ${DISPATCH_JOBS.toLocaleString('en')} (dispatchMany)`, `${dispatch.mailq.jobsPerSecond.toLocaleString('en')} jobs/s`, `${dispatch.plainInsert.jobsPerSecond.toLocaleString('en')} jobs/s (multi-row INSERT)`, `${dispatch.fractionOfInsert}×`, `≥ ${TARGETS.dispatchFraction}×: ${verdict(dispatch.fractionOfInsert >= TARGETS.dispatchFraction)}`],
    [drainLabel, jobsPerSecond(drain.mailq), `${jobsPerSecond(drain.batchYardstick)} (batch claimer, ≤ 50 per claim)`, `${drain.multipleOfBatchYardstick}×`, `≥ ${TARGETS.drainOfBatchYardstick}×: ${verdict(drain.multipleOfBatchYardstick >= TARGETS.drainOfBatchYardstick)}`],
    ['', '', `${jobsPerSecond(drain.oneRowYardstick)} (one row per transaction)`, `${drain.multipleOfYardstick}×`, ''],
    [`I/O-bound: ${IO_JOBS.toLocaleString('en')} × ${SLEEP_MS} ms, concurrency ${IO_CONCURRENCY}`, `${efficiency.efficiency} (${efficiency.actualSeconds} s, ideal ${efficiency.idealSeconds} s)`, '', '', `≥ ${TARGETS.efficiency}: ${verdict(efficiency.efficiency >= TARGETS.efficiency)}`],
    [`pickup, idle worker in the dispatching process (${PICKUPS})`, `p50 ${pickup.sameProcess.p50Ms} ms, p99 ${pickup.sameProcess.p99Ms} ms`, '', '', `p50 ≤ ${TARGETS.pickupP50Ms} ms: ${verdict(pickup.sameProcess.p50Ms <= TARGETS.pickupP50Ms)}`],
    [`pickup, idle worker elsewhere (polls every 100 ms)`, `p50 ${pickup.otherProcess.p50Ms} ms, p99 ${pickup.otherProcess.p99Ms} ms`, '', '', ''],
    ['every job ran exactly once', results.exactlyOnce ? 'yes' : 'NO', drain.batchYardstick.exactlyOnce && drain.oneRowYardstick.exactlyOnce ? 'yes' : 'NO', '', ''],
  );
  console.log(`\nmailq bench — ${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB, node ${machine.node}, ${machine.server.version}`);
  console.log(`server: innodb_flush_log_at_trx_commit=${machine.server.flushLogAtTrxCommit}, binlog ${machine.server.binlog ? 'on' : 'off'}; load average ${machine.loadAverage.join(' ')} → ${machine.loadAverageAfter.join(' ')}`);
  console.log(table.toString());
  const cpu = (label: string, result: DrainResult) =>
    `${label}: workers ${result.workerCpu.join(' + ')} of a core, server ${result.serverCpu ?? 'n/a'}; per job ${result.cpuPerJobUs.workers} µs in workers, ${result.cpuPerJobUs.server ?? 'n/a'} µs in the server`;
  console.log(`drain CPU — ${cpu('mailq', drain.mailq)}\n            ${cpu('batch yardstick', drain.batchYardstick)}\n            ${cpu('one-row yardstick', drain.oneRowYardstick)}`);
}

await main();
