import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { withDatabaseRetry } from '../db/retry.js';
import { LeaseLostError } from '../errors.js';
import type { ClaimedJob } from './claimed-job.js';
import type { HeldJob, HeldSet } from './held-set.js';
import type { JobRows, ReturnedReservations } from './job-rows.js';

export interface LeaseOptions {
  workerId: string;
  /** Lease = the job's timeout + this grace, capped by leaseMaxMs (the claim and renewal SQL use the same rule). */
  leaseGraceMs: number;
  leaseMaxMs: number;
  /** How often expired leases of dead workers are returned to the queue; 0 = never. */
  sweepIntervalMs: number;
}

const MIN_RENEW_MS = 200;
const MAX_RENEW_MS = 10_000;

/**
 * Leases, ours and others'. Renews the lease of every job this worker holds, at any stage, a few
 * times per lease; lets go of (fences) a job whose lease it could not renew before its last renewal
 * interval ran out, or that the database says is no longer ours: the job's signal fires with a
 * LeaseLostError and nothing more is written for it, because another worker may have it by then.
 * The check runs on a timer of its own, so a renewal stuck on a stalled connection cannot delay it.
 * Also sweeps: returns jobs whose lease expired (their worker died) to the queue.
 */
export class LeaseKeeper {
  private renewTimer: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Renewals in flight, by the time they were sent. */
  private readonly renewing = new Map<Promise<void>, number>();
  private lastRenewedAt = performance.now();

  constructor(
    private readonly rows: JobRows,
    private readonly held: HeldSet,
    private readonly logger: Logger,
    private readonly options: LeaseOptions,
    private readonly onLost: (entry: HeldJob, error: LeaseLostError) => void,
  ) {}

  /** How long a claim of `job` reserves it for. */
  leaseMs(job: Pick<ClaimedJob, 'timeoutMs'>): number {
    return Math.min(job.timeoutMs + this.options.leaseGraceMs, this.options.leaseMaxMs);
  }

  /** When a lease written by a statement sent at `sentAt` (local clock) surely ends: the server's clock started it later. */
  leaseEndsBy(job: Pick<ClaimedJob, 'timeoutMs'>, sentAt: number): number {
    return sentAt + this.leaseMs(job);
  }

  /** Time left before a job must be let go if its lease is not renewed: one renewal interval before the end. */
  runway(entry: HeldJob, now = performance.now()): number {
    return entry.leaseEndsBy - now - this.marginMs(entry.job);
  }

  start(): void {
    this.scheduleRenewal();
    if (this.options.sweepIntervalMs <= 0) return;
    void this.sweep();
    const jittered = this.options.sweepIntervalMs * (0.75 + Math.random() / 2);
    this.sweepTimer = setInterval(() => void this.sweep(), jittered);
  }

  async stop(): Promise<void> {
    clearTimeout(this.renewTimer);
    clearTimeout(this.fenceTimer);
    this.fenceTimer = undefined;
    clearInterval(this.sweepTimer);
    this.renewTimer = undefined;
    this.sweepTimer = undefined;
    await Promise.allSettled([...this.renewing.keys()]);
  }

  /** Returns reservations whose worker died to the queue; any live worker may do it. */
  async sweep(): Promise<ReturnedReservations> {
    try {
      const result = await withDatabaseRetry(() => this.rows.sweepExpiredLeases());
      if (result.released || result.failed || result.removed) this.logger.warn(result, 'returned jobs whose lease expired');
      return result;
    } catch (error) {
      this.logger.warn({ err: error }, 'lease sweep failed');
      return { released: 0, failed: 0, removed: 0 };
    }
  }

  private scheduleRenewal(): void {
    this.renewTimer = setTimeout(() => {
      this.fenceExpiring();
      this.startRenewal();
      this.scheduleRenewal();
    }, this.renewIntervalMs());
    this.scheduleFenceCheck();
    this.renewTimer.unref?.();
  }

  /**
   * One renewal at a time, unless the one in flight has taken longer than an interval (a connection
   * that stalled, until the stall check drops it): then another goes out on another connection, so
   * one stuck statement cannot make the worker let go of jobs whose leases the database would renew.
   */
  private startRenewal(): void {
    const now = performance.now();
    for (const sentAt of this.renewing.values()) if (now - sentAt < this.renewIntervalMs()) return;
    const renewal: Promise<void> = this.renew().finally(() => this.renewing.delete(renewal));
    this.renewing.set(renewal, now);
  }

  /** A few renewals per lease of the shortest lease held (or the default one when idle). */
  private renewIntervalMs(): number {
    let shortest = this.options.leaseMaxMs;
    for (const entry of this.held.entries()) shortest = Math.min(shortest, this.leaseMs(entry.job));
    return clamp(Math.floor(shortest / 4), MIN_RENEW_MS, MAX_RENEW_MS);
  }

  private marginMs(job: ClaimedJob): number {
    return clamp(Math.floor(this.leaseMs(job) / 4), MIN_RENEW_MS, MAX_RENEW_MS);
  }

  /**
   * The fence check also runs at the moment the earliest held lease reaches its margin, not only on
   * the renewal tick: checked on the tick alone, a job could cross its margin just after one tick
   * and be let go up to a whole interval later, with almost nothing of its lease left.
   */
  private scheduleFenceCheck(): void {
    clearTimeout(this.fenceTimer);
    let earliest = Infinity;
    for (const entry of this.held.entries()) earliest = Math.min(earliest, entry.leaseEndsBy - this.marginMs(entry.job));
    if (earliest === Infinity) return;
    this.fenceTimer = setTimeout(() => {
      if (!this.renewTimer) return; // stopped
      this.fenceExpiring();
      this.scheduleFenceCheck();
    }, Math.max(0, earliest - performance.now()) + 1);
    this.fenceTimer.unref?.();
  }

  private fenceExpiring(): void {
    const now = performance.now();
    for (const entry of this.held.entries()) {
      if (this.runway(entry, now) > 0) continue;
      const silentFor = ((now - this.lastRenewedAt) / 1000).toFixed(1);
      this.onLost(entry, new LeaseLostError(`the database did not confirm its lease for ${silentFor} s; it would expire before the next renewal`));
    }
  }

  private async renew(): Promise<void> {
    const entries = this.held.entries();
    if (entries.length === 0) {
      this.lastRenewedAt = performance.now();
      return;
    }
    const sentAt = performance.now();
    try {
      const reservations = entries.map((entry) => entry.job);
      const lost = new Set(await withDatabaseRetry(() => this.rows.renewLeases(reservations, this.options.workerId, this.options.leaseGraceMs, this.options.leaseMaxMs)));
      this.lastRenewedAt = Math.max(this.lastRenewedAt, sentAt);
      for (const entry of entries) {
        if (!this.held.holds(entry.job)) continue;
        // A job whose finishing statement is in flight may be gone by its own DELETE: that statement's result tells.
        if (lost.has(entry.job.id) && entry.stage !== 'recording') this.onLost(entry, new LeaseLostError('its reservation is no longer this worker’s (another worker took it over)'));
        // A renewal that was slow to answer must not pull back what a later one confirmed.
        else entry.leaseEndsBy = Math.max(entry.leaseEndsBy, this.leaseEndsBy(entry.job, sentAt));
      }
      if (this.renewTimer) this.scheduleFenceCheck();
    } catch (error) {
      this.logger.warn({ err: error }, 'could not renew leases');
    }
  }
}

function clamp(value: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, value));
}
