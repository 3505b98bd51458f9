// The mailbox sync as the CLI runs it: configured from settings (mailq.config.js `mailbox` and `tws`,
// MAILQ_TWS_URL, MAILQ_TWS_TOKEN, …) and enabled only where those settings enable it.
import { planToOption } from '../backoff.js';
import type { MailboxSettings, MailqSettings } from '../config.js';
import { ConfigError } from '../errors.js';
import type { JobDefinition } from '../job.js';
import type { Mailq } from '../mailq.js';
import { parseRate } from '../ratelimit/rate.js';
import type { RateLimitOption } from '../ratelimit/rate-limit.js';
import { mailboxSyncJob, TWS_RATE_LIMIT_KEY, type MailboxSyncJobOptions } from './job.js';
import { MailboxSync, TWS_NOT_CONFIGURED } from './sync.js';
import { mailboxTables, type MailboxTables } from './tables.js';

/** The mailbox settings, or a clear error where the add-on is not enabled. */
export function mailboxSettings(settings: MailqSettings): MailboxSettings {
  if (!settings.mailbox) throw new ConfigError('the mailbox sync is not enabled: add `mailbox: {}` to mailq.config.js or pass --mailbox');
  return settings.mailbox;
}

/** The mailbox tables of this queue, with the names an app chose (mailbox.taxpayersTable / messagesTable). */
export function mailboxTablesFor(mq: Mailq, settings: MailqSettings): MailboxTables {
  const { taxpayersTable, messagesTable } = mailboxSettings(settings);
  return mailboxTables(mq, { taxpayers: taxpayersTable, mailboxMessages: messagesTable });
}

const syncs = new WeakMap<Mailq, MailboxSync>();

/** One MailboxSync per queue instance, reaching TWS as the settings say. */
export function mailboxSyncFor(mq: Mailq, settings: MailqSettings): MailboxSync {
  let sync = syncs.get(mq);
  if (!sync) {
    const { url, token, requestTimeout } = settings.tws;
    const tws = url && token ? { url, token, requestTimeoutMs: requestTimeout } : undefined;
    sync = new MailboxSync({ knex: mq.knex, tables: mailboxTablesFor(mq, settings), tws, logger: mq.logger });
    syncs.set(mq, sync);
  }
  return sync;
}

/** The job's queue, tries, backoff and timeout from settings.mailbox (validated milliseconds). */
export function mailboxJobOptions(settings: MailqSettings): MailboxSyncJobOptions {
  const { queue, tries, backoff, timeout } = mailboxSettings(settings);
  const { url, token } = settings.tws;
  const preflight = () => {
    if (!url || !token) throw new ConfigError(TWS_NOT_CONFIGURED);
  };
  return { queue, tries, backoff: planToOption(backoff), timeout: `${timeout}ms`, rateLimit: twsRateLimit(settings.tws.rateLimit), preflight };
}

/** `tws.rateLimit` (MAILQ_TWS_RATE_LIMIT, e.g. `100/min`) as the job's shared rate limit; `off` for none. */
export function twsRateLimit(text: string): RateLimitOption | undefined {
  if (text.trim().toLowerCase() === 'off') return undefined;
  const { limit, perMs } = parseRate(text);
  return { key: TWS_RATE_LIMIT_KEY, limit, per: `${perMs}ms` };
}

/** The sync job, for a process whose queue opens later: the job reaches its MailboxSync on first run. */
export function mailboxJobFor(settings: MailqSettings, mailq: () => Promise<Mailq>): JobDefinition {
  return mailboxSyncJob(async () => mailboxSyncFor(await mailq(), settings), mailboxJobOptions(settings)) as JobDefinition;
}
