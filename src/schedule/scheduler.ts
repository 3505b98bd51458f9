import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { isConnectionError } from '../db/errors.js';
import type { TableNames } from '../db/tables.js';
import { parseDuration, type Duration } from '../duration.js';
import { hostName } from '../host-name.js';
import { sleep } from '../sleep.js';
import { entryKey, latestSlot, nextSlot, splitCommandLine, type ScheduleEntry } from './entry.js';
import { KEEP_RUNS_DAYS, ScheduleRuns } from './runs.js';

/** The minute of each hour in which a scheduler prunes old runs: any one will do, the DELETE is idempotent. */
const PRUNE_MINUTE = 17;

/** Runs one entry's command line; says how it ended and which batches it created. */
export type CommandRunner = (argv: string[], entry: ScheduleEntry) => Promise<{ exitCode: number; batchIds: string[]; output?: string }>;

export type SlotOutcome =
  /** This scheduler fired the slot. */
  | 'fired'
  /** Another scheduler (another host, or an earlier run) fired it. */
  | 'taken'
  /** withoutOverlapping: the previous run was still going. */
  | 'skipped'
  /** The latest slot is older than the grace period: nothing to do now (it fired then, or was missed). */
  | 'not-due';

export interface SlotResult {
  entry: string;
  run: string;
  slot: Date;
  outcome: SlotOutcome;
  exitCode?: number;
  batchId?: string;
  reason?: string;
}

export interface SchedulerOptions {
  runner: CommandRunner;
  logger: Logger;
  /** How late a slot may still fire (a host that was down at 02:00 and is back at 02:03). Default 5 min. */
  grace?: Duration;
  /** This scheduler's name in schedule_runs. Default host:pid. */
  runnerId?: string;
  /** The host in the default runner id, as workers name theirs (`--hostname`, MAILQ_HOSTNAME). Default: the machine's. */
  hostname?: string;
  /** Called as each slot is decided (the CLI prints from it). */
  onSlot?: (result: SlotResult) => void;
}

/**
 * Fires schedule entries. Any number of schedulers (`mailq schedule` on several hosts, or
 * `mailq schedule:run` from each host's cron) may run at once: a slot fires on the one that
 * inserts its schedule_runs row first. Times come from the database clock, so hosts agree.
 *
 * @example
 * const scheduler = new Scheduler(mq.knex, mq.tables, entries, { runner, logger });
 * await scheduler.runDue();          // once (cron: every minute)
 * await scheduler.loop(signal);      // or long-running
 */
export class Scheduler {
  readonly runs: ScheduleRuns;
  private readonly graceMs: number;
  private readonly runnerId: string;

  constructor(
    private readonly knex: Knex,
    tables: TableNames,
    readonly entries: readonly ScheduleEntry[],
    private readonly options: SchedulerOptions,
  ) {
    this.runs = new ScheduleRuns(knex, tables);
    this.graceMs = parseDuration(options.grace ?? '5m');
    this.runnerId = options.runnerId ?? `${hostName(options.hostname)}:${process.pid}`;
  }

  /**
   * Fires every entry whose latest slot is due and not yet fired; entries run one after another.
   * Once an hour (in minute 17, whichever scheduler runs then) it also prunes old runs.
   */
  async runDue(now?: Date): Promise<SlotResult[]> {
    const at = now ?? (await this.databaseNow());
    const results: SlotResult[] = [];
    for (const entry of this.entries) {
      const result = await this.runSlot(entry, latestSlot(entry, at), at);
      if (result) {
        results.push(result);
        this.options.onSlot?.(result);
      }
    }
    if (at.getUTCMinutes() === PRUNE_MINUTE) await this.pruneRuns();
    return results;
  }

  private async pruneRuns(): Promise<void> {
    try {
      const pruned = await this.runs.prune();
      if (pruned > 0) this.options.logger.info({ pruned, keptDays: KEEP_RUNS_DAYS }, 'pruned old schedule runs');
    } catch (error) {
      this.options.logger.warn({ err: error }, 'could not prune old schedule runs; trying again in an hour');
    }
  }

  /**
   * Runs until `signal` aborts: sleeps until the next slot of any entry, fires what is due. While
   * the database cannot be reached (a restart, a failover) it says so once and tries again every
   * second; a slot missed meanwhile still fires within the grace period.
   */
  async loop(signal: AbortSignal): Promise<void> {
    let unreachable = false;
    while (!signal.aborted) {
      let waitMs: number;
      try {
        waitMs = await this.untilNextSlot();
        if (unreachable) this.options.logger.info('database reachable again; scheduling goes on');
        unreachable = false;
      } catch (error) {
        if (!isConnectionError(error)) throw error;
        if (!unreachable) this.options.logger.warn({ err: error }, 'database unreachable; the scheduler tries again every second');
        unreachable = true;
        waitMs = 1_000;
      }
      await sleep(waitMs, signal);
    }
  }

  /** Fires what is due; returns how long to sleep until the next slot of any entry. */
  private async untilNextSlot(): Promise<number> {
    await this.runDue();
    const now = await this.databaseNow();
    const next = Math.min(...this.entries.map((entry) => nextSlot(entry, now).getTime()));
    // Wake a few ms after the slot, and at least once a minute (clock changes, a suspended host).
    return Math.min(Math.max(0, next - now.getTime()) + 5, 60_000);
  }

  /** The next slot of each entry and its last run, for `mailq schedule:list`. */
  async overview(): Promise<Array<{ key: string; entry: ScheduleEntry; next: Date; last?: { slot: Date; status: string; batchId: string | null; exitCode: number | null } }>> {
    const now = await this.databaseNow();
    const latest = await this.runs.latest(this.entries.map(entryKey));
    return this.entries.map((entry) => {
      const key = entryKey(entry);
      const last = latest.get(key)?.[0];
      return { key, entry, next: nextSlot(entry, now), last: last && { slot: last.slot, status: last.status, batchId: last.batchId, exitCode: last.exitCode } };
    });
  }

  private async runSlot(entry: ScheduleEntry, slot: Date, now: Date): Promise<SlotResult | undefined> {
    const key = entryKey(entry);
    const base = { entry: key, run: entry.run, slot };
    if (now.getTime() - slot.getTime() > this.graceMs) return { ...base, outcome: 'not-due' };
    const id = await this.runs.claim(key, slot, this.runnerId);
    if (id === undefined) return { ...base, outcome: 'taken' };
    if (entry.withoutOverlapping) {
      const busy = await this.runs.previousStillRunning(key, slot);
      if (busy) {
        await this.runs.finish(id, { status: 'skipped', detail: busy });
        this.options.logger.info({ entry: key, slot, reason: busy }, 'schedule slot skipped: previous run still going');
        return { ...base, outcome: 'skipped', reason: busy };
      }
    }
    this.options.logger.info({ entry: key, slot, run: entry.run }, 'schedule slot firing');
    try {
      const { exitCode, batchIds, output } = await this.options.runner(splitCommandLine(entry.run), entry);
      const batchId = batchIds[0];
      await this.runs.finish(id, { status: exitCode === 0 ? 'done' : 'failed', exitCode, batchId, detail: output });
      return { ...base, outcome: 'fired', exitCode, batchId };
    } catch (error) {
      await this.runs.finish(id, { status: 'failed', detail: (error as Error).stack ?? String(error) });
      this.options.logger.error({ err: error, entry: key }, 'scheduled run threw');
      return { ...base, outcome: 'fired', exitCode: 1, reason: (error as Error).message };
    }
  }

  private async databaseNow(): Promise<Date> {
    const [rows] = (await this.knex.raw('SELECT NOW(3) AS now')) as [Array<{ now: Date }>];
    return new Date(rows[0]!.now);
  }
}

