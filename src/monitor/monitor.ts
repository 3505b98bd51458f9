import type { Knex } from 'knex';
import { ALL_QUEUES, QueueControls, type QueueControlRow } from '../controls/queue-controls.js';
import type { TableNames } from '../db/tables.js';
import { emptyThroughput, StatsRows, type MinuteCounts, type QueueThroughput } from '../stats/stats-rows.js';
import { WorkerRows, type WorkerRecord } from '../worker/worker-rows.js';
import { placeholders } from '../db/sql.js';
import { hostsOf, type HostHealth } from './hosts.js';

/** One queue at a glance: what `mailq monitor` prints and `--max` checks. */
export interface QueueHealth {
  queue: string;
  /** Due now and waiting for a worker. `--max` compares this. */
  pending: number;
  /** Waiting for a later time (delayed dispatch, retry backoff, deferral). */
  delayed: number;
  /** Running (claimed by a worker). */
  reserved: number;
  /** In failed_jobs. */
  failed: number;
  /** How long the oldest pending job has been due, in seconds; null when none is pending. */
  oldestPendingSeconds: number | null;
  /** Finished jobs over the recent minutes, from the per-minute stats. */
  throughput: QueueThroughput;
  /** Live workers that serve this queue. */
  workers: number;
  paused: boolean;
}

export interface QueueOverview {
  /** The database's clock when the numbers were read. */
  checkedAt: Date;
  queues: QueueHealth[];
}

export interface StatusReport extends QueueOverview {
  /** Every host with a heartbeat row, live or lost. */
  hosts: HostHealth[];
  workers: WorkerRecord[];
  supervisors: WorkerRecord[];
  paused: QueueControlRow[];
  /** The last `mailq restart` for every queue, if any. */
  restartRequestedAt: Date | null;
}

interface JobCounts {
  pending: number;
  delayed: number;
  reserved: number;
  oldestPendingSeconds: number | null;
}

/**
 * Reads queue health from the tables: job counts (one pass over the claim index, no locks),
 * failed counts, per-minute throughput, workers' heartbeats and the controls.
 */
export class Monitor {
  private readonly workers: WorkerRows;
  private readonly stats: StatsRows;
  private readonly controls: QueueControls;

  constructor(
    private readonly knex: Knex,
    private readonly tables: TableNames,
  ) {
    this.workers = new WorkerRows(knex, tables);
    this.stats = new StatsRows(knex, tables);
    this.controls = new QueueControls(knex, tables);
  }

  /** Health of the given queues (all zero if unknown), or of every queue seen anywhere. */
  async queues(only?: readonly string[]): Promise<QueueOverview> {
    const { checkedAt, queues } = await this.status(only);
    return { checkedAt, queues };
  }

  /**
   * Completed, failed, retried and deferred jobs per queue and minute over the last `minutes`
   * (from the rollup workers write at each heartbeat), oldest first; minutes with nothing finished are absent.
   *
   * @example
   * const minutes = await mq.monitor.perMinute(60, ['mailbox-sync']);
   */
  perMinute(minutes = 60, only?: readonly string[]): Promise<MinuteCounts[]> {
    return this.stats.perMinute(minutes, only);
  }

  async status(only?: readonly string[]): Promise<StatusReport> {
    const filter = only?.length ? [...new Set(only)] : undefined;
    const [checkedAt, jobs, failed, throughput, records, controls] = await Promise.all([
      this.serverNow(),
      this.jobCounts(filter),
      this.failedCounts(filter),
      this.stats.recent(),
      this.workers.list(),
      this.controls.read(),
    ]);
    const workers = records.filter((record) => record.kind === 'worker');
    const names =
      filter ??
      [...new Set([...jobs.keys(), ...failed.keys(), ...throughput.keys(), ...workers.filter((w) => w.alive).flatMap((w) => w.queues), ...controls.paused().map((row) => row.queue)])]
        .filter((queue) => queue !== ALL_QUEUES)
        .sort();
    const queues = names.map((queue): QueueHealth => {
      const counts = jobs.get(queue);
      return {
        queue,
        pending: counts?.pending ?? 0,
        delayed: counts?.delayed ?? 0,
        reserved: counts?.reserved ?? 0,
        failed: failed.get(queue) ?? 0,
        oldestPendingSeconds: counts?.oldestPendingSeconds ?? null,
        throughput: throughput.get(queue) ?? emptyThroughput(),
        workers: workers.filter((worker) => worker.alive && worker.queues.includes(queue)).length,
        paused: controls.isPaused(queue),
      };
    });
    return {
      checkedAt,
      queues,
      hosts: hostsOf(records),
      workers,
      supervisors: records.filter((record) => record.kind === 'supervisor'),
      paused: controls.paused(),
      restartRequestedAt: controls.rows.find((row) => row.queue === ALL_QUEUES)?.restartRequestedAt ?? null,
    };
  }

  private async serverNow(): Promise<Date> {
    const [rows] = (await this.knex.raw('SELECT NOW(3) AS now')) as [Array<{ now: Date }>];
    return rows[0]!.now;
  }

  private async jobCounts(queues: string[] | undefined): Promise<Map<string, JobCounts>> {
    const pending = 'reserved_at IS NULL AND available_at <= NOW(3)';
    const [rows] = (await this.knex.raw(
      `SELECT queue, SUM(${pending}) AS pending_count, SUM(reserved_at IS NULL AND available_at > NOW(3)) AS delayed_count,
         SUM(reserved_at IS NOT NULL) AS reserved_count,
         TIMESTAMPDIFF(MICROSECOND, MIN(CASE WHEN ${pending} THEN available_at END), NOW(3)) AS oldest_us
       FROM \`${this.tables.jobs}\` ${queues ? `WHERE queue IN (${placeholders(queues)})` : ''} GROUP BY queue`,
      queues ?? [],
    )) as [Array<Record<string, unknown>>];
    return new Map(
      rows.map((row) => [
        String(row.queue),
        {
          pending: Number(row.pending_count),
          delayed: Number(row.delayed_count),
          reserved: Number(row.reserved_count),
          oldestPendingSeconds: row.oldest_us == null ? null : Math.max(0, Number(row.oldest_us) / 1e6),
        },
      ]),
    );
  }

  private async failedCounts(queues: string[] | undefined): Promise<Map<string, number>> {
    const query = this.knex(this.tables.failedJobs).select('queue').count({ count: '*' }).groupBy('queue');
    if (queues) query.whereIn('queue', queues);
    const rows = (await query) as Array<{ queue: string; count: number | string }>;
    return new Map(rows.map((row) => [row.queue, Number(row.count)]));
  }
}

/** Queues whose pending jobs exceed `max` (what makes `mailq monitor --max` exit non-zero). */
export function queuesOverMax(overview: QueueOverview, max: number): QueueHealth[] {
  return overview.queues.filter((queue) => queue.pending > max);
}
