import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { MAILQ_BIN, WORKER_CONFIG } from './paths.js';
import { CHAOS_QUEUE } from './ledger-job.js';

export interface FleetOptions {
  databaseUrl: string;
  processes: number;
  concurrency: number;
  /** Jobs each process claims ahead of its free slots (`--prefetch`). */
  prefetch: number;
  /** Everything the supervisor and its workers print goes here (JSON lines). */
  logFile: string;
}

interface LiveProcess {
  startedAt: number;
  workerId: string;
}

/** How the fleet's worker processes ended, on the script's clock (ms since the epoch). */
export interface ProcessEnds {
  /** Killed by the chaos run: the time just before the signal was sent. */
  killed: Map<number, number>;
  /** Ended without being killed by us, before the final stop: the first time we saw it gone (an upper bound). */
  exited: Map<number, number>;
}

const LIVENESS_POLL_MS = 100;

/**
 * `mailq work --processes=N`, run as a user runs it, with its output captured. The supervisor's
 * "worker process started" lines say which pids are its workers; a liveness poll sees them end.
 */
export class WorkerFleet {
  readonly ends: ProcessEnds = { killed: new Map(), exited: new Map() };
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly cli: ChildProcess;
  private readonly live = new Map<number, LiveProcess>();
  private readonly poll: NodeJS.Timeout;
  private started = 0;
  private stopping = false;

  constructor(options: FleetOptions) {
    if (!existsSync(WORKER_CONFIG)) throw new Error(`chaos: ${WORKER_CONFIG} is missing: run \`npm run build\` first`);
    const args = [MAILQ_BIN, 'work', `--processes=${options.processes}`, `--concurrency=${options.concurrency}`, `--prefetch=${options.prefetch}`, `--queue=${CHAOS_QUEUE}`, '--config', WORKER_CONFIG];
    this.cli = spawn(process.execPath, args, { env: workerEnvironment(options.databaseUrl), stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(options.logFile);
    for (const stream of [this.cli.stdout!, this.cli.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        log.write(`${line}\n`);
        this.read(line);
      });
    }
    this.exited = new Promise((resolve) => this.cli.once('close', (code, signal) => {
      log.end();
      resolve({ code, signal });
    }));
    this.poll = setInterval(() => this.noticeEnds(), LIVENESS_POLL_MS);
  }

  /** Worker processes started so far (first starts and restarts). */
  get starts(): number {
    return this.started;
  }

  get isRunning(): boolean {
    return this.cli.exitCode === null && this.cli.signalCode === null;
  }

  /** Pids of worker processes running for at least `minUptimeMs`. */
  livePids(minUptimeMs = 0): number[] {
    const now = Date.now();
    return [...this.live].filter(([, live]) => now - live.startedAt >= minUptimeMs).map(([pid]) => pid);
  }

  /** SIGKILL, recorded first: a rerun that starts after this moment is one the kill allowed. */
  kill(pid: number): boolean {
    if (!this.live.has(pid)) return false;
    this.ends.killed.set(pid, Date.now());
    this.live.delete(pid);
    try {
      process.kill(pid, 'SIGKILL');
      return true;
    } catch {
      this.ends.killed.delete(pid);
      this.ends.exited.set(pid, Date.now());
      return false;
    }
  }

  /** SIGTERM to the supervisor: it stops its workers gracefully (they finish or put back their jobs). */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.stopping = true;
    if (this.isRunning) this.cli.kill('SIGTERM');
    const result = await this.exited;
    clearInterval(this.poll);
    return result;
  }

  /** For a run that failed: nothing of ours may outlive it. */
  forceStop(): void {
    clearInterval(this.poll);
    for (const pid of this.live.keys()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    if (this.isRunning) this.cli.kill('SIGKILL');
  }

  private read(line: string): void {
    if (!line.startsWith('{')) return;
    let entry: { msg?: unknown; pid?: unknown; workerId?: unknown; supervisor?: unknown };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      return;
    }
    // In that line `pid` is the worker's (the field comes after pino's own pid, so JSON.parse keeps it).
    if (entry.supervisor !== undefined && entry.msg === 'worker process started' && typeof entry.pid === 'number') {
      this.live.set(entry.pid, { startedAt: Date.now(), workerId: String(entry.workerId) });
      this.started++;
    }
  }

  private noticeEnds(): void {
    for (const pid of this.live.keys()) {
      if (isAlive(pid)) continue;
      this.live.delete(pid);
      // Exits of the graceful stop at the end are the plan, not a crash.
      if (!this.stopping) this.ends.exited.set(pid, Date.now());
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A clean mailq environment: only the chaos database, and info logs (the supervisor's start lines are read). */
function workerEnvironment(databaseUrl: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('MAILQ_') && key !== 'DATABASE_URL') env[key] = value;
  return { ...env, MAILQ_DATABASE_URL: databaseUrl, MAILQ_LOG_LEVEL: 'info' };
}
