import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { placeholders } from '../db/sql.js';

/** The control row that applies to every queue. */
export const ALL_QUEUES = '*';

export interface QueueControlRow {
  queue: string;
  pausedAt: Date | null;
  restartRequestedAt: Date | null;
}

/**
 * What the controls said at one read. Workers keep the last one and filter their queue list
 * with it before each claim, so the claim itself stays one index range with no join.
 */
export class ControlState {
  private readonly byQueue: ReadonlyMap<string, QueueControlRow>;

  constructor(readonly rows: readonly QueueControlRow[] = []) {
    this.byQueue = new Map(rows.map((row) => [row.queue, row]));
  }

  isPaused(queue: string): boolean {
    return Boolean(this.byQueue.get(queue)?.pausedAt ?? this.byQueue.get(ALL_QUEUES)?.pausedAt);
  }

  /** The queues of `queues` that are not paused, in the same order. */
  claimable(queues: readonly string[]): string[] {
    return queues.filter((queue) => !this.isPaused(queue));
  }

  /** True when a restart was requested, for all queues or one of these, after `since` (database clock). */
  restartRequestedSince(queues: readonly string[], since: Date): boolean {
    return [ALL_QUEUES, ...queues].some((queue) => {
      const requested = this.byQueue.get(queue)?.restartRequestedAt;
      return requested != null && requested.getTime() > since.getTime();
    });
  }

  paused(): QueueControlRow[] {
    return this.rows.filter((row) => row.pausedAt);
  }
}

/**
 * Pause, resume and restart, through the database so they reach every worker on every host
 * (Laravel's `queue:restart` uses its cache for the same). Workers read this small table at
 * each heartbeat.
 */
export class QueueControls {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  private get table(): string {
    return `\`${this.tables.queueControls}\``;
  }

  /** Workers stop claiming from these queues at their next heartbeat; running jobs finish. Pass `'*'` for every queue. */
  async pause(queues: readonly string[]): Promise<void> {
    if (queues.length === 0) return;
    await this.knex.raw(
      `INSERT INTO ${this.table} (queue, paused_at, updated_at) VALUES ${queues.map(() => '(?, NOW(3), NOW(3))').join(', ')}
       ON DUPLICATE KEY UPDATE paused_at = COALESCE(paused_at, NOW(3)), updated_at = NOW(3)`,
      [...queues],
    );
  }

  /** Returns how many of these queues were paused. */
  async resume(queues: readonly string[]): Promise<number> {
    if (queues.length === 0) return 0;
    const [result] = (await this.knex.raw(
      `UPDATE ${this.table} SET paused_at = NULL, updated_at = NOW(3) WHERE queue IN (${placeholders(queues)}) AND paused_at IS NOT NULL`,
      [...queues],
    )) as [{ affectedRows: number }];
    return result.affectedRows;
  }

  /**
   * Asks every worker (of one queue, or of all) that started before now to finish its current
   * jobs and exit, so its supervisor starts a fresh process with fresh code. Returns the signal's time.
   */
  async requestRestart(queue: string = ALL_QUEUES): Promise<Date> {
    await this.knex.raw(
      `INSERT INTO ${this.table} (queue, restart_requested_at, updated_at) VALUES (?, NOW(3), NOW(3))
       ON DUPLICATE KEY UPDATE restart_requested_at = NOW(3), updated_at = NOW(3)`,
      [queue],
    );
    const state = await this.read();
    return state.rows.find((row) => row.queue === queue)!.restartRequestedAt!;
  }

  async read(): Promise<ControlState> {
    const [rows] = (await this.knex.raw(`SELECT queue, paused_at, restart_requested_at FROM ${this.table}`)) as [Array<Record<string, unknown>>];
    return new ControlState(
      rows.map((row) => ({
        queue: String(row.queue),
        pausedAt: (row.paused_at as Date | null) ?? null,
        restartRequestedAt: (row.restart_requested_at as Date | null) ?? null,
      })),
    );
  }
}
