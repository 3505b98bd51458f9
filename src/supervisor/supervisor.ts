import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { withDatabaseRetry } from '../db/retry.js';
import { hostName } from '../host-name.js';
import type { TableNames } from '../db/tables.js';
import { parseDuration, formatDuration, type Duration } from '../duration.js';
import { JobRows } from '../worker/job-rows.js';
import { WorkerRows, type PresenceStatus } from '../worker/worker-rows.js';
import { FINAL_STOP_REASONS, WORKER_EXIT } from './protocol.js';
import { RestartPolicy, type RestartDecision, type RestartPolicyOptions } from './restart-policy.js';
import { WorkerProcess, type ProcessExit, type WorkerCommand } from './worker-process.js';
import { sleep } from '../sleep.js';

export interface SupervisorOptions {
  /** Worker processes to keep running. */
  processes: number;
  /** What each worker process runs (the CLI forks `bin/mailq.js work …` with the same flags). */
  command: WorkerCommand;
  /** Shown in the workers table; the processes themselves decide what they claim. */
  queues: readonly string[];
  concurrency: number;
  /** On stop, how long worker processes may take to finish before they are killed. Default 60 s. */
  stopWait?: Duration;
  /** How often the supervisor's own row is refreshed. Default 5 s. */
  heartbeat?: Duration;
  restart?: RestartPolicyOptions;
  id?: string;
  /** The host shown in the workers table and in its and its workers' ids. Default: the machine's hostname. */
  hostname?: string;
}

/** 'stopped' after a graceful stop, 'forced' after a second signal, 'finished' when every process ended its work (--stop-when-empty, --once). */
export type SupervisorEnd = 'stopped' | 'forced' | 'finished';

export interface SupervisorEvents {
  spawned: [slot: number, process: WorkerProcess];
  exited: [slot: number, process: WorkerProcess, exit: ProcessExit, decision: RestartDecision | undefined];
}

/** Released jobs of dead workers are checked once more after this: a claim sent just before a kill may still commit. */
const RECHECK_DEAD_AFTER_MS = 2_000;

class Slot {
  current: WorkerProcess | undefined;
  crashLoop: string | undefined;
  readonly ended: Promise<void>;
  private markEnded!: () => void;
  private waiters: Array<(process: WorkerProcess) => void> = [];

  constructor(
    readonly index: number,
    readonly policy: RestartPolicy,
  ) {
    this.ended = new Promise((resolve) => (this.markEnded = resolve));
  }

  started(process: WorkerProcess): void {
    this.current = process;
    this.waiters.splice(0).forEach((resolve) => resolve(process));
  }

  /** Resolves with the next process this slot starts. */
  nextStart(): Promise<WorkerProcess> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  end(): void {
    this.markEnded();
  }
}

/**
 * Keeps N worker processes running: restarts one that exits (at once after a planned exit,
 * with backoff after quick crashes), returns a dead one's jobs to the queue at once, recycles
 * them one by one on reload, and stops them all within the stop wait. It claims nothing itself.
 *
 * @example
 * const supervisor = new Supervisor(mq.knex, mq.tables, mq.logger, {
 *   processes: 4, queues: ['default'], concurrency: 5,
 *   command: { modulePath: 'node_modules/mailq/bin/mailq.js', args: ['work', '--queue=default'] },
 * });
 * process.on('SIGTERM', () => void supervisor.stop());
 * await supervisor.run();
 */
export class Supervisor extends EventEmitter<SupervisorEvents> {
  readonly id: string;
  /** The host it and its workers report. */
  readonly host: string;
  private readonly slots: Slot[];
  private readonly stopWaitMs: number;
  private readonly heartbeatMs: number;
  private readonly jobs: JobRows;
  private readonly workers: WorkerRows;
  private readonly logger: Logger;
  private readonly stopController = new AbortController();
  private readonly recentlyDead = new Map<string, number>();
  private stopping = false;
  private forced = false;
  private restarts = 0;
  private runPromise: Promise<SupervisorEnd> | undefined;
  private reloading: Promise<void> = Promise.resolve();
  private timers: NodeJS.Timeout[] = [];

  constructor(
    knex: Knex,
    tables: TableNames,
    logger: Logger,
    private readonly options: SupervisorOptions,
  ) {
    super();
    if (!Number.isInteger(options.processes) || options.processes < 1) throw new RangeError('processes must be an integer ≥ 1');
    this.host = hostName(options.hostname);
    this.id = options.id ?? `${this.host}:${process.pid}:supervisor:${randomBytes(3).toString('hex')}`;
    this.stopWaitMs = parseDuration(options.stopWait ?? 60);
    this.heartbeatMs = parseDuration(options.heartbeat ?? 5) || 5_000;
    this.jobs = new JobRows(knex, tables);
    this.workers = new WorkerRows(knex, tables);
    this.logger = logger.child({ supervisor: this.id });
    this.slots = Array.from({ length: options.processes }, (_, index) => new Slot(index, new RestartPolicy(options.restart)));
  }

  /** Runs until stopped, or until every process has ended its work; resolves with how it ended. */
  run(): Promise<SupervisorEnd> {
    this.runPromise ??= this.loop();
    return this.runPromise;
  }

  /** Graceful: every process finishes or puts back its jobs; any still running after the stop wait is killed. */
  stop(): Promise<SupervisorEnd> {
    if (!this.stopping) {
      this.stopping = true;
      this.stopController.abort();
      this.logger.info({ processes: this.liveProcesses().length, stopWaitMs: this.stopWaitMs }, 'stopping worker processes');
      for (const child of this.liveProcesses()) child.stop();
      this.timers.push(setTimeout(() => this.killAll('stop wait over'), this.stopWaitMs));
      void this.beat();
    }
    return this.runPromise ?? Promise.resolve('stopped');
  }

  /** Kills every process now; their jobs are released to the queue. */
  forceStop(): Promise<SupervisorEnd> {
    this.forced = true;
    const stopped = this.stop();
    this.killAll('forced stop');
    return stopped;
  }

  /** Restarts the processes one at a time, each after the previous replacement is ready: the queue keeps being worked. */
  reload(): Promise<void> {
    this.reloading = this.reloading.then(() => this.reloadOneByOne());
    return this.reloading;
  }

  /** Pids of the running worker processes, by slot. */
  get pids(): Array<number | undefined> {
    return this.slots.map((slot) => (slot.current?.isRunning ? slot.current.pid : undefined));
  }

  private async loop(): Promise<SupervisorEnd> {
    this.logger.info({ processes: this.options.processes, queues: this.options.queues }, 'supervisor started');
    await this.guard('register', () => this.register());
    this.timers.push(setInterval(() => void this.beat(), this.heartbeatMs));
    await Promise.all(this.slots.map((slot) => this.runSlot(slot).finally(() => slot.end())));
    this.timers.forEach((timer) => clearTimeout(timer));
    await this.recheckDead(0);
    await this.guard('unregister', async () => void (await this.workers.remove([this.id])));
    const end: SupervisorEnd = this.forced ? 'forced' : this.stopping ? 'stopped' : 'finished';
    this.logger.info({ end, restarts: this.restarts }, 'supervisor stopped');
    return end;
  }

  private async runSlot(slot: Slot): Promise<void> {
    while (!this.stopping) {
      const child = this.spawn(slot);
      const exit = await child.exited;
      await this.releaseJobsOf(child, exit);
      if (this.stopping) {
        this.emit('exited', slot.index, child, exit, undefined);
        return;
      }
      if (exit.code === WORKER_EXIT.ok && exit.reason && FINAL_STOP_REASONS.has(exit.reason)) {
        this.logger.info({ slot: slot.index + 1, reason: exit.reason }, 'worker process finished its work; not replacing it');
        this.emit('exited', slot.index, child, exit, undefined);
        return;
      }
      const planned = exit.code === WORKER_EXIT.ok || exit.code === WORKER_EXIT.stuckJob;
      const decision = slot.policy.next({ planned, uptimeMs: exit.uptimeMs });
      this.restarts++;
      this.report(slot, child, exit, decision);
      this.emit('exited', slot.index, child, exit, decision);
      if (decision.delayMs > 0) await sleep(decision.delayMs, this.stopController.signal);
    }
  }

  private spawn(slot: Slot): WorkerProcess {
    const workerId = `${this.host}:${process.pid}.${slot.index + 1}:${randomBytes(3).toString('hex')}`;
    const child = new WorkerProcess(workerId, this.id, this.options.command);
    slot.started(child);
    this.logger.info({ slot: slot.index + 1, pid: child.pid, workerId }, 'worker process started');
    this.emit('spawned', slot.index, child);
    return child;
  }

  private report(slot: Slot, child: WorkerProcess, exit: ProcessExit, decision: RestartDecision): void {
    const context = { slot: slot.index + 1, pid: child.pid, code: exit.code, signal: exit.signal, reason: exit.reason, uptimeMs: exit.uptimeMs };
    if (exit.code === WORKER_EXIT.ok) {
      slot.crashLoop = undefined;
      this.logger.info(context, `worker process exited (${exit.reason ?? 'no reason given'}); starting a new one`);
    } else if (exit.code === WORKER_EXIT.stuckJob) {
      slot.crashLoop = undefined;
      this.logger.error(context, 'a job handler ignored its timeout: worker process recycled; starting a new one');
    } else {
      const next = decision.delayMs > 0 ? `in ${formatDuration(decision.delayMs)}` : 'now';
      slot.crashLoop = decision.crashLoop
        ? `process ${slot.index + 1}: ${decision.crashes} quick crashes in a row (last: ${describeExit(exit)}); next start ${next}`
        : undefined;
      this.logger.error({ ...context, crashes: decision.crashes, delayMs: decision.delayMs }, slot.crashLoop ?? `worker process crashed (${describeExit(exit)}); restarting ${next}`);
      if (decision.crashLoop) void this.beat();
    }
  }

  /** A dead process's reservations go back to the queue now, not when their leases run out. */
  private async releaseJobsOf(child: WorkerProcess, exit: ProcessExit): Promise<void> {
    this.recentlyDead.set(child.workerId, Date.now());
    await this.releaseWorker(child.workerId, describeExit(exit));
    await this.guard('remove worker row', async () => void (await this.workers.remove([child.workerId])));
  }

  private async releaseWorker(workerId: string, cause: string): Promise<void> {
    try {
      const result = await withDatabaseRetry(() => this.jobs.releaseDeadWorker(workerId, cause), { reconnectForMs: 5_000 });
      if (result.released || result.failed || result.removed) this.logger.warn({ workerId, ...result }, 'returned the jobs of a dead worker process');
    } catch (error) {
      this.logger.warn({ err: error, workerId }, 'could not return the jobs of a dead worker process; the lease sweep will');
    }
  }

  /** The second look at dead workers' reservations (a claim committed by the server after its client died). */
  private async recheckDead(olderThanMs: number): Promise<void> {
    const now = Date.now();
    for (const [workerId, diedAt] of this.recentlyDead) {
      if (now - diedAt < olderThanMs) continue;
      this.recentlyDead.delete(workerId);
      await this.releaseWorker(workerId, 'its process died (found on a second look)');
    }
  }

  private async reloadOneByOne(): Promise<void> {
    this.logger.info({ processes: this.slots.length }, 'reloading worker processes one by one');
    for (const slot of this.slots) {
      const old = slot.current;
      if (this.stopping) return;
      if (!old?.isRunning) continue;
      const next = slot.nextStart();
      old.stop();
      const started = await Promise.race([next, slot.ended.then(() => undefined), this.whenStopping()]);
      if (!started) continue;
      const ready = await Promise.race([started.ready, this.whenStopping()]);
      if (ready) this.logger.info({ slot: slot.index + 1, pid: started.pid }, `reloaded process ${slot.index + 1} of ${this.slots.length}`);
    }
    if (!this.stopping) this.logger.info('reload done');
  }

  private whenStopping(): Promise<undefined> {
    return new Promise((resolve) => {
      if (this.stopController.signal.aborted) resolve(undefined);
      else this.stopController.signal.addEventListener('abort', () => resolve(undefined), { once: true });
    });
  }

  private killAll(why: string): void {
    const remaining = this.liveProcesses();
    if (remaining.length === 0) return;
    this.logger.warn({ processes: remaining.map((child) => child.pid) }, `${why}: killing worker processes; their jobs go back to the queue`);
    for (const child of remaining) child.kill();
  }

  private liveProcesses(): WorkerProcess[] {
    return this.slots.flatMap((slot) => (slot.current?.isRunning ? [slot.current] : []));
  }

  private async register(): Promise<void> {
    await this.workers.register(
      {
        id: this.id,
        kind: 'supervisor',
        host: this.host,
        pid: process.pid,
        queues: this.options.queues,
        concurrency: this.options.concurrency,
        heartbeatMs: this.heartbeatMs,
      },
      this.status(),
    );
  }

  private async beat(): Promise<void> {
    for (const slot of this.slots) {
      // A process that has run long enough ends its slot's crash loop.
      if (slot.crashLoop && slot.current?.isRunning && slot.current.uptimeMs >= slot.policy.minUptime) slot.crashLoop = undefined;
    }
    await this.guard('heartbeat', async () => {
      if (!(await this.workers.beat(this.id, this.status()))) await this.register();
    });
    if (!this.stopping) await this.recheckDead(RECHECK_DEAD_AFTER_MS);
  }

  private status(): PresenceStatus {
    const crashLoop = this.slots.find((slot) => slot.crashLoop)?.crashLoop;
    const live = this.liveProcesses().length;
    return {
      state: this.stopping ? 'stopping' : crashLoop ? 'crash-loop' : 'running',
      detail: crashLoop ?? `${live} of ${this.options.processes} processes running`,
      running: live,
      restarts: this.restarts,
      memoryBytes: process.memoryUsage.rss(),
    };
  }

  private async guard(what: string, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (error) {
      this.logger.warn({ err: error }, `supervisor ${what} failed`);
    }
  }
}

export function describeExit(exit: Pick<ProcessExit, 'code' | 'signal'>): string {
  if (exit.signal) return `killed by ${exit.signal}`;
  if (exit.code === WORKER_EXIT.stuckJob) return `exit code ${exit.code} (a handler ignored its timeout)`;
  return `exit code ${exit.code}`;
}
