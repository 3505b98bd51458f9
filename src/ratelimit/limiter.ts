import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { withSession } from '../db/session.js';
import { withDatabaseRetry } from '../db/retry.js';
import { parseDuration, type Duration } from '../duration.js';
import { windowMs, type ResolvedRateLimit } from './rate-limit.js';
import { sleep } from '../sleep.js';

/** The `used_at` of a slot that was never used: older than any window, so the slot is free. */
export const NEVER_USED = '2000-01-01 00:00:00.000';

/** One rate-limit key as it stands now: what the dashboard and /metrics show. */
export interface RateLimitUsage {
  key: string;
  limit: number;
  perMs: number;
  /** Tokens used within the current window (slots paused by a 429 count as used). */
  used: number;
  /** Milliseconds until the next token frees; 0 if one is free now. */
  nextInMs: number;
  /** A 429 paused this key for everyone until this time (database clock); null if not paused now. */
  pausedUntil: Date | null;
}

export interface Acquired {
  /** Tokens taken: 0..n. */
  granted: number;
  /** Milliseconds until the next slot frees (0 if one is free now), from the database clock. */
  nextInMs: number;
  /** The database time the tokens were stamped with; give it back to refund(). */
  stampedAt: string | null;
}

/**
 * A distributed rate limit in MySQL: a key with a limit of L per P owns L slot rows, each holding
 * the time it was last used. Taking n tokens is one UPDATE that stamps up to n slots whose last use
 * is at least P (plus a margin) ago. Row locks make concurrent takers on any host see each
 * other's stamps, so no window of P ever holds more than L uses: a sliding window, exactly, with
 * a fixed number of rows and no per-use history to clean up.
 *
 * @example
 * const limit = resolveRateLimit({ key: 'tws-api', limit: 100, per: '1m' });
 * const { granted, nextInMs } = await mq.rateLimits.acquire(limit, 5);
 * await mq.rateLimits.pause('tws-api', '30s'); // a 429 with Retry-After: 30
 */
export class RateLimiter {
  readonly #prepared = new Map<string, Promise<void>>();

  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  private get table(): string {
    return `\`${this.tables.rateLimits}\``;
  }

  private get keysTable(): string {
    return `\`${this.tables.rateLimitKeys}\``;
  }

  /** Takes up to `n` tokens now; never waits. */
  async acquire(limit: ResolvedRateLimit, n: number): Promise<Acquired> {
    await this.prepare(limit);
    const windowMicros = windowMs(limit) * 1000;
    // A session variable carries one timestamp through the three statements of this round trip.
    const results = (await withDatabaseRetry(() =>
      withSession(this.knex, (query) =>
        query(
          `SET @mailq_rl_now = NOW(3);
           UPDATE ${this.table} SET used_at = @mailq_rl_now
            WHERE limit_key = ? AND used_at <= @mailq_rl_now - INTERVAL ? MICROSECOND ORDER BY used_at LIMIT ?;
           SELECT DATE_FORMAT(@mailq_rl_now, '%Y-%m-%d %H:%i:%s.%f') AS stamped_at,
                  GREATEST(0, TIMESTAMPDIFF(MICROSECOND, @mailq_rl_now, MIN(used_at) + INTERVAL ? MICROSECOND)) AS next_in_us
             FROM ${this.table} WHERE limit_key = ?`,
          [limit.key, windowMicros, Math.max(0, Math.floor(n)), windowMicros, limit.key],
        ),
      ),
    )) as [unknown, { affectedRows: number }, Array<{ stamped_at: string; next_in_us: number | string | null }>];
    const granted = results[1].affectedRows;
    const row = results[2][0];
    return {
      granted,
      nextInMs: row?.next_in_us == null ? 0 : Math.ceil(Number(row.next_in_us) / 1000),
      stampedAt: granted > 0 ? (row?.stamped_at ?? null) : null,
    };
  }

  /**
   * Waits until `n` tokens are taken (sleeping until the next one frees, as the database says),
   * for callers outside a worker, e.g. the mailbox sync's direct mode. Rejects if `signal` aborts.
   */
  async take(limit: ResolvedRateLimit, n = 1, signal?: AbortSignal): Promise<void> {
    for (let needed = n; needed > 0; ) {
      signal?.throwIfAborted();
      const acquired = await this.acquire(limit, needed);
      needed -= acquired.granted;
      if (needed > 0) await sleep(Math.max(5, acquired.nextInMs), signal);
    }
  }

  /**
   * Gives back `n` tokens taken at `stampedAt` and not used (a claim found fewer jobs than tokens).
   * Any slot with that exact stamp will do: slots with equal stamps are interchangeable.
   */
  async refund(limit: ResolvedRateLimit, stampedAt: string, n: number): Promise<void> {
    if (n <= 0) return;
    await withDatabaseRetry(() =>
      this.knex.raw(`UPDATE ${this.table} SET used_at = ? WHERE limit_key = ? AND used_at = ? LIMIT ?`, [NEVER_USED, limit.key, stampedAt, n]),
    );
  }

  /**
   * Stamps `n` tokens taken at `stampedAt` again, now: the job that used them has ended, so
   * their window starts from its end, however late its requests went out. Only ever moves a
   * slot later (a slot since paused further keeps its pause).
   */
  async restamp(limit: ResolvedRateLimit, stampedAt: string, n: number): Promise<void> {
    if (n <= 0) return;
    await withDatabaseRetry(() =>
      this.knex.raw(`UPDATE ${this.table} SET used_at = NOW(3) WHERE limit_key = ? AND used_at = ? LIMIT ?`, [limit.key, stampedAt, n]),
    );
  }

  /**
   * Pauses a key for everyone (a 429 with Retry-After): no slot frees before `delay` from now.
   * Needs only the key and the window the key is used with.
   */
  async pause(limit: ResolvedRateLimit, delay: Duration): Promise<void> {
    const delayMs = parseDuration(delay);
    await this.prepare(limit);
    await withDatabaseRetry(() =>
      this.knex.raw(`UPDATE ${this.table} SET used_at = GREATEST(used_at, NOW(3) + INTERVAL ? MICROSECOND) WHERE limit_key = ?`, [
        (delayMs - windowMs(limit)) * 1000,
        limit.key,
      ]),
    );
    // Remembered apart from the slots, where a pause looks like ordinary use.
    await withDatabaseRetry(() =>
      this.knex.raw(
        `UPDATE ${this.keysTable} SET paused_until = GREATEST(COALESCE(paused_until, NOW(3)), NOW(3) + INTERVAL ? MICROSECOND), updated_at = NOW(3) WHERE limit_key = ?`,
        [delayMs * 1000, limit.key],
      ),
    );
  }

  /**
   * Every key any process has used, with its use of the current window and any 429 pause.
   *
   * @example
   * for (const key of await mq.rateLimits.list()) console.log(key.key, `${key.used}/${key.limit}`, key.pausedUntil ? 'paused' : '');
   */
  async list(): Promise<RateLimitUsage[]> {
    const window = 'INTERVAL (k.per_ms + k.margin_ms) * 1000 MICROSECOND';
    const [rows] = (await this.knex.raw(
      `SELECT k.limit_key, k.limit_count, k.per_ms, IF(k.paused_until > NOW(3), k.paused_until, NULL) AS paused_until,
              COALESCE(SUM(s.used_at > NOW(3) - ${window}), 0) AS used,
              GREATEST(0, COALESCE(TIMESTAMPDIFF(MICROSECOND, NOW(3), MIN(s.used_at) + ${window}), 0)) AS next_in_us
         FROM ${this.keysTable} k LEFT JOIN ${this.table} s ON s.limit_key = k.limit_key
        GROUP BY k.limit_key, k.limit_count, k.per_ms, k.margin_ms, k.paused_until ORDER BY k.limit_key`,
    )) as [Array<Record<string, unknown>>];
    return rows.map((row) => ({
      key: String(row.limit_key),
      limit: Number(row.limit_count),
      perMs: Number(row.per_ms),
      used: Number(row.used),
      nextInMs: Math.ceil(Number(row.next_in_us) / 1000),
      pausedUntil: (row.paused_until as Date | null) ?? null,
    }));
  }

  /** How many tokens are free now and when the next one frees; reads only. */
  async status(limit: ResolvedRateLimit): Promise<{ slots: number; free: number; nextInMs: number }> {
    const windowMicros = windowMs(limit) * 1000;
    const [rows] = (await this.knex.raw(
      `SELECT COUNT(*) AS slots, COALESCE(SUM(used_at <= NOW(3) - INTERVAL ? MICROSECOND), 0) AS free,
              GREATEST(0, TIMESTAMPDIFF(MICROSECOND, NOW(3), MIN(used_at) + INTERVAL ? MICROSECOND)) AS next_in_us
         FROM ${this.table} WHERE limit_key = ?`,
      [windowMicros, windowMicros, limit.key],
    )) as [Array<{ slots: number | string; free: number | string; next_in_us: number | string | null }>];
    const row = rows[0];
    return { slots: Number(row?.slots ?? 0), free: Number(row?.free ?? 0), nextInMs: row?.next_in_us == null ? 0 : Math.ceil(Number(row.next_in_us) / 1000) };
  }

  /**
   * Makes sure the key has exactly `limit` slots, once per process and key. A raised limit adds
   * free slots; a lowered one drops the highest slots. Every host should declare the same limit.
   */
  prepare(limit: ResolvedRateLimit): Promise<void> {
    const id = `${limit.key}\u0000${limit.limit}`;
    let prepared = this.#prepared.get(id);
    if (!prepared) {
      prepared = this.createSlots(limit).catch((error: unknown) => {
        this.#prepared.delete(id);
        throw error;
      });
      this.#prepared.set(id, prepared);
    }
    return prepared;
  }

  private async createSlots(limit: ResolvedRateLimit): Promise<void> {
    const chunk = 1000;
    for (let start = 0; start < limit.limit; start += chunk) {
      const slots = Array.from({ length: Math.min(chunk, limit.limit - start) }, (_, index) => start + index);
      await withDatabaseRetry(() =>
        this.knex.raw(
          `INSERT INTO ${this.table} (limit_key, slot, used_at) VALUES ${slots.map(() => '(?, ?, ?)').join(', ')}
           ON DUPLICATE KEY UPDATE limit_key = limit_key`,
          slots.flatMap((slot) => [limit.key, slot, NEVER_USED]),
        ),
      );
    }
    await withDatabaseRetry(() => this.knex.raw(`DELETE FROM ${this.table} WHERE limit_key = ? AND slot >= ?`, [limit.key, limit.limit]));
    await withDatabaseRetry(() =>
      this.knex.raw(
        `INSERT INTO ${this.keysTable} (limit_key, limit_count, per_ms, margin_ms) VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE limit_count = VALUES(limit_count), per_ms = VALUES(per_ms), margin_ms = VALUES(margin_ms), updated_at = NOW(3)`,
        [limit.key, limit.limit, limit.perMs, limit.marginMs],
      ),
    );
  }
}
