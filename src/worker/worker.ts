import { EventEmitter } from 'node:events';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { isConnectionError } from '../db/errors.js';
import { assertSupportedServer } from '../db/server-version.js';
import type { TableNames } from '../db/tables.js';
import { JobTimeoutError, type LeaseLostError } from '../errors.js';
import type { JobRegistry } from '../job.js';
import { ClaimGate } from '../ratelimit/claim-gate.js';
import { RateLimiter } from '../ratelimit/limiter.js';
import { sleep } from '../sleep.js';
import { startAttempt, type AttemptOutcome, type ContextExtension, type RunningAttempt } from './attempt.js';
import { jobDefaultsOf } from './claimed-job.js';
import { Claimer } from './claimer.js';
import type { WorkerEvents, WorkerStats, WorkerStopReason } from './events.js';
import { Heartbeat } from './heartbeat.js';
import { HeldSet, type HeldJob } from './held-set.js';
import { JobRows, type ReturnedReservations } from './job-rows.js';
import { LeaseKeeper } from './lease-keeper.js';
import { newWorkerId, resolveOptions, type ResolvedOptions, type WorkerOptions } from './options.js';
import { OutcomeRecorder } from './outcomes.js';

export { newWorkerId, type WorkerOptions } from './options.js';
export type { WorkerEvents, WorkerStats, WorkerStopReason } from './events.js';

/**
 * One worker: claims due jobs into its held set, runs them in its slots with timeouts, and records
 * each outcome. Many workers (in many processes, on many hosts) share the queue through the
 * database alone. The parts: a Claimer (claims into the held set), an OutcomeRecorder (writes how
 * each job ended), a LeaseKeeper (renews, fences, sweeps), a Heartbeat (presence, pause/restart).
 *
 * @example
 * const worker = mq.worker({ queues: ['mailbox-sync'], concurrency: 10, tries: 3 });
 * process.on('SIGTERM', () => worker.stop());
 * await worker.run();
 */
export class Worker extends EventEmitter<WorkerEvents> {
  readonly id: string;
  private readonly held = new HeldSet(() => this.slotFreed());
  readonly stats: WorkerStats = statsOf(this.held);
  private readonly options: ResolvedOptions;
  private readonly gate: ClaimGate;
  private readonly claimer: Claimer;
  private readonly recorder: OutcomeRecorder;
  private readonly leases: LeaseKeeper;
  private readonly heartbeat: Heartbeat | undefined;
  /** Attempts started whose outcome is not handled yet (from start to its row's last statement): the drain waits for them. */
  private unfinished = 0;
  private wakeWhenAllFinished: (() => void) | undefined;
  private readonly stopController = new AbortController();
  private stopReason: WorkerStopReason | undefined;
  private startedAt = 0;
  private claimedCount = 0;
  private runPromise: Promise<WorkerStopReason> | undefined;
  private wakeIdle: (() => void) | undefined;
  private wakeLoop: (() => void) | undefined;
  /** Ends the loop's current wait (for room, or idle) when the worker is asked to stop. */
  private endWaitOnStop: (() => void) | undefined;
  /** Checked before the first claim (once the database answers): a server without SKIP LOCKED stops the worker with a clear error. */
  private readonly checkServer: () => Promise<void>;
  private serverChecked = false;

  constructor(
    knex: Knex,
    tables: TableNames,
    private readonly registry: JobRegistry,
    private readonly logger: Logger,
    options: WorkerOptions = {},
  ) {
    super();
    this.options = resolveOptions(options);
    this.id = options.workerId ?? newWorkerId(this.options.hostname);
    this.logger = logger.child({ worker: this.id });
    const rows = new JobRows(knex, tables);
    const workerId = this.id;
    const o = this.options;
    this.gate = new ClaimGate(new RateLimiter(knex, tables), registry, o.queues, this.logger);
    this.recorder = new OutcomeRecorder(rows, this.held, this, this.stats, this.logger, {
      workerId,
      backoff: o.backoff,
      reconnectForMs: o.reconnectForMs,
      completionWindowMs: o.completionWindowMs,
    });
    this.leases = new LeaseKeeper(rows, this.held, this.logger, { workerId, leaseGraceMs: o.leaseGraceMs, leaseMaxMs: o.leaseMaxMs, sweepIntervalMs: o.sweepIntervalMs }, (entry, error) =>
      this.letGo(entry, error),
    );
    const byName = jobDefaultsOf(registry.names().map((name) => registry.get(name)!));
    this.claimer = new Claimer(rows, this.gate, this.held, this.leases, this.recorder, this, this.stats, {
      workerId,
      defaults: { maxAttempts: o.maxAttempts, timeoutMs: o.timeoutMs, byName, leaseGraceMs: o.leaseGraceMs, leaseMaxMs: o.leaseMaxMs },
    });
    this.heartbeat = o.heartbeatMs > 0 ? this.createHeartbeat(knex, tables, options.supervisorId) : undefined;
    this.checkServer = () => assertSupportedServer(knex);
  }

  private createHeartbeat(knex: Knex, tables: TableNames, supervisorId: string | undefined): Heartbeat {
    const heartbeat = new Heartbeat(knex, tables, this.logger, {
      workerId: this.id,
      supervisorId,
      host: this.options.hostname,
      queues: this.options.queues,
      concurrency: this.options.concurrency,
      intervalMs: this.options.heartbeatMs,
      status: () => ({
        state: this.stopReason ? 'stopping' : 'running',
        detail: this.stopReason ?? null,
        jobsDone: this.stats.completed,
        jobsFailed: this.stats.failed,
        running: this.held.count('running'),
      }),
      onRestartSignal: () => void this.stop('restart'),
    });
    heartbeat.track(this);
    return heartbeat;
  }

  get queues(): readonly string[] {
    return this.options.queues;
  }

  get isStopping(): boolean {
    return this.stopReason !== undefined;
  }

  /** Runs until stopped (or a limit is reached); resolves with the reason. */
  run(): Promise<WorkerStopReason> {
    this.runPromise ??= this.loop();
    return this.runPromise;
  }

  /**
   * Graceful stop: claim nothing more, put back jobs not started (attempt not counted), let running
   * jobs finish within `stopWait`, then put the rest back. Resolves when the worker has stopped.
   */
  async stop(reason: WorkerStopReason = 'stopped'): Promise<WorkerStopReason> {
    this.requestStop(reason);
    return this.runPromise ?? reason;
  }

  /** Ends an idle wait now: a job was dispatched to one of this worker's queues in this process. */
  wake(): void {
    this.wakeIdle?.();
  }

  private requestStop(reason: WorkerStopReason): void {
    if (this.stopReason) return;
    this.stopReason = reason;
    this.logger.info({ reason, running: this.held.count('running') }, 'worker stopping');
    this.emit('stopping', reason);
    this.stopController.abort();
    this.endWaitOnStop?.();
  }

  /** The story: claim into the held set, start what fits, wait; on any exit, drain the held set. */
  private async loop(): Promise<WorkerStopReason> {
    this.startedAt = Date.now();
    this.logger.info({ queues: this.options.queues, concurrency: this.options.concurrency, prefetch: this.options.prefetch }, 'worker started');
    this.leases.start();
    let failure: unknown;
    try {
      await this.heartbeat?.start();
      this.emit('ready');
      while (!this.stopReason) await this.step();
    } catch (error) {
      failure = error;
      this.logger.error({ err: error }, 'worker loop failed; draining before it stops');
    } finally {
      await this.drain();
      await this.leases.stop();
      await this.heartbeat?.stop();
    }
    this.logger.info({ reason: this.stopReason, ...this.stats }, 'worker stopped');
    if (failure !== undefined) throw failure;
    return this.stopReason ?? 'stopped';
  }

  private async step(): Promise<void> {
    this.checkLimits();
    if (this.stopReason) return;
    await this.putBackPaused();
    this.startWaiting();
    const wanted = this.wanted();
    if (wanted === 0) return this.waitForRoom();
    const claimed = await this.claim(wanted);
    if (this.stopReason) return;
    this.startWaiting();
    if (this.options.once && this.claimedCount > 0) this.requestStop('once');
    else if (claimed === 0 && this.held.count('waiting') === 0) await this.idle();
  }

  /**
   * A slot freed (or a job left the held set): the next waiting job starts now, without the loop;
   * the loop wakes only when there is room to claim into or nothing is left to wait for.
   */
  private slotFreed(): void {
    if (!this.stopReason) this.startWaiting();
    if (this.stopReason || this.held.size === 0 || this.wanted() > 0) this.wakeLoop?.();
  }

  /**
   * Full: until a slot frees, looking again each poll interval (a pause, max-time, memory). The loop
   * resumes after the rest of this turn of the event loop, so jobs that finish together share one
   * claim: resolving at the first freed slot claimed 1 job, then the other 9, and the waves stayed
   * split (590 claims per 1,000 50 ms jobs at concurrency 10, against 137).
   */
  private async waitForRoom(): Promise<void> {
    await this.waitUntilWoken(this.options.sleepMs, (wake) => {
      this.wakeLoop = () => {
        this.wakeLoop = undefined;
        setImmediate(wake);
      };
    });
    this.wakeLoop = undefined;
  }

  /**
   * Waits up to `ms`, until the wake handed to `armWake` is called, or until the worker is asked to
   * stop: one timer and one promise per wait, nothing left behind. (A race with a promise that
   * settles only at stop left a reaction on it at every wait; an AbortController per wait made a
   * DOMException each time it was aborted.)
   */
  private waitUntilWoken(ms: number, armWake: (wake: () => void) => void): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopReason) return resolve();
      const wake = () => {
        clearTimeout(timer);
        if (this.endWaitOnStop === wake) this.endWaitOnStop = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.endWaitOnStop = wake;
      armWake(wake);
    });
  }

  /** How many to claim now: up to concurrency + prefetch held before starting, within max-jobs. */
  private wanted(): number {
    const { maxJobs, once, concurrency, prefetch } = this.options;
    const capacity = once ? 1 : concurrency + prefetch;
    const remaining = maxJobs === undefined ? Infinity : maxJobs - this.claimedCount;
    const room = Math.min(capacity - this.held.count('claiming', 'waiting', 'running'), remaining);
    // With jobs still waiting, claim again only once half the buffer has started: claims stay large
    // (the server's cost per job falls steeply with the claim's size) and one is always in hand.
    if (this.held.count('waiting') > 0 && room < Math.ceil(prefetch / 2)) return 0;
    return Math.max(0, room);
  }

  /** Slots free once the jobs already waiting have started. */
  private startable(): number {
    const slots = this.options.once ? 1 : this.options.concurrency;
    return Math.max(0, slots - this.held.count('claiming', 'waiting', 'running'));
  }

  private checkLimits(): void {
    const { maxJobs, maxTimeMs, memoryLimit } = this.options;
    if (maxJobs !== undefined && this.claimedCount >= maxJobs && this.held.count('waiting') === 0) this.requestStop('max-jobs');
    else if (maxTimeMs !== undefined && Date.now() - this.startedAt >= maxTimeMs) this.requestStop('max-time');
    else if (memoryLimit !== undefined && process.memoryUsage.rss() > memoryLimit) this.requestStop('memory');
  }

  /** A claim, with the database's absence waited out rather than thrown. */
  private async claim(wanted: number): Promise<number> {
    const claimed = await this.databaseCall(async () => {
      if (!this.serverChecked) {
        await this.checkServer();
        this.serverChecked = true;
      }
      return this.claimer.claim(this.claimableQueues(), wanted, this.startable());
    });
    this.claimedCount += claimed ?? 0;
    return claimed ?? 0;
  }

  /** Waiting jobs of a queue paused since they were claimed go back, attempt not counted. */
  private async putBackPaused(): Promise<void> {
    if (!this.heartbeat || this.held.count('waiting') === 0) return;
    const claimable = new Set(this.claimableQueues());
    const paused = this.held.entries('waiting').filter((entry) => !claimable.has(entry.job.queue));
    if (paused.length > 0) await this.recorder.putBack(paused, 'put back: its queue was paused');
  }

  /** Starts waiting jobs while slots are free; one whose lease would end before it starts goes back instead. */
  private startWaiting(): void {
    const slots = this.options.once ? 1 : this.options.concurrency;
    while (this.held.count('running') < slots) {
      const entry = this.held.nextWaiting();
      if (!entry) break;
      if (this.leases.runway(entry) <= 0) {
        void this.recorder.putBack([entry], 'put back: its lease would have ended before it started');
        continue;
      }
      this.start(entry);
    }
  }

  private async idle(): Promise<void> {
    const claimable = this.claimableQueues();
    if (this.options.stopWhenEmpty && this.held.size === 0) {
      const due = await this.databaseCall(() => this.claimer.anyDue(claimable));
      if (due === false) return this.requestStop('empty');
    }
    // Every queue waits for a rate-limit token: sleep until the first one is due, not poll.
    const untilToken = claimable.length > 0 && this.gate.openQueues(claimable).length === 0 ? this.gate.msUntilOpen(claimable) : undefined;
    await this.waitUntilWoken(Math.max(this.options.sleepMs, untilToken ?? 0), (wake) => (this.wakeIdle = wake));
    this.wakeIdle = undefined;
  }

  /** The worker's queues minus those paused at the last heartbeat: the claim never joins the controls. */
  private claimableQueues(): readonly string[] {
    return this.heartbeat ? this.heartbeat.claimable(this.options.queues) : this.options.queues;
  }

  /** A database call from the loop: connection failures are logged and waited out, not thrown. */
  private async databaseCall<T>(call: () => Promise<T>): Promise<T | undefined> {
    try {
      return await call();
    } catch (error) {
      if (!isConnectionError(error)) throw error;
      this.logger.warn({ err: error }, 'database unreachable; retrying');
      // An EventEmitter throws an 'error' nobody listens to: that would turn a blip into a crash.
      if (this.listenerCount('error') > 0) this.emit('error', error as Error);
      await sleep(1000, this.stopController.signal);
      return undefined;
    }
  }

  private start(entry: HeldJob): void {
    this.held.move(entry, 'running');
    this.unfinished++;
    entry.attempt = startAttempt(entry.job, this.registry, this.logger, this.extendContext, this.attemptEnded);
    this.emit('job:started', entry.job);
  }

  /** `ctx.rateLimit` for job types with a rate limit. */
  private readonly extendContext: ContextExtension = (definition, attempt) =>
    definition.rateLimit ? { rateLimit: this.gate.contextFor(definition, attempt.signal, attempt.job.id) } : undefined;

  /**
   * An attempt ended. A completion is recorded at once (it joins the grouped DELETE), so the slot
   * starts its next job without a promise hop; other outcomes go through `finish`. Then the job's
   * rate-limit tokens are stamped with its end.
   */
  private readonly attemptEnded = (attempt: RunningAttempt, outcome: AttemptOutcome): void => {
    const { job } = attempt;
    const entry = this.held.get(job.id);
    // Unless the worker let go of the job meanwhile (lease lost): then nothing is written for it.
    const held = entry?.attempt === attempt ? entry : undefined;
    const elapsedMs = performance.now() - attempt.startedAt;
    if (outcome.kind === 'completed' || !held) {
      if (held) this.recorder.completed(held, elapsedMs);
      return this.outcomeHandled(this.gate.release(job.id));
    }
    const handled = this.finish(held, outcome)
      .catch((error: unknown) => this.logger.error({ err: error, jobId: job.id }, 'could not record job outcome; its lease will return it'))
      .then(() => this.gate.release(job.id));
    this.outcomeHandled(handled);
  };

  /** One attempt's outcome is handled once `pending` (its last step, if any) settles. */
  private outcomeHandled(pending: Promise<void> | undefined): void {
    if (pending) void pending.finally(() => this.outcomeHandled(undefined));
    else if (--this.unfinished === 0) this.wakeWhenAllFinished?.();
  }

  /** Resolves when every attempt started so far has ended and its outcome is handled. */
  private allFinished(): Promise<void> {
    if (this.unfinished === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const earlier = this.wakeWhenAllFinished;
      this.wakeWhenAllFinished = () => {
        this.wakeWhenAllFinished = undefined;
        earlier?.();
        resolve();
      };
    });
  }

  /** Hands an outcome other than a completion to the recorder. */
  private async finish(entry: HeldJob, outcome: Exclude<AttemptOutcome, { kind: 'completed' }>): Promise<void> {
    switch (outcome.kind) {
      case 'deferred':
        return this.recorder.deferred(entry, outcome.delayMs, outcome.reason);
      case 'lease-lost':
        return;
      case 'interrupted':
        if (!(await this.handlerReturned(entry))) return this.abandon(entry, 'its handler ignored the stop signal');
        this.stats.deferred++;
        return this.recorder.putBack([entry], 'put back: worker stopped before the job finished');
      case 'failed':
        if (outcome.error instanceof JobTimeoutError && !(await this.handlerReturned(entry))) {
          this.logger.error({ jobId: entry.job.id, job: entry.job.name }, 'handler ignored its timeout; recycling this worker');
          this.requestStop('stuck-job');
          await this.recorder.note(entry, `${outcome.error.name}: ${outcome.error.message}`);
          return this.abandon(entry, 'its handler ignored its timeout');
        }
        return this.recorder.failed(entry, outcome.error, outcome.permanent);
    }
  }

  /**
   * An attempt ended by its timeout or by a stop: its slot is free at once, but the handler may run
   * on, so nothing is written (the row stays reserved, its lease renewed) until the handler returns,
   * or `timeoutGrace` passes. Written earlier, the job could start elsewhere while this run lives.
   */
  private async handlerReturned(entry: HeldJob): Promise<boolean> {
    this.held.move(entry, 'overdue');
    const timer = new AbortController();
    const returned = await Promise.race([entry.attempt!.handlerSettled.then(() => true), sleep(this.options.timeoutGraceMs, timer.signal).then(() => false)]);
    timer.abort();
    return returned && this.held.get(entry.job.id) === entry;
  }

  /**
   * A handler that will not return: its job stays reserved (nothing written) and leaves the held set
   * only when the worker has stopped, so its lease (or the supervisor, once this process exits)
   * returns it then, never while this worker lives and could still be running it.
   */
  private abandon(entry: HeldJob, why: string): void {
    this.logger.warn({ jobId: entry.job.id, job: entry.job.name }, `${why}: the job stays reserved until this worker stops`);
  }

  /** The reservation is no longer vouched for: abort the run, write nothing more for it. */
  private letGo(entry: HeldJob, error: LeaseLostError): void {
    if (this.held.get(entry.job.id) !== entry) return;
    this.held.release(entry);
    entry.attempt?.abandon(error);
    this.logger.error({ jobId: entry.job.id, job: entry.job.name, stage: entry.stage, reason: error.message }, 'let go of a job whose lease was lost');
    this.emit('job:lease-lost', entry.job, error);
  }

  /** Returns reservations whose worker died to the queue; any live worker may do it. */
  sweep(): Promise<ReturnedReservations> {
    return this.leases.sweep();
  }

  /**
   * After the loop, whatever ended it: jobs not started go back, running jobs get `stopWait` to
   * finish and are then interrupted and put back, every outcome is written; leases are renewed
   * throughout. What is left (handlers that ignore their signal) stays reserved for its lease.
   */
  private async drain(): Promise<void> {
    this.requestStop(this.stopReason ?? 'stopped');
    await this.recorder.putBack(this.held.entries('claiming', 'waiting'), 'put back: worker stopping');
    if (this.held.count('running') > 0) {
      const timer = new AbortController();
      const inTime = await Promise.race([this.allFinished().then(() => true), sleep(this.options.stopWaitMs, timer.signal).then(() => false)]);
      timer.abort();
      if (!inTime) {
        this.logger.warn({ running: this.held.count('running') }, 'stop wait over; putting unfinished jobs back');
        for (const entry of this.held.entries('running')) entry.attempt?.interrupt();
      }
    }
    await this.allFinished();
    await this.recorder.settled();
    for (const entry of this.held.entries()) this.held.release(entry);
  }
}

/** Counters the recorder and claimer add to; `running` and `buffered` are read from the held set. */
function statsOf(held: HeldSet): WorkerStats {
  return {
    completed: 0,
    failed: 0,
    retried: 0,
    deferred: 0,
    get running() {
      return held.count('running');
    },
    get buffered() {
      return held.count('waiting');
    },
  };
}
