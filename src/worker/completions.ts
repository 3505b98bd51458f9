/**
 * Groups finished job ids into one statement per flush: while one DELETE is in flight the next
 * completions gather, so under load many jobs share a round trip and at idle none waits.
 */
export class CompletionBuffer<T = number> {
  #pending: T[] = [];
  #inFlight: Promise<void> | undefined;

  /** `write` retries on its own; if it still fails, `onError` hears of it and the jobs' leases bring them back. */
  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly onError: (error: unknown, items: T[]) => void,
    private readonly maxBatch = 500,
  ) {}

  add(item: T): void {
    this.#pending.push(item);
    this.#inFlight ??= this.#drain().finally(() => {
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
