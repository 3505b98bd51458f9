import type { Logger } from 'pino';
import type { JobDefinition, JobRegistry } from '../job.js';
import { parseDuration, type Duration } from '../duration.js';
import type { ClaimedJob } from '../worker/claimed-job.js';
import type { RateLimiter } from './limiter.js';
import { describeRateLimit, resolveRateLimit, sameRateLimit, type JobRateLimit, type ResolvedRateLimit } from './rate-limit.js';

/** What one claim may take: a cap per rate-limited queue, and the tokens behind each cap. */
export interface ClaimPlan {
  /** Queues worth reading now, in the worker's order (queues waiting for a token are left out). */
  queues: string[];
  /** Rate-limited queues: claim at most this many from each. */
  caps: Map<string, number>;
  grants: Array<{ queue: string; limit: ResolvedRateLimit; granted: number; stampedAt: string | null }>;
}

/**
 * The worker side of rate limits. A rate limit belongs to a job type, and a worker applies it to the
 * queue that job type lives on (its `queue`, else `default`): before a claim it takes up to as many
 * tokens as it has free slots, claims at most that many jobs from the queue, and gives back what it
 * did not use. So the claim stays one index range per queue, and a job never waits while reserved.
 * Everything on a rate-limited queue shares its limit: give limited job types a queue of their own.
 *
 * A limited job that arrives some other way (dispatched onto another queue) takes its token when
 * claimed, or is put back as a deferral until one frees: its attempts are never spent on waiting.
 */
export class ClaimGate {
  /** queue → the limit of the job types that live on it. */
  private readonly queueLimits = new Map<string, ResolvedRateLimit>();
  /** key → local time (Date.now()) before which asking the database is pointless. */
  private readonly closedUntil = new Map<string, number>();
  private readonly anyLimitedType: boolean;
  /** Tokens each running job holds, stamped again when it ends (see release). */
  private readonly held = new Map<number, Array<{ limit: ResolvedRateLimit; stampedAt: string; count: number }>>();

  constructor(
    private readonly limiter: RateLimiter,
    private readonly registry: JobRegistry,
    queues: readonly string[],
    logger: Logger,
  ) {
    for (const definition of definitions(registry)) {
      const limit = limitOf(definition);
      const queue = definition.queue ?? 'default';
      if (!limit || !queues.includes(queue)) continue;
      const existing = this.queueLimits.get(queue);
      if (existing && !sameRateLimit(existing, limit)) {
        throw new TypeError(`queue '${queue}' carries two different rate limits, ${describeRateLimit(existing)} and ${describeRateLimit(limit)}: give one of those job types its own queue`);
      }
      this.queueLimits.set(queue, limit);
    }
    this.anyLimitedType = definitions(registry).some((definition) => definition.rateLimit !== undefined);
    for (const definition of definitions(registry)) {
      const queue = definition.queue ?? 'default';
      const limit = this.queueLimits.get(queue);
      if (limit && !definition.rateLimit) logger.warn({ job: definition.name, queue, key: limit.key }, `job '${definition.name}' shares queue '${queue}' with a rate-limited job type, so it is limited by ${describeRateLimit(limit)} too`);
    }
  }

  get limited(): boolean {
    return this.queueLimits.size > 0;
  }

  /** Queues worth reading now: rate-limited queues whose key has no token yet are left out, without asking the database. */
  openQueues(queues: readonly string[]): string[] {
    return queues.filter((queue) => {
      const limit = this.queueLimits.get(queue);
      return !limit || !this.isClosed(limit.key);
    });
  }

  /** How long until a closed queue may have a token again (undefined if none is closed). */
  msUntilOpen(queues: readonly string[]): number | undefined {
    let soonest: number | undefined;
    for (const queue of queues) {
      const limit = this.queueLimits.get(queue);
      const until = limit && this.closedUntil.get(limit.key);
      if (until !== undefined && until !== 0) soonest = Math.min(soonest ?? Infinity, until - Date.now());
    }
    return soonest === undefined ? undefined : Math.max(0, soonest);
  }

  /**
   * One claim under the rate limits: tokens first, then `claim` (capped per limited queue), then
   * unused tokens back. Returns the jobs to run and those to put back until a token frees.
   */
  async claim(
    queues: readonly string[],
    wanted: number,
    claim: (queues: string[], caps: ReadonlyMap<string, number> | undefined) => Promise<ClaimedJob[]>,
    /**
     * How many of them could start at once. A rate-limited queue gets no more tokens than that: a
     * token is stamped when it is taken, so a job that waited in a worker's buffer (claim-ahead)
     * would make its request later than its token says, and the window would let too many through.
     */
    startable = wanted,
  ): Promise<{ run: ClaimedJob[]; waiting: Array<{ jobs: ClaimedJob[]; delayMs: number; key: string }> }> {
    if (!this.limited) {
      const claimed = await claim([...queues], undefined);
      const strays = this.strays(claimed);
      if (strays.length === 0) return { run: claimed, waiting: [] };
      const { admitted, waiting } = await this.admit(strays);
      return { run: claimed.filter((job) => !strays.includes(job) || admitted.includes(job)), waiting };
    }
    const plan = await this.plan(queues, Math.min(wanted, startable));
    if (plan.queues.length === 0) return { run: [], waiting: [] };
    let claimed: ClaimedJob[];
    try {
      claimed = await claim(plan.queues, plan.caps);
    } catch (error) {
      await this.refundAll(plan).catch(() => undefined);
      throw error;
    }
    const strays = await this.settle(plan, claimed);
    for (const grant of plan.grants) {
      if (!grant.stampedAt) continue;
      for (const job of claimed) if (job.queue === grant.queue && !strays.includes(job)) this.hold(job.id, grant.limit, grant.stampedAt, 1);
    }
    if (strays.length === 0) return { run: claimed, waiting: [] };
    const { admitted, waiting } = await this.admit(strays);
    return { run: claimed.filter((job) => !strays.includes(job) || admitted.includes(job)), waiting };
  }

  /**
   * A job has ended: the tokens it held are stamped again with the time it ended. A slot then frees
   * one window after the job that used it finished, so the requests it made (all before its end)
   * are a full window apart from the next use, whatever the delay between token and request.
   * Never throws: at worst a slot keeps its first stamp.
   */
  release(jobId: number): Promise<void> | undefined {
    const tokens = this.held.get(jobId);
    // Most jobs hold none: no promise to make for them.
    if (!tokens) return undefined;
    this.held.delete(jobId);
    return this.restampAll(tokens);
  }

  private async restampAll(tokens: Array<{ limit: ResolvedRateLimit; stampedAt: string; count: number }>): Promise<void> {
    for (const { limit, stampedAt, count } of tokens) {
      await this.limiter.restamp(limit, stampedAt, count).catch(() => undefined);
    }
  }

  private hold(jobId: number, limit: ResolvedRateLimit, stampedAt: string, count: number): void {
    const tokens = this.held.get(jobId) ?? [];
    tokens.push({ limit, stampedAt, count });
    this.held.set(jobId, tokens);
  }

  /** Takes tokens for the rate-limited queues among `queues`, at most `wanted` each. */
  async plan(queues: readonly string[], wanted: number): Promise<ClaimPlan> {
    const plan: ClaimPlan = { queues: [], caps: new Map(), grants: [] };
    for (const queue of queues) {
      const limit = this.queueLimits.get(queue);
      if (!limit) {
        plan.queues.push(queue);
        continue;
      }
      if (wanted <= 0 || this.isClosed(limit.key)) continue;
      const acquired = await this.limiter.acquire(limit, wanted);
      if (acquired.granted < wanted) this.closeFor(limit.key, acquired.nextInMs);
      if (acquired.granted === 0) continue;
      plan.queues.push(queue);
      plan.caps.set(queue, acquired.granted);
      plan.grants.push({ queue, limit, granted: acquired.granted, stampedAt: acquired.stampedAt });
    }
    return plan;
  }

  /**
   * After the claim: gives back the tokens no job was claimed for, and returns the claimed jobs
   * that still need a token of their own (a limited job type claimed from another queue).
   */
  async settle(plan: ClaimPlan, claimed: readonly ClaimedJob[]): Promise<ClaimedJob[]> {
    for (const grant of plan.grants) {
      const used = claimed.filter((job) => job.queue === grant.queue).length;
      if (used < grant.granted && grant.stampedAt) {
        await this.limiter.refund(grant.limit, grant.stampedAt, grant.granted - used);
        this.closedUntil.delete(grant.limit.key);
      }
    }
    return this.strays(claimed);
  }

  private async refundAll(plan: ClaimPlan): Promise<void> {
    for (const grant of plan.grants) if (grant.stampedAt) await this.limiter.refund(grant.limit, grant.stampedAt, grant.granted);
  }

  /** Rate-limited jobs claimed from a queue that is not limited by their key: they need a token of their own. */
  private strays(claimed: readonly ClaimedJob[]): ClaimedJob[] {
    if (!this.anyLimitedType) return [];
    return claimed.filter((job) => {
      const own = this.limitOfJob(job.name);
      return own !== undefined && this.queueLimits.get(job.queue)?.key !== own.key;
    });
  }

  /** Tokens for jobs that need their own: returns the jobs that got one and those that must wait (with how long). */
  async admit(jobs: readonly ClaimedJob[]): Promise<{ admitted: ClaimedJob[]; waiting: Array<{ jobs: ClaimedJob[]; delayMs: number; key: string }> }> {
    const admitted: ClaimedJob[] = [];
    const waiting: Array<{ jobs: ClaimedJob[]; delayMs: number; key: string }> = [];
    const byKey = new Map<string, { limit: ResolvedRateLimit; jobs: ClaimedJob[] }>();
    for (const job of jobs) {
      const limit = this.limitOfJob(job.name)!;
      const group = byKey.get(limit.key) ?? { limit, jobs: [] };
      group.jobs.push(job);
      byKey.set(limit.key, group);
    }
    for (const { limit, jobs: group } of byKey.values()) {
      const acquired = await this.limiter.acquire(limit, group.length);
      admitted.push(...group.slice(0, acquired.granted));
      for (const job of group.slice(0, acquired.granted)) this.hold(job.id, limit, acquired.stampedAt!, 1);
      if (acquired.granted < group.length) {
        this.closeFor(limit.key, acquired.nextInMs);
        waiting.push({ jobs: group.slice(acquired.granted), delayMs: Math.max(1, acquired.nextInMs), key: limit.key });
      }
    }
    return { admitted, waiting };
  }

  /** `ctx.rateLimit` for a job of this type, or undefined if it has no rate limit. */
  contextFor(definition: JobDefinition, signal: AbortSignal, jobId: number): JobRateLimit | undefined {
    const limit = limitOf(definition);
    if (!limit) return undefined;
    return {
      key: limit.key,
      pauseFor: async (delay) => {
        await this.limiter.pause(limit, delay);
        this.closeFor(limit.key, parseDuration(delay));
      },
      acquire: async (n = 1) => {
        let needed = n;
        while (needed > 0) {
          signal.throwIfAborted();
          const acquired = await this.limiter.acquire(limit, needed);
          if (acquired.granted > 0) this.hold(jobId, limit, acquired.stampedAt!, acquired.granted);
          needed -= acquired.granted;
          if (needed > 0) await abortableSleep(Math.max(5, acquired.nextInMs), signal);
        }
      },
    };
  }

  private limitOfJob(name: string): ResolvedRateLimit | undefined {
    const definition = this.registry.get(name);
    return definition ? limitOf(definition) : undefined;
  }

  private isClosed(key: string): boolean {
    const until = this.closedUntil.get(key);
    return until !== undefined && Date.now() < until;
  }

  private closeFor(key: string, ms: number): void {
    this.closedUntil.set(key, Date.now() + Math.max(0, ms));
  }
}

const resolved = new WeakMap<JobDefinition, ResolvedRateLimit>();

/** A job type's rate limit, validated once. */
export function limitOf(definition: JobDefinition): ResolvedRateLimit | undefined {
  if (!definition.rateLimit) return undefined;
  let limit = resolved.get(definition);
  if (!limit) {
    limit = resolveRateLimit(definition.rateLimit, `defineJob(${definition.name}).rateLimit`);
    resolved.set(definition, limit);
  }
  return limit;
}

function definitions(registry: JobRegistry): JobDefinition[] {
  return registry.names().map((name) => registry.get(name)!);
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
