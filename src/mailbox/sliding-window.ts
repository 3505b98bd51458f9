import type { Rate } from '../ratelimit/rate.js';

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

/**
 * Allows at most `limit` events in any `perMs` window. Refused events are not recorded, so a
 * client that keeps knocking is not locked out longer than the window it overran.
 */
export class SlidingWindowLimiter {
  private readonly acceptedAt: number[] = [];

  constructor(private readonly rate: Rate) {}

  tryAcquire(now: number = Date.now()): RateDecision {
    this.forgetOlderThan(now - this.rate.perMs);
    if (this.acceptedAt.length < this.rate.limit) {
      this.acceptedAt.push(now);
      return { allowed: true };
    }
    const oldest = this.acceptedAt[0]!;
    return { allowed: false, retryAfterMs: oldest + this.rate.perMs - now };
  }

  reset(): void {
    this.acceptedAt.length = 0;
  }

  private forgetOlderThan(cutoff: number): void {
    while (this.acceptedAt.length > 0 && this.acceptedAt[0]! <= cutoff) this.acceptedAt.shift();
  }
}
