/** Finished-job counts for one queue over some stretch of time. */
export interface QueueCounts {
  completed: number;
  failed: number;
  retried: number;
  deferred: number;
  /** Sum of the run times of completed jobs. */
  runtimeMs: number;
}

export type CountKind = Exclude<keyof QueueCounts, 'runtimeMs'>;

export function emptyCounts(): QueueCounts {
  return { completed: 0, failed: 0, retried: 0, deferred: 0, runtimeMs: 0 };
}

/**
 * Counts a worker gathers in memory between heartbeats. Each heartbeat takes them and adds them
 * to the per-minute stats rows in one statement, so no row is touched once per job.
 */
export class QueueTally {
  #counts = new Map<string, QueueCounts>();

  count(queue: string, kind: CountKind, runtimeMs = 0): void {
    let counts = this.#counts.get(queue);
    if (!counts) this.#counts.set(queue, (counts = emptyCounts()));
    counts[kind]++;
    counts.runtimeMs += runtimeMs;
  }

  /** Everything counted so far; the tally starts again from zero. */
  take(): Map<string, QueueCounts> {
    const taken = this.#counts;
    this.#counts = new Map();
    return taken;
  }

  /** Puts counts back after a write failed, so the next heartbeat carries them. */
  restore(counts: Map<string, QueueCounts>): void {
    for (const [queue, restored] of counts) {
      const current = this.#counts.get(queue) ?? emptyCounts();
      this.#counts.set(queue, {
        completed: current.completed + restored.completed,
        failed: current.failed + restored.failed,
        retried: current.retried + restored.retried,
        deferred: current.deferred + restored.deferred,
        runtimeMs: current.runtimeMs + restored.runtimeMs,
      });
    }
  }

  get isEmpty(): boolean {
    return this.#counts.size === 0;
  }
}
