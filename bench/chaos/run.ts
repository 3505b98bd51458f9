import os from 'node:os';
import { createLogger, createMailq, type Mailq } from '../../src/index.js';
import { startThrowawayServer, type ThrowawayServer } from '../../src/localdb/throwaway-server.js';
import { sleep } from '../../src/sleep.js';
import { WaveDispatcher, type Wave } from './dispatcher.js';
import { DEFAULT_SCHEDULE, injectFaults, type Fault, type FaultKind } from './faults.js';
import { WorkerFleet } from './fleet.js';
import { createLedgerTable, readLedger } from './ledger.js';
import { CHAOS_QUEUE, ledgerJob } from './ledger-job.js';
import { DEFAULT_LOG_FILE } from './paths.js';
import { newSeed, seededRandom } from './random.js';
import { tally, type EndState, type ProcessEndTimes, type Tally } from './tally.js';

export interface ChaosOptions {
  durationMs: number;
  /** Worker processes under the supervisor. Default 3. */
  processes?: number;
  /** Jobs at once per process. Default 4. */
  concurrency?: number;
  /** Jobs each process claims ahead of its free slots, so buffered jobs meet the faults too. Default 0. */
  prefetch?: number;
  seed?: number;
  /**
   * An empty database of your own; the server is then never restarted. Default: a throwaway
   * server started from the local mariadbd/mysqld binaries, which the run may restart.
   */
  databaseUrl?: string;
  /** Where the supervisor's and workers' log lines go. */
  logFile?: string;
  /** After the faults stop, how long the workers get to empty the queue. Default 90 s. */
  drainTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface ChaosResult {
  date: string;
  seed: number;
  durationMs: number;
  settings: { processes: number; concurrency: number; prefetch: number; server: string; serverRestartAllowed: boolean; lockWaitTimeoutSeconds: number };
  machine: { cores: number; cpu: string; node: string; loadAverage: number[] };
  faults: { injected: Record<FaultKind, number>; skipped: Record<FaultKind, number>; connectionsKilled: number; dispatchCallsDuringLockHolds: number; list: Fault[] };
  dispatch: { calls: number; failedCalls: Wave[] };
  workers: { processStarts: number; killed: number; exitedOnTheirOwn: number };
  drain: { ms: number; emptied: boolean; supervisorExit: { code: number | null; signal: string | null } };
  figures: Tally['figures'];
  rerunsWhileAlive: Tally['rerunsWhileAlive'];
  lostSeqs: number[];
  /** Every must-be-0 figure is 0. */
  ok: boolean;
  logFile: string;
}

/** Throwaway servers wait 2 s for a lock (MariaDB's default is 50 s), so a held lock makes dispatches time out and retry. */
const THROWAWAY_LOCK_WAIT_TIMEOUT_S = 2;
const PROGRESS_EVERY_MS = 15_000;

/**
 * The chaos run: N supervised worker processes (`mailq work --processes=N`) and a dispatcher work
 * through ledger jobs while faults are injected; then the queue drains, the workers stop
 * gracefully, and the ledger and tables say whether any job was lost or ran twice while alive.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const log = options.log ?? (() => {});
  const seed = options.seed ?? newSeed();
  const processes = options.processes ?? 3;
  const concurrency = options.concurrency ?? 4;
  const prefetch = options.prefetch ?? 0;
  const logFile = options.logFile ?? DEFAULT_LOG_FILE;
  let server: ThrowawayServer | undefined;
  let mq: Mailq | undefined;
  let fleet: WorkerFleet | undefined;
  try {
    if (!options.databaseUrl) {
      server = await startThrowawayServer({ serverArgs: [`--innodb-lock-wait-timeout=${THROWAWAY_LOCK_WAIT_TIMEOUT_S}`] });
      log(`chaos: throwaway server ${server.version} on port ${server.port}`);
    }
    const databaseUrl = options.databaseUrl ?? server!.url;
    mq = createMailq({ databaseUrl, jobs: [ledgerJob], logger: createLogger({ level: 'silent', pretty: false }) });
    await assertEmptyDatabase(mq);
    await mq.migrate();
    await createLedgerTable(mq.knex);
    const lockWaitTimeoutSeconds = await serverVariable(mq, 'innodb_lock_wait_timeout');
    const clockOffsetMs = await databaseClockOffset(mq);

    log(`chaos: seed ${seed}, ${processes} processes × ${concurrency} (prefetch ${prefetch}), ${Math.round(options.durationMs / 1000)} s of faults; worker logs in ${logFile}`);
    fleet = new WorkerFleet({ databaseUrl, processes, concurrency, prefetch, logFile });
    await waitForFleet(fleet, processes);

    const stopDispatch = new AbortController();
    const dispatcher = new WaveDispatcher(mq, seededRandom(seed + 1));
    const dispatching = dispatcher.run(stopDispatch.signal);
    const progress = setInterval(() => log(`chaos: ${dispatcher.dispatchedSeqs().length} dispatched, ${fleet!.starts} worker process starts`), PROGRESS_EVERY_MS);
    let faults: Fault[];
    try {
      const targets = { fleet, admin: mq.knex, databaseUrl, jobsTable: mq.tables.jobs, server };
      faults = await injectFaults(targets, seededRandom(seed), { ...DEFAULT_SCHEDULE, durationMs: options.durationMs });
    } finally {
      stopDispatch.abort();
      await dispatching;
      clearInterval(progress);
    }

    log(`chaos: ${faults.length} faults done; draining the queue`);
    const drainStarted = Date.now();
    const emptied = await waitForEmptyQueue(mq, options.drainTimeoutMs ?? 90_000);
    const drainMs = Date.now() - drainStarted;
    const supervisorExit = await fleet.stop();
    const end = await readEndState(mq);
    const runs = await readLedger(mq.knex);
    const outcome = tally(
      { dispatched: dispatcher.dispatchedSeqs(), callFailed: dispatcher.failedSeqs(), callsFailed: dispatcher.waves.filter((wave) => wave.error).length },
      runs,
      onDatabaseClock(fleet, clockOffsetMs),
      end,
    );
    const { figures } = outcome;
    return {
      date: new Date().toISOString(),
      seed,
      durationMs: options.durationMs,
      settings: { processes, concurrency, prefetch, server: server ? `throwaway ${server.version}` : 'given URL', serverRestartAllowed: server !== undefined, lockWaitTimeoutSeconds },
      machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', node: process.version, loadAverage: os.loadavg().map((load) => +load.toFixed(2)) },
      faults: summariseFaults(faults, dispatcher.waves),
      dispatch: { calls: dispatcher.waves.length, failedCalls: dispatcher.waves.filter((wave) => wave.error) },
      workers: { processStarts: fleet.starts, killed: fleet.ends.killed.size, exitedOnTheirOwn: fleet.ends.exited.size },
      drain: { ms: drainMs, emptied, supervisorExit },
      figures,
      rerunsWhileAlive: outcome.rerunsWhileAlive,
      lostSeqs: outcome.lostSeqs,
      ok: figures.rerunsWhileAlive === 0 && figures.lost === 0 && figures.leftReserved === 0,
      logFile,
    };
  } finally {
    fleet?.forceStop();
    await mq?.close();
    await server?.stop();
  }
}

async function assertEmptyDatabase(mq: Mailq): Promise<void> {
  const [rows] = (await mq.knex.raw('SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()')) as [Array<{ n: number }>];
  if (Number(rows[0]!.n) > 0) throw new Error('chaos: the database must be empty (the run creates mailq\'s tables and its ledger)');
}

async function serverVariable(mq: Mailq, name: string): Promise<number> {
  const [rows] = (await mq.knex.raw(`SELECT @@${name} AS value`)) as [Array<{ value: number }>];
  return Number(rows[0]!.value);
}

/** Ledger times are the database's NOW(3); process ends are this script's clock. The offset joins them (0 on one machine). */
async function databaseClockOffset(mq: Mailq): Promise<number> {
  const before = Date.now();
  const [rows] = (await mq.knex.raw('SELECT NOW(3) AS now')) as [Array<{ now: Date }>];
  const after = Date.now();
  return rows[0]!.now.getTime() - (before + after) / 2;
}

function onDatabaseClock(fleet: WorkerFleet, offsetMs: number): ProcessEndTimes {
  const shift = (times: Map<number, number>) => new Map([...times].map(([pid, at]) => [pid, at + offsetMs]));
  return { killed: shift(fleet.ends.killed), exited: shift(fleet.ends.exited) };
}

async function waitForFleet(fleet: WorkerFleet, processes: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (fleet.livePids().length < processes) {
    if (!fleet.isRunning) throw new Error('chaos: `mailq work` exited at start; see its log');
    if (Date.now() > deadline) throw new Error(`chaos: ${processes} worker processes did not start within 60 s`);
    await sleep(100);
  }
}

async function waitForEmptyQueue(mq: Mailq, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const [row] = await mq.knex(mq.tables.jobs).where({ queue: CHAOS_QUEUE }).count({ n: '*' });
    if (Number(row?.n ?? 0) === 0) return true;
    await sleep(250);
  }
  return false;
}

async function readEndState(mq: Mailq): Promise<EndState> {
  const seqs = async (table: string) => {
    const [rows] = (await mq.knex.raw(`SELECT JSON_UNQUOTE(JSON_EXTRACT(payload, '$.seq')) AS seq FROM ?? WHERE queue = ?`, [table, CHAOS_QUEUE])) as [Array<{ seq: string }>];
    return new Set(rows.map((row) => Number(row.seq)));
  };
  const [reserved] = await mq.knex(mq.tables.jobs).whereNotNull('reserved_at').count({ n: '*' });
  return { failedSeqs: await seqs(mq.tables.failedJobs), queuedSeqs: await seqs(mq.tables.jobs), leftReserved: Number(reserved?.n ?? 0) };
}

function summariseFaults(faults: Fault[], waves: readonly Wave[]): ChaosResult['faults'] {
  const zero = (): Record<FaultKind, number> => ({ sigkill: 0, 'kill-connection': 0, 'lock-wait': 0, restart: 0 });
  const injected = zero();
  const skipped = zero();
  for (const fault of faults) (fault.injected ? injected : skipped)[fault.kind]++;
  const holds = faults.filter((fault) => fault.kind === 'lock-wait' && fault.injected);
  const duringHolds = waves.filter((wave) => holds.some((hold) => wave.startedAt < hold.endedAt && wave.endedAt > hold.startedAt)).length;
  const connectionsKilled = faults.reduce((sum, fault) => sum + (fault.connectionsKilled ?? 0), 0);
  return { injected, skipped, connectionsKilled, dispatchCallsDuringLockHolds: duringHolds, list: faults };
}
