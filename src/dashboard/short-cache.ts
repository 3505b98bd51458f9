/**
 * Remembers answers for a few seconds, by key. Grouping every failed job by reason reads the whole
 * (filtered) failed_jobs table, ~10 ms per 1,000 rows here: a page left open must not run it at
 * every refresh. Actions that change the answer clear it.
 */
export class ShortCache<T> {
  readonly #entries = new Map<string, { at: number; value: Promise<T> }>();

  constructor(private readonly ttlMs: number) {}

  get(key: string, compute: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const entry = this.#entries.get(key);
    if (entry && now - entry.at < this.ttlMs) return entry.value;
    const value = compute();
    this.#entries.set(key, { at: now, value });
    // A failed read is not remembered.
    value.catch(() => this.#entries.delete(key));
    return value;
  }

  clear(): void {
    this.#entries.clear();
  }
}
