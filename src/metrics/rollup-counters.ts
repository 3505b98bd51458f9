import type { MinuteCounts } from '../stats/stats-rows.js';
import type { CountKind } from '../stats/tally.js';

/** Per queue: what the rollup's rows added up to since the first read. */
export type RollupTotals = Map<string, Record<CountKind | 'runtimeMs', number>>;

/** Minutes read back at each scrape: a worker adds to the current minute only, so a few suffice. */
export const ROLLUP_LOOKBACK_MINUTES = 5;

const KINDS = ['completed', 'failed', 'retried', 'deferred', 'runtimeMs'] as const;

/**
 * Turns the per-minute rollup (rows that grow in place, then get pruned) into increments of
 * monotonic counters, as Prometheus wants them. The first read is the baseline: work finished
 * before this process started is not counted, so a restart of the dashboard looks to Prometheus
 * like any counter reset. Every later read adds what each (queue, minute) row gained since the
 * read before, and all of a row that is new. It keeps totals, not increments, so a counter set
 * from them twice is still right.
 */
export class RollupCounters {
  #seen = new Map<string, MinuteCounts>();
  #baselined = false;
  readonly #totals: RollupTotals = new Map();

  /** Feed it the rollup's last ROLLUP_LOOKBACK_MINUTES minutes; returns the totals so far. */
  advance(rows: readonly MinuteCounts[]): RollupTotals {
    const next = new Map<string, MinuteCounts>();
    for (const row of rows) {
      const key = `${row.queue}\u0000${row.minute.getTime()}`;
      next.set(key, row);
      if (!this.#baselined) continue;
      const before = this.#seen.get(key);
      let added = this.#totals.get(row.queue);
      if (!added) this.#totals.set(row.queue, (added = { completed: 0, failed: 0, retried: 0, deferred: 0, runtimeMs: 0 }));
      // Never negative: a row only grows while it is read back.
      for (const kind of KINDS) added[kind] += Math.max(0, row[kind] - (before?.[kind] ?? 0));
    }
    this.#seen = next;
    this.#baselined = true;
    return this.#totals;
  }
}
