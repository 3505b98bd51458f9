// The mailbox sync as a built-in job of every `mailq` process: `mailq work` runs it and
// `mailq sync-mailbox` dispatches it, configured from settings (MAILQ_TWS_URL, MAILQ_TWS_TOKEN, …).
import { planToOption } from '../backoff.js';
import type { MailqSettings } from '../config.js';
import { registerBuiltinJobs } from '../cli/context.js';
import type { Mailq } from '../mailq.js';
import { mailboxSyncJob, TWS_RATE_LIMIT_KEY, type MailboxSyncJobOptions } from './job.js';
import { parseRate } from '../ratelimit/rate.js';
import type { RateLimitOption } from '../ratelimit/rate-limit.js';
import { MailboxSync } from './sync.js';

const syncs = new WeakMap<Mailq, MailboxSync>();

/** One MailboxSync per queue instance, reaching TWS as the settings say. */
export function mailboxSyncFor(mq: Mailq, settings: MailqSettings): MailboxSync {
  let sync = syncs.get(mq);
  if (!sync) {
    const { url, token, requestTimeout } = settings.tws;
    const tws = url && token ? { url, token, requestTimeoutMs: requestTimeout } : undefined;
    sync = new MailboxSync({ knex: mq.knex, tables: mq.tables, tws, logger: mq.logger });
    syncs.set(mq, sync);
  }
  return sync;
}

/** The job's queue, tries, backoff and timeout from settings.mailbox (validated milliseconds). */
export function mailboxJobOptions(settings: MailqSettings): MailboxSyncJobOptions {
  const { queue, tries, backoff, timeout } = settings.mailbox;
  return { queue, tries, backoff: planToOption(backoff), timeout: `${timeout}ms`, rateLimit: twsRateLimit(settings.tws.rateLimit) };
}

/** `tws.rateLimit` (MAILQ_TWS_RATE_LIMIT, e.g. `100/min`) as the job's shared rate limit; `off` for none. */
export function twsRateLimit(text: string): RateLimitOption | undefined {
  if (text.trim().toLowerCase() === 'off') return undefined;
  const { limit, perMs } = parseRate(text);
  return { key: TWS_RATE_LIMIT_KEY, limit, per: `${perMs}ms` };
}

registerBuiltinJobs((settings, { mailq }) => [mailboxSyncJob(async () => mailboxSyncFor(await mailq(), settings), mailboxJobOptions(settings))]);
