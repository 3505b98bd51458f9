import type { Knex } from 'knex';
import type { TableNames } from '../db/tables.js';
import { parseJsonColumn } from '../db/json.js';

export type PresenceKind = 'worker' | 'supervisor';

/** What a worker (or supervisor) says about itself at every heartbeat. */
export interface PresenceStatus {
  state: string;
  detail?: string | null;
  jobsDone?: number;
  jobsFailed?: number;
  running?: number;
  restarts?: number;
  memoryBytes?: number;
}

/** What a worker says once, when it registers. */
export interface PresenceIdentity {
  id: string;
  kind: PresenceKind;
  supervisorId?: string | null;
  host: string;
  pid: number;
  queues: readonly string[];
  concurrency: number;
  heartbeatMs: number;
}

/** A row of the workers table as `mailq status` shows it; times are the database's. */
export interface WorkerRecord extends PresenceIdentity {
  supervisorId: string | null;
  queues: string[];
  state: string;
  detail: string | null;
  startedAt: Date;
  lastBeatAt: Date;
  jobsDone: number;
  jobsFailed: number;
  running: number;
  restarts: number;
  memoryBytes: number;
  /** Beat within three of its own intervals (and never called dead before two seconds of silence). */
  alive: boolean;
  /** Milliseconds since its last beat. */
  silentMs: number;
}

/** A worker is presumed dead after this many missed beats. */
export const MISSED_BEATS_BEFORE_DEAD = 3;
/**
 * ... and never before this much silence: with short heartbeats (tests, demos) a busy machine's
 * scheduling hiccup would otherwise show a healthy worker as dead.
 */
export const MIN_SILENCE_BEFORE_DEAD_MS = 2_000;

/** Every statement about the workers table, in one place: register, beat, remove, prune, list. */
export class WorkerRows {
  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {}

  private get table(): string {
    return `\`${this.tables.workers}\``;
  }

  /** Inserts (or refreshes) the row; returns its `started_at` on the database clock. */
  async register(identity: PresenceIdentity, status: PresenceStatus): Promise<Date> {
    const values = statusValues(status);
    await this.knex.raw(
      `INSERT INTO ${this.table} (id, kind, supervisor_id, host, pid, queues, concurrency, heartbeat_ms, started_at, last_beat_at,
         state, detail, jobs_done, jobs_failed, running, restarts, memory_bytes)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, NOW(3), NOW(3), ?, ?, ?, ?, ?, ?, ?)
       ON DUPLICATE KEY UPDATE last_beat_at = NOW(3), state = VALUES(state), detail = VALUES(detail), jobs_done = VALUES(jobs_done),
         jobs_failed = VALUES(jobs_failed), running = VALUES(running), restarts = VALUES(restarts), memory_bytes = VALUES(memory_bytes)`,
      [
        identity.id, identity.kind, identity.supervisorId ?? null, identity.host.slice(0, 191), identity.pid, JSON.stringify(identity.queues),
        identity.concurrency, identity.heartbeatMs, ...values,
      ],
    );
    const row = await this.knex(this.tables.workers).select('started_at').where({ id: identity.id }).first();
    return row?.started_at instanceof Date ? row.started_at : new Date(String(row?.started_at));
  }

  /** Refreshes the row; false when it is gone (pruned during a long outage), so the caller registers again. */
  async beat(id: string, status: PresenceStatus): Promise<boolean> {
    const [result] = (await this.knex.raw(
      `UPDATE ${this.table} SET last_beat_at = NOW(3), state = ?, detail = ?, jobs_done = ?, jobs_failed = ?, running = ?, restarts = ?, memory_bytes = ?
       WHERE id = ?`,
      [...statusValues(status), id],
    )) as [{ affectedRows: number }];
    return result.affectedRows > 0;
  }

  async remove(ids: readonly string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return this.knex(this.tables.workers).whereIn('id', [...ids]).delete();
  }

  /** Deletes rows whose last beat is older than `silentForMs` (their process died without saying goodbye). */
  async prune(silentForMs: number): Promise<number> {
    const [result] = (await this.knex.raw(`DELETE FROM ${this.table} WHERE last_beat_at < NOW(3) - INTERVAL ? MICROSECOND LIMIT 1000`, [
      Math.round(silentForMs) * 1000,
    ])) as [{ affectedRows: number }];
    return result.affectedRows;
  }

  async list(): Promise<WorkerRecord[]> {
    const [rows] = (await this.knex.raw(
      `SELECT *, TIMESTAMPDIFF(MICROSECOND, last_beat_at, NOW(3)) DIV 1000 AS silent_ms FROM ${this.table} ORDER BY kind DESC, host, started_at, id`,
    )) as [Array<Record<string, unknown>>];
    return rows.map(toWorkerRecord);
  }
}

function statusValues(status: PresenceStatus): Knex.Value[] {
  return [
    status.state.slice(0, 32),
    status.detail ? status.detail.slice(0, 255) : null,
    status.jobsDone ?? 0,
    status.jobsFailed ?? 0,
    status.running ?? 0,
    status.restarts ?? 0,
    Math.round(status.memoryBytes ?? 0),
  ];
}

function toWorkerRecord(row: Record<string, unknown>): WorkerRecord {
  const heartbeatMs = Number(row.heartbeat_ms);
  const silentMs = Math.max(0, Number(row.silent_ms));
  return {
    id: String(row.id),
    kind: row.kind === 'supervisor' ? 'supervisor' : 'worker',
    supervisorId: (row.supervisor_id as string | null) ?? null,
    host: String(row.host),
    pid: Number(row.pid),
    queues: parseJsonColumn<string[]>(row.queues),
    concurrency: Number(row.concurrency),
    heartbeatMs,
    state: String(row.state),
    detail: (row.detail as string | null) ?? null,
    startedAt: row.started_at as Date,
    lastBeatAt: row.last_beat_at as Date,
    jobsDone: Number(row.jobs_done),
    jobsFailed: Number(row.jobs_failed),
    running: Number(row.running),
    restarts: Number(row.restarts),
    memoryBytes: Number(row.memory_bytes),
    alive: silentMs <= Math.max(heartbeatMs * MISSED_BEATS_BEFORE_DEAD, MIN_SILENCE_BEFORE_DEAD_MS),
    silentMs,
  };
}
