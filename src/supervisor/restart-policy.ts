export interface RestartPolicyOptions {
  /** A process that ran at least this long before crashing counts as healthy: its crash streak starts over. Default 10 s. */
  minUptimeMs?: number;
  /** First delay of a crash streak, doubled at each further quick crash. Default 1 s. */
  baseDelayMs?: number;
  /** The delay stops growing here. Default 60 s. */
  maxDelayMs?: number;
  /** From this many quick crashes in a row, the slot is reported as crash-looping. Default 3. */
  crashLoopAfter?: number;
  /**
   * A planned exit this soon after the start (say `--memory` below what a fresh process uses)
   * waits this long before the next start, so even a misconfiguration cannot spin. Default 1 s.
   */
  quickPlannedExitMs?: number;
}

/** How a worker process ended, as far as restarting it is concerned. */
export interface ProcessEnd {
  /** It chose to exit (recycle, restart signal, stop): start the next one at once. */
  planned: boolean;
  uptimeMs: number;
}

export interface RestartDecision {
  delayMs: number;
  /** Quick crashes in a row, this one included (0 after a planned exit). */
  crashes: number;
  crashLoop: boolean;
}

/**
 * When to start a worker process again. A planned exit restarts at once (unless it came within
 * a second of the start); a crash after a healthy
 * run restarts at once too; crashes in quick succession back off exponentially, so a worker
 * that cannot start (bad deploy, database down) is retried forever without spinning the CPU.
 */
export class RestartPolicy {
  private crashes = 0;
  private readonly minUptimeMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly crashLoopAfter: number;
  private readonly quickPlannedExitMs: number;

  constructor(options: RestartPolicyOptions = {}) {
    this.minUptimeMs = options.minUptimeMs ?? 10_000;
    this.baseDelayMs = options.baseDelayMs ?? 1_000;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    this.crashLoopAfter = options.crashLoopAfter ?? 3;
    this.quickPlannedExitMs = options.quickPlannedExitMs ?? 1_000;
  }

  next(end: ProcessEnd): RestartDecision {
    if (end.planned) {
      this.crashes = 0;
      return { delayMs: end.uptimeMs < this.quickPlannedExitMs ? this.quickPlannedExitMs : 0, crashes: 0, crashLoop: false };
    }
    if (end.uptimeMs >= this.minUptimeMs) {
      this.crashes = 1;
      return { delayMs: 0, crashes: 1, crashLoop: false };
    }
    this.crashes++;
    const delayMs = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(this.crashes - 1, 30));
    return { delayMs, crashes: this.crashes, crashLoop: this.crashes >= this.crashLoopAfter };
  }

  /** The current process has run long enough to count as healthy. */
  get minUptime(): number {
    return this.minUptimeMs;
  }
}
