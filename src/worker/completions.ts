/**
 * Groups finished job ids into one statement per flush: completions gather for a moment, and while
 * one DELETE is in flight the next ones gather too, so under load many jobs share a round trip.
 */
/**
 * How long the first completion waits for others before its DELETE goes out. Measured: one process
 * at concurrency 10 sent ~1,900 statements for 20,000 no-op jobs without it and ~300 with 25 ms;
 * drain rose 10–15% (2 processes: 4.4–5.0k → 5.0–5.6k jobs/s). The cost: a finished job stays in
 * the table ≤ 20 ms longer (and would run again if its worker died in that window).
 */
const GATHER_MS = 20;

export class CompletionBuffer<T = number> {
  #pending: T[] = [];
  #inFlight: Promise<void> | undefined;

  /** `write` retries on its own; if it still fails, `onError` hears of it and the jobs' leases bring them back. */
  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly onError: (error: unknown, items: T[]) => void,
    private readonly maxBatch = 500,
    private readonly gatherMs = GATHER_MS,
  ) {}

  add(item: T): void {
    this.#pending.push(item);
    this.#inFlight ??= new Promise<void>((resolve) => setTimeout(resolve, this.gatherMs))
      .then(() => this.#drain())
      .finally(() => {
        this.#inFlight = undefined;
      });
  }

  /** Resolves when every id added so far is written. */
  async flush(): Promise<void> {
    while (this.#inFlight) await this.#inFlight;
  }

  get size(): number {
    return this.#pending.length;
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.maxBatch);
      await this.write(batch).catch((error: unknown) => this.onError(error, batch));
    }
  }
}
