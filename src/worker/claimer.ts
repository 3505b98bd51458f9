import { performance } from 'node:perf_hooks';
import type { EventEmitter } from 'node:events';
import type { ClaimGate } from '../ratelimit/claim-gate.js';
import type { ClaimDefaults, ClaimedJob } from './claimed-job.js';
import type { WorkerEvents, WorkerStats } from './events.js';
import type { HeldJob, HeldSet } from './held-set.js';
import { ClaimReplyLostError, type JobRows } from './job-rows.js';
import type { LeaseKeeper } from './lease-keeper.js';
import type { OutcomeRecorder } from './outcomes.js';

export interface ClaimerOptions {
  workerId: string;
  defaults: ClaimDefaults & { leaseGraceMs: number; leaseMaxMs: number };
}

/**
 * Claims jobs into the held set. Each queue's claim commits on its own, and its jobs join the held
 * set the moment it commits (stage `claiming`), so nothing later in the same claim (another queue,
 * the rate-limit gate, a lost connection) can make the worker forget a reservation it has. When the
 * claim returns, its jobs wait for a slot; when it fails, they go back to the queue unspent.
 */
export class Claimer {
  /** After an empty claim, the next one first asks cheaply (no locks) whether anything is due. */
  private lastClaimWasEmpty = false;

  constructor(
    private readonly rows: JobRows,
    private readonly gate: ClaimGate,
    private readonly held: HeldSet,
    private readonly leases: LeaseKeeper,
    private readonly recorder: OutcomeRecorder,
    private readonly events: EventEmitter<WorkerEvents>,
    private readonly stats: WorkerStats,
    private readonly options: ClaimerOptions,
  ) {}

  /**
   * Claims up to `wanted` jobs from the claimable queues (paused ones already left out), in queue
   * order; from a rate-limited queue, no more than `startable` (the slots free now). Returns how many now wait for a slot. One empty claim never means "drained": SKIP LOCKED
   * may have skipped rows another worker was locking.
   */
  async claim(claimable: readonly string[], wanted: number, startable = wanted): Promise<number> {
    const queues = this.gate.openQueues(claimable);
    if (queues.length === 0) {
      if (claimable.length === 0) this.lastClaimWasEmpty = true;
      return 0;
    }
    if (this.lastClaimWasEmpty && !(await this.rows.anyDue(queues))) return 0;

    const joined: HeldJob[] = [];
    let result: Awaited<ReturnType<ClaimGate['claim']>>;
    try {
      result = await this.gate.claim(queues, wanted, (open, caps) => this.claimRows(open, wanted, caps, joined), startable);
    } catch (error) {
      // Whatever committed before the failure goes back unspent, and the error goes on.
      void this.recorder.putBack(joined.filter((entry) => entry.stage === 'claiming'), 'put back: the claim failed half-way');
      throw error;
    }
    for (const wait of result.waiting) await this.waitForToken(wait.jobs, wait.delayMs, wait.key);
    for (const job of result.run) {
      const entry = this.held.get(job.id);
      if (entry?.stage === 'claiming') this.held.move(entry, 'waiting');
    }
    this.lastClaimWasEmpty = result.run.length === 0 && result.waiting.length === 0;
    return result.run.length;
  }

  /** A non-locking look: is anything due on these queues? */
  anyDue(queues: readonly string[]): Promise<boolean> {
    return queues.length === 0 ? Promise.resolve(false) : this.rows.anyDue(queues);
  }

  /** One claim across queues; each queue's committed jobs join the held set at once. */
  private async claimRows(queues: string[], wanted: number, caps: ReadonlyMap<string, number> | undefined, joined: HeldJob[]): Promise<ClaimedJob[]> {
    const sentAt = performance.now();
    const join = (jobs: ClaimedJob[]) => {
      this.held.add(jobs, (job) => this.leases.leaseEndsBy(job, sentAt));
      for (const job of jobs) joined.push(this.held.get(job.id)!);
    };
    try {
      return await this.rows.claim(queues, wanted, this.options.workerId, this.options.defaults, caps, join);
    } catch (error) {
      if (!(error instanceof ClaimReplyLostError)) throw error;
      // The reservation may have committed without its reply: put back whatever this worker has
      // reserved but does not hold. Awaited, so no new claim can be reserved (and wrongly put back) first.
      await this.recorder.undoUnknownReservations();
      return joined.map((entry) => entry.job);
    }
  }

  /** A rate-limited job claimed without a token goes back as a deferral: its attempt is not spent. */
  private async waitForToken(jobs: ClaimedJob[], delayMs: number, key: string): Promise<void> {
    const reason = `rate limit '${key}': waiting for a token`;
    const entries = jobs.map((job) => this.held.get(job.id)).filter((entry): entry is HeldJob => entry !== undefined);
    await this.recorder.putBack(entries, reason, delayMs);
    for (const entry of entries) {
      this.stats.deferred++;
      this.events.emit('job:deferred', entry.job, delayMs, reason);
    }
  }
}
