import type { Mailq } from '../../src/index.js';
import { sleep } from '../../src/sleep.js';
import { CHAOS_QUEUE, ledgerJob } from './ledger-job.js';
import type { Random } from './random.js';

/** One dispatchMany call, on the script's clock. */
export interface Wave {
  firstSeq: number;
  size: number;
  startedAt: number;
  endedAt: number;
  /** The call threw: the caller was told its jobs were not dispatched. */
  error?: string;
}

export interface DispatcherOptions {
  waveSize: { min: number; max: number };
  pauseMs: { min: number; max: number };
  /** Waits while the queue holds more than this, so a slow fleet is not buried. */
  maxBacklog: number;
}

export const DEFAULT_DISPATCHER_OPTIONS: DispatcherOptions = { waveSize: { min: 5, max: 40 }, pauseMs: { min: 100, max: 400 }, maxBacklog: 400 };

/**
 * A real producer: bulk dispatches in waves of ledger jobs, each payload numbered (`seq`) so the
 * run can follow every job it was told was dispatched. Most jobs take tens of milliseconds; a few
 * take seconds, so that kills find jobs mid-run.
 */
export class WaveDispatcher {
  readonly waves: Wave[] = [];
  private nextSeq = 1;

  constructor(
    private readonly mq: Mailq,
    private readonly random: Random,
    private readonly options: DispatcherOptions = DEFAULT_DISPATCHER_OPTIONS,
  ) {}

  /** Seqs whose dispatch call returned. */
  dispatchedSeqs(): number[] {
    return this.waves.filter((wave) => !wave.error).flatMap(seqsOf);
  }

  /** Seqs whose dispatch call threw. */
  failedSeqs(): number[] {
    return this.waves.filter((wave) => wave.error).flatMap(seqsOf);
  }

  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (await this.backlogIsFull()) {
        await sleep(200, signal);
        continue;
      }
      await this.dispatchWave();
      await sleep(this.random.between(this.options.pauseMs.min, this.options.pauseMs.max), signal);
    }
  }

  private async backlogIsFull(): Promise<boolean> {
    try {
      const [row] = await this.mq.knex(this.mq.tables.jobs).where({ queue: CHAOS_QUEUE }).count({ n: '*' });
      return Number(row?.n ?? 0) > this.options.maxBacklog;
    } catch {
      return true; // the database is away (a restart): wait, as a producer watching its backlog would
    }
  }

  private async dispatchWave(): Promise<void> {
    const size = this.random.between(this.options.waveSize.min, this.options.waveSize.max);
    const wave: Wave = { firstSeq: this.nextSeq, size, startedAt: Date.now(), endedAt: 0 };
    this.nextSeq += size;
    const payloads = Array.from({ length: size }, (_, index) => ({ seq: wave.firstSeq + index, ms: this.jobMillis() }));
    try {
      await this.mq.dispatchMany(ledgerJob, payloads);
    } catch (error) {
      wave.error = (error as Error).message;
    }
    wave.endedAt = Date.now();
    this.waves.push(wave);
  }

  private jobMillis(): number {
    return this.random.chance(0.05) ? this.random.between(500, 2_500) : this.random.between(5, 80);
  }
}

function seqsOf(wave: Wave): number[] {
  return Array.from({ length: wave.size }, (_, index) => wave.firstSeq + index);
}
