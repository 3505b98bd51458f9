import { z } from 'zod';
import type { BackoffOption } from '../backoff.js';
import type { Duration } from '../duration.js';
import { PermanentError } from '../errors.js';
import { defineJob, type JobDefinition } from '../job.js';
import type { RateLimitOption } from '../ratelimit/rate-limit.js';
import { MailboxSyncError, type MailboxSync } from './sync.js';

export const MAILBOX_SYNC_JOB = 'sync-taxpayer-mailbox';
export const MAILBOX_SYNC_QUEUE = 'mailbox-sync';

/** Only the taxpayer's id travels in the queue: the worker reads the rest, and its TWS token, itself. */
export const mailboxSyncPayload = z.object({ taxpayerId: z.number().int().positive() }).strict();
export type MailboxSyncPayload = z.output<typeof mailboxSyncPayload>;

export interface MailboxSyncJobOptions {
  queue?: string;
  /** Default 3. */
  tries?: number;
  /** Default 60 s, 120 s, 300 s. */
  backoff?: BackoffOption;
  /** Default 120 s. */
  timeout?: Duration;
  /** A 429 without Retry-After waits this long. Default 30 s. */
  rateLimitWait?: Duration;
  /**
   * The limit every worker shares before calling TWS (settings: `tws.rateLimit`,
   * MAILQ_TWS_RATE_LIMIT). A job takes one token when claimed and one per extra page.
   */
  rateLimit?: RateLimitOption;
  /** Throws when this process cannot reach TWS (see JobDefinition.preflight). Default: asks `sync` when it is an instance. */
  preflight?: () => void;
}

/** The rate-limit key every TWS caller shares. */
export const TWS_RATE_LIMIT_KEY = 'tws-api';

export const MAILBOX_SYNC_DEFAULTS = { queue: MAILBOX_SYNC_QUEUE, tries: 3, backoff: [60, 120, 300], timeout: 120 } as const;

/**
 * The queue job `sync-taxpayer-mailbox`: one taxpayer per job. It maps the sync's failures onto
 * queue semantics: a 429 defers the job (no attempt burnt), a 5xx/timeout/network/malformed
 * answer is retried with backoff, and a taxpayer TWS refuses (401/403/404) or that no longer
 * exists goes straight to failed_jobs with the reason.
 * `sync` may be a function, so a process can define the job before its database is open.
 *
 * @example
 * const sync = createMailboxSync({ knex: mq.knex, tables: mailboxTables(mq), tws: { url, token } });
 * mq.registry.add(mailboxSyncJob(sync));
 * await mq.dispatch(MAILBOX_SYNC_JOB, { taxpayerId: 42 });
 */
export function mailboxSyncJob(sync: MailboxSync | (() => MailboxSync | Promise<MailboxSync>), options: MailboxSyncJobOptions = {}): JobDefinition<MailboxSyncPayload> {
  const resolve = typeof sync === 'function' ? sync : () => sync;
  const rateLimitWait = options.rateLimitWait ?? 30;
  return defineJob<MailboxSyncPayload>({
    name: MAILBOX_SYNC_JOB,
    schema: mailboxSyncPayload,
    queue: options.queue ?? MAILBOX_SYNC_DEFAULTS.queue,
    tries: options.tries ?? MAILBOX_SYNC_DEFAULTS.tries,
    backoff: options.backoff ?? [...MAILBOX_SYNC_DEFAULTS.backoff],
    timeout: options.timeout ?? MAILBOX_SYNC_DEFAULTS.timeout,
    rateLimit: options.rateLimit,
    preflight: options.preflight ?? (typeof sync === 'function' ? undefined : () => void sync.tws()),
    // A nightly run that overlaps a manual one does not sync a taxpayer twice: one pending job each.
    unique: ({ taxpayerId }) => String(taxpayerId),
    async handle({ taxpayerId }, context) {
      const finalAttempt = context.job.attempt >= context.job.maxAttempts;
      const rateLimit = context.rateLimit;
      try {
        const outcome = await (await resolve()).syncTaxpayer(taxpayerId, { signal: context.signal, finalAttempt, beforeNextRequest: rateLimit && (() => rateLimit.acquire()) });
        context.logger.debug(outcome, 'mailbox synced');
        return outcome;
      } catch (error) {
        if (!(error instanceof MailboxSyncError)) throw error;
        if (error.rateLimited) {
          const wait = error.retryAfterMs !== undefined ? `${error.retryAfterMs}ms` : rateLimitWait;
          // TWS said stop: every worker on every host waits, not only this job.
          await rateLimit?.pauseFor(wait);
          context.defer(wait, `TWS rate limit: ${error.message}`);
        }
        if (error.permanent) throw new PermanentError(error.message, { cause: error });
        throw error;
      }
    },
  });
}
