import type { EventEmitter } from 'node:events';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { ControlState, QueueControls } from '../controls/queue-controls.js';
import type { TableNames } from '../db/tables.js';
import { StatsRows } from '../stats/stats-rows.js';
import { QueueTally } from '../stats/tally.js';
import type { WorkerEvents } from './events.js';
import { WorkerRows, type PresenceStatus } from './worker-rows.js';

export interface HeartbeatOptions {
  workerId: string;
  supervisorId?: string;
  /** The host shown in the workers table. */
  host: string;
  queues: readonly string[];
  concurrency: number;
  intervalMs: number;
  /** Rows of workers silent this long are deleted by whichever worker prunes next. Default 15 min. */
  pruneAfterMs?: number;
  /** Per-minute stats older than this are deleted. Default 1 day. */
  keepStatsMs?: number;
  /** The worker's live numbers for its row. */
  status(): PresenceStatus;
  /** `mailq restart` reached this worker: finish current jobs and exit. Called once. */
  onRestartSignal(): void;
}

const PRUNE_EVERY_MS = 60_000;

/**
 * A worker's link to everyone else: it registers in the workers table, beats every interval
 * (row, per-minute stats, then one read of the queue controls), and deletes its row when it
 * stops. The controls it read last decide which queues the worker may claim from.
 */
export class Heartbeat {
  readonly tally = new QueueTally();
  private readonly workers: WorkerRows;
  private readonly stats: StatsRows;
  private readonly controls: QueueControls;
  private state = new ControlState();
  /** When this worker registered, on the database clock: restart signals newer than this apply. */
  private startedAt: Date | undefined;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private beats = 0;
  private readonly pruneEvery: number;
  private readonly pruneOffset: number;
  private failing = false;
  private restartSignalled = false;

  constructor(
    knex: Knex,
    tables: TableNames,
    private readonly logger: Logger,
    private readonly options: HeartbeatOptions,
  ) {
    this.workers = new WorkerRows(knex, tables);
    this.stats = new StatsRows(knex, tables);
    this.controls = new QueueControls(knex, tables);
    this.pruneEvery = Math.max(1, Math.round(PRUNE_EVERY_MS / options.intervalMs));
    // Spread pruning over the workers instead of having all of them prune at once.
    this.pruneOffset = Math.floor(Math.random() * this.pruneEvery);
  }

  /** Counts the worker's finished jobs into the tally the next beat writes. */
  track(worker: EventEmitter<WorkerEvents>): void {
    worker.on('job:completed', (job, elapsedMs) => this.tally.count(job.queue, 'completed', elapsedMs));
    worker.on('job:failed', (job) => this.tally.count(job.queue, 'failed'));
    worker.on('job:retrying', (job) => this.tally.count(job.queue, 'retried'));
    worker.on('job:deferred', (job) => this.tally.count(job.queue, 'deferred'));
    // A worker stopped before it ever ran has nothing to report (and its pool may be closing).
    worker.on('stopping', () => void (this.timer && this.beat()));
  }

  /** Registers and reads the controls once, so the very first claim already skips paused queues. */
  async start(): Promise<void> {
    await this.guard('register', async () => {
      await this.register();
      await this.readControls();
    });
    this.timer = setInterval(() => void this.beat(), this.options.intervalMs);
  }

  /** The given queues minus the paused ones, from the last control read. */
  claimable(queues: readonly string[]): string[] {
    return this.state.claimable(queues);
  }

  /** One beat; concurrent calls share the beat in flight. */
  beat(): Promise<void> {
    this.inFlight ??= this.beatOnce().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** Writes the last counts and deletes the row: a stopped worker leaves nothing behind. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.inFlight;
    await this.guard('final stats', () => this.flushTally());
    await this.guard('unregister', async () => void (await this.workers.remove([this.options.workerId])));
  }

  private async beatOnce(): Promise<void> {
    await this.guard('heartbeat', async () => {
      const present = await this.workers.beat(this.options.workerId, this.status());
      if (!present) await this.register();
      await this.flushTally();
      await this.readControls();
      if (this.beats++ % this.pruneEvery === this.pruneOffset) await this.prune();
    });
  }

  private async register(): Promise<void> {
    const { workerId, supervisorId, host, queues, concurrency, intervalMs } = this.options;
    const startedAt = await this.workers.register(
      { id: workerId, kind: 'worker', supervisorId, host, pid: process.pid, queues, concurrency, heartbeatMs: intervalMs },
      this.status(),
    );
    // A row re-created after an outage keeps the first start time: a restart asked for meanwhile still applies.
    this.startedAt ??= startedAt;
  }

  private async flushTally(): Promise<void> {
    if (this.tally.isEmpty) return;
    const counts = this.tally.take();
    try {
      await this.stats.add(counts);
    } catch (error) {
      this.tally.restore(counts);
      throw error;
    }
  }

  private async readControls(): Promise<void> {
    this.state = await this.controls.read();
    if (this.restartSignalled || !this.startedAt) return;
    if (this.state.restartRequestedSince(this.options.queues, this.startedAt)) {
      this.restartSignalled = true;
      this.logger.info('restart requested (mailq restart): finishing current jobs, then exiting');
      this.options.onRestartSignal();
    }
  }

  private async prune(): Promise<void> {
    const workers = await this.workers.prune(this.options.pruneAfterMs ?? 15 * 60_000);
    const minutes = await this.stats.prune(this.options.keepStatsMs ?? 24 * 3_600_000);
    if (workers || minutes) this.logger.debug({ workers, minutes }, 'pruned dead workers and old stats');
  }

  private status(): PresenceStatus {
    return { memoryBytes: process.memoryUsage.rss(), ...this.options.status() };
  }

  /** Heartbeat trouble is logged once per streak and never stops the worker: jobs matter more. */
  private async guard(what: string, work: () => Promise<void>): Promise<void> {
    try {
      await work();
      if (this.failing) this.logger.info(`${what} works again`);
      this.failing = false;
    } catch (error) {
      if (!this.failing) this.logger.warn({ err: error }, `${what} failed; the worker goes on and tries again at the next beat`);
      this.failing = true;
    }
  }
}
