import mysql from 'mysql2/promise';
import type { Knex } from 'knex';
import { mysqlConnectionOptions } from '../../src/db/connection.js';
import { parseDatabaseUrl } from '../../src/db/url.js';
import type { ThrowawayServer } from '../../src/localdb/throwaway-server.js';
import { sleep } from '../../src/sleep.js';
import type { WorkerFleet } from './fleet.js';
import { clientPort, localPortsOf } from './process-connections.js';
import type { Random } from './random.js';

export type FaultKind = 'sigkill' | 'kill-connection' | 'lock-wait' | 'restart';

export interface Fault {
  kind: FaultKind;
  /** Script clock, ms since the epoch. */
  startedAt: number;
  endedAt: number;
  /** False when there was nothing to hit (no process old enough, no connection open) or the injection failed. */
  injected: boolean;
  detail: string;
  /** kill-connection: how many connections it killed. */
  connectionsKilled?: number;
}

export interface FaultTargets {
  fleet: WorkerFleet;
  /** The script's own pool: reads PROCESSLIST and sends KILL CONNECTION. */
  admin: Knex;
  databaseUrl: string;
  jobsTable: string;
  /** Only a server of our own is restarted. */
  server?: ThrowawayServer;
}

export interface ScheduleOptions {
  durationMs: number;
  /** Pause between two faults, drawn in this range. */
  gapMs: { min: number; max: number };
  /** Dealt like cards from a shuffled deck, refilled when empty: every kind comes once in each round of draws. */
  deck: ReadonlyArray<Exclude<FaultKind, 'restart'>>;
}

export const DEFAULT_SCHEDULE: Omit<ScheduleOptions, 'durationMs'> = {
  gapMs: { min: 1_000, max: 4_000 },
  deck: ['sigkill', 'kill-connection', 'lock-wait'],
};

/** A worker process this young is left alone: it may not be working yet, and kills in a row make the supervisor back off. */
const MIN_UPTIME_FOR_KILL_MS = 3_000;
const LOCK_HOLD_MS = { min: 3_000, max: 5_000 };
const RESTART_DOWN_MS = { min: 1_000, max: 3_000 };

/**
 * Injects faults one at a time, on a seeded schedule with jitter, until the duration is over:
 * SIGKILL of a worker process, KILL CONNECTION of a worker process's connections, a lock held on
 * `jobs` while dispatches run, and (with a server of our own) one database restart, placed between
 * 30% and 60% of the run. Each fault is bounded in time, so the schedule ends on time.
 */
export async function injectFaults(targets: FaultTargets, random: Random, options: ScheduleOptions): Promise<Fault[]> {
  const faults: Fault[] = [];
  const startedAt = Date.now();
  const endsAt = startedAt + options.durationMs;
  let restartAt = targets.server ? startedAt + options.durationMs * (0.3 + 0.3 * random.next()) : Infinity;
  const deck = dealer(random, options.deck);
  for (;;) {
    await sleep(random.between(options.gapMs.min, options.gapMs.max));
    if (Date.now() >= endsAt) return faults;
    let kind: FaultKind;
    if (Date.now() >= restartAt) {
      kind = 'restart';
      restartAt = Infinity;
    } else kind = deck.draw();
    const fault = await inject(kind, targets, random);
    faults.push(fault);
    // A fault that found nothing to hit is dealt again, so every kind does happen in a short run.
    if (!fault.injected && kind !== 'restart') deck.putBack(kind);
  }
}

async function inject(kind: FaultKind, targets: FaultTargets, random: Random): Promise<Fault> {
  const startedAt = Date.now();
  let outcome: InjectionOutcome;
  try {
    outcome = await INJECTORS[kind](targets, random);
  } catch (error) {
    outcome = { injected: false, detail: `failed: ${(error as Error).message}` };
  }
  return { kind, startedAt, endedAt: Date.now(), ...outcome };
}

type InjectionOutcome = Pick<Fault, 'injected' | 'detail' | 'connectionsKilled'>;
type Injector = (targets: FaultTargets, random: Random) => Promise<InjectionOutcome>;

const INJECTORS: Record<FaultKind, Injector> = {
  async sigkill({ fleet }, random) {
    const pids = fleet.livePids(MIN_UPTIME_FOR_KILL_MS);
    if (pids.length === 0) return { injected: false, detail: 'no worker process old enough' };
    const pid = random.pick(pids);
    return fleet.kill(pid) ? { injected: true, detail: `pid ${pid}` } : { injected: false, detail: `pid ${pid} was gone` };
  },

  async 'kill-connection'({ fleet, admin, databaseUrl }, random) {
    const [rows] = (await admin.raw('SELECT ID AS id, HOST AS host FROM information_schema.PROCESSLIST WHERE DB = ?', [parseDatabaseUrl(databaseUrl).database])) as [
      Array<{ id: number; host: string }>,
    ];
    for (const pid of shuffled(random, fleet.livePids())) {
      const ports = await localPortsOf(pid);
      const theirs = rows.filter((row) => ports.has(clientPort(row.host) ?? -1));
      let killed = 0;
      for (const { id } of theirs) {
        // Gone already when it lost a race with the worker's own close: not an error.
        if (await admin.raw(`KILL CONNECTION ${Number(id)}`).then(() => true, () => false)) killed++;
      }
      if (killed > 0) return { injected: true, detail: `${killed} connections of pid ${pid}`, connectionsKilled: killed };
    }
    return { injected: false, detail: 'no worker process had a connection open' };
  },

  /** The recipe: another connection holds a lock on every job row and the gap above them while dispatches run. */
  async 'lock-wait'({ databaseUrl, jobsTable }, random) {
    const holdMs = random.between(LOCK_HOLD_MS.min, LOCK_HOLD_MS.max);
    const connection = await mysql.createConnection({ ...mysqlConnectionOptions(parseDatabaseUrl(databaseUrl)) });
    try {
      // The holder itself waits patiently for the rows that workers are busy with.
      await connection.query('SET SESSION innodb_lock_wait_timeout = 30');
      await connection.query('START TRANSACTION');
      await connection.query('SELECT id FROM ?? WHERE id > 0 FOR UPDATE', [jobsTable]);
      await connection.query('SELECT SLEEP(?)', [holdMs / 1000]);
      await connection.query('COMMIT');
    } finally {
      await connection.end().catch(() => connection.destroy());
    }
    return { injected: true, detail: `held ${holdMs} ms` };
  },

  async restart({ server }, random) {
    if (!server) return { injected: false, detail: 'not our server' };
    const downMs = random.between(RESTART_DOWN_MS.min, RESTART_DOWN_MS.max);
    await server.restart(downMs);
    return { injected: true, detail: `down ${downMs} ms` };
  },
};

function dealer<K>(random: Random, deck: readonly K[]): { draw(): K; putBack(card: K): void } {
  let hand: K[] = [];
  return {
    draw() {
      if (hand.length === 0) hand = shuffled(random, deck);
      return hand.pop()!;
    },
    putBack: (card) => void hand.push(card),
  };
}

function shuffled<T>(random: Random, items: readonly T[]): T[] {
  const copy = [...items];
  for (let index = copy.length - 1; index > 0; index--) {
    const other = random.between(0, index);
    [copy[index], copy[other]] = [copy[other]!, copy[index]!];
  }
  return copy;
}
