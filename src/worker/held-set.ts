import type { ClaimedJob, Reservation } from './claimed-job.js';
import type { RunningAttempt } from './attempt.js';

/**
 * Where a held job is in its life inside this worker:
 * - `claiming`: reserved by a claim that has not returned yet (not startable: the rate-limit gate
 *   may still send it back);
 * - `waiting`: claimed ahead, waiting in this worker for a free slot;
 * - `running`: its handler runs and holds a slot;
 * - `overdue`: its attempt timed out and its slot is free, but the handler has not returned yet, so
 *   its outcome is not written (the row stays reserved: nobody else may run it meanwhile);
 * - `recording`: finished; its outcome (the grouped DELETE, a retry, a deferral…) is being written.
 */
export type HeldStage = 'claiming' | 'waiting' | 'running' | 'overdue' | 'recording';

export interface HeldJob {
  readonly job: ClaimedJob;
  stage: HeldStage;
  /** Local time (ms, performance.now()) by which the lease surely ends unless renewed: conservative. */
  leaseEndsBy: number;
  attempt?: RunningAttempt;
}

/**
 * Every job this worker holds, whatever its stage (DESIGN.md, "The held set"): what lease renewal
 * covers, what a lost claim reply must not put back, and what a stop puts back or waits for.
 * A job leaves the set only when the statement that finishes its reservation has landed, or when
 * the worker lets go of it because the reservation is no longer its own.
 */
export class HeldSet {
  private readonly held = new Map<number, HeldJob>();
  private readonly counts: Record<HeldStage, number> = { claiming: 0, waiting: 0, running: 0, overdue: 0, recording: 0 };
  /** Waiting jobs in claim order; entries that left the stage are skipped when met. */
  private readonly waitingLine: HeldJob[] = [];
  private changeScheduled = false;

  /** `onChange` hears (once per turn of the microtask queue) that a slot freed or a job left the set. */
  constructor(private readonly onChange: () => void = () => undefined) {}

  add(jobs: readonly ClaimedJob[], leaseEndsBy: (job: ClaimedJob) => number): void {
    for (const job of jobs) {
      this.held.set(job.id, { job, stage: 'claiming', leaseEndsBy: leaseEndsBy(job) });
      this.counts.claiming++;
    }
  }

  get(id: number): HeldJob | undefined {
    return this.held.get(id);
  }

  /** True while this exact reservation is held (a later claim of the same row is another one). */
  holds(job: Reservation): boolean {
    const held = this.held.get(job.id)?.job;
    return held !== undefined && held.attempt === job.attempt && held.deferrals === job.deferrals;
  }

  move(entry: HeldJob, stage: HeldStage): void {
    if (entry.stage === stage || this.held.get(entry.job.id) !== entry) return;
    this.counts[entry.stage]--;
    this.counts[stage]++;
    const freesSlot = entry.stage === 'running';
    entry.stage = stage;
    if (stage === 'waiting') this.waitingLine.push(entry);
    if (freesSlot) this.notify();
  }

  /** The reservation is finished (or no longer ours): the job leaves the set. */
  release(entry: HeldJob): void {
    if (this.held.get(entry.job.id) !== entry) return;
    this.held.delete(entry.job.id);
    this.counts[entry.stage]--;
    this.notify();
  }

  count(...stages: HeldStage[]): number {
    return stages.reduce((sum, stage) => sum + this.counts[stage], 0);
  }

  get size(): number {
    return this.held.size;
  }

  entries(...stages: HeldStage[]): HeldJob[] {
    const all = [...this.held.values()];
    return stages.length === 0 ? all : all.filter((entry) => stages.includes(entry.stage));
  }

  /** The next job waiting for a slot: in claim order (the claim returns jobs in queue order). */
  nextWaiting(): HeldJob | undefined {
    while (this.waitingLine.length > 0) {
      const entry = this.waitingLine[0]!;
      if (entry.stage === 'waiting' && this.held.get(entry.job.id) === entry) return entry;
      this.waitingLine.shift();
    }
    return undefined;
  }

  ids(): number[] {
    return [...this.held.keys()];
  }

  private notify(): void {
    if (this.changeScheduled) return;
    this.changeScheduled = true;
    queueMicrotask(() => {
      this.changeScheduled = false;
      this.onChange();
    });
  }
}
