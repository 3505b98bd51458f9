import { describeBackoff } from '../../backoff.js';
import { formatDuration, parseDuration } from '../../duration.js';
import { MailqError } from '../../errors.js';
import { estimateDurationMs, runningWorkerCapacity, type WorkerCapacity } from '../../mailbox/capacity.js';
import { groupFailures, syncMailboxesDirectly, type DirectSyncResult } from '../../mailbox/direct.js';
import { dispatchMailboxSync, selectTaxpayers, type QueueSyncResult } from '../../mailbox/dispatch.js';
import { mailboxSettings, mailboxSyncFor, mailboxTablesFor, twsRateLimit } from '../../mailbox/from-settings.js';
import { resolveRateLimit } from '../../ratelimit/rate-limit.js';
import type { FailureReason, TaxpayerFilter } from '../../mailbox/store.js';
import { describeFailureCode, shortFailureMessage } from '../../mailbox/sync.js';
import type { Mailq } from '../../mailq.js';
import { defineCommand } from '../command.js';
import type { CommandContext } from '../context.js';
import { json, summaryTable, table, truncate } from '../output.js';
import { createProgress } from '../progress.js';
import { LIMITS } from '../../config.js';
import { backoff, duration, integer } from '../options.js';

/** What TWS took per taxpayer in the 2024 sequential runs; used until this database has its own figure. */
const ASSUMED_MS_PER_TAXPAYER = 1_000;

export const syncMailboxCommand = defineCommand({
  command: 'sync-mailbox',
  describe: 'Sync taxpayers\' tax mailboxes from TWS: --queue dispatches one job each; without it, syncs here and now',
  builder: (yargs) =>
    yargs
      .option('queue', { type: 'boolean', default: false, describe: 'Dispatch one job per taxpayer to the mailbox queue (workers run them)' })
      .option('taxpayer', integer('--taxpayer', { min: 1, array: true, describe: 'Only these taxpayer ids' }))
      .option('team', integer('--team', { min: 1, array: true, describe: 'Only the taxpayers of these teams' }))
      .option('dry-run', { type: 'boolean', default: false, describe: 'Count and show what would happen; write nothing, call no TWS' })
      .option('concurrency', integer('--concurrency', { min: 1, max: LIMITS.concurrency, describe: 'Direct mode: taxpayers synced at once in this process (default 1)' }))
      .option('tries', integer('--tries', { min: 1, max: LIMITS.tries, describe: 'Attempts per taxpayer (default: mailbox.tries, 3)' }))
      .option('timeout', duration('--timeout', { timer: true, describe: 'With --queue: per-attempt timeout (default: mailbox.timeout, 120s)' }))
      .option('backoff', backoff('--backoff', { describe: 'With --queue: delays between attempts (default: mailbox.backoff, 60,120,300)' }))
      .option('json', { type: 'boolean', default: false, describe: 'Print the summary as JSON' })
      .check((argv) => {
        if (argv.queue && argv.concurrency !== undefined) throw new Error('--concurrency is for direct mode; with --queue, workers set theirs (mailq work --concurrency)');
        if (!argv.queue && (argv.timeout !== undefined || argv.backoff !== undefined)) throw new Error('--timeout and --backoff apply to queued jobs: add --queue');
        return true;
      }),
  settings: (argv) => ({ mailbox: { tries: argv.tries, timeout: argv.timeout, backoff: argv.backoff } }),
  async run(context, argv) {
    const mq = await context.mailq();
    const filter: TaxpayerFilter = { taxpayerIds: argv.taxpayer as number[] | undefined, teamIds: argv.team as number[] | undefined };
    if (argv.queue) return queueMode(context, mq, filter, argv);
    return directMode(context, mq, filter, argv);
  },
});

interface ModeFlags {
  'dry-run': boolean;
  json: boolean;
  concurrency?: number;
  tries?: number;
  timeout?: string;
  backoff?: string;
}

async function queueMode(context: CommandContext, mq: Mailq, filter: TaxpayerFilter, argv: ModeFlags): Promise<number> {
  let progress: ReturnType<typeof createProgress> | undefined;
  const result = await dispatchMailboxSync(mq, {
    ...filter,
    tables: mailboxTablesFor(mq, context.settings),
    dryRun: argv['dry-run'],
    // No overrides here: the built-in job is defined from these same settings, flags included.
    onProgress: (written, total) => {
      progress ??= createProgress(context.output, 'Dispatching', total);
      progress.update(written);
    },
  });
  progress?.stop();
  const capacity = await runningWorkerCapacity(mq.knex, mq.tables, result.queue);
  const perTaxpayerMs = await mailboxSyncFor(mq, context.settings).store.meanSyncDurationMs(filter);
  const estimate = withRateLimit(describeEstimate(result.taxpayers, perTaxpayerMs, capacity, result.queue), result.taxpayers, context.settings.tws.rateLimit);
  if (argv.json) {
    context.output.out(json({ ...result, workers: capacity ?? null, perTaxpayerMs: perTaxpayerMs ?? null, estimatedMs: estimate.ms ?? null }));
    return 0;
  }
  if (result.taxpayers === 0) {
    context.output.out('No active taxpayers to sync: nothing dispatched.');
    return 0;
  }
  context.output.out(summaryTable(queueSummary(result, capacity, estimate.text)));
  if (!result.dryRun && capacity?.workers === 0) context.output.out(`No worker serves '${result.queue}': start some with mailq work --queue=${result.queue}`);
  if (result.batchId) context.output.out(`Follow it: mailq batch ${result.batchId} --watch`);
  return 0;
}

function queueSummary(result: QueueSyncResult, capacity: WorkerCapacity | undefined, estimate: string): Array<[string, string | number]> {
  return [
    ['Jobs dispatched', result.dryRun ? `0 (dry run: ${result.taxpayers} would be)` : result.dispatched],
    ...(result.skipped > 0 ? [['Skipped', `${result.skipped} (a sync of theirs is still pending or running)`] as [string, string]] : []),
    ...(result.batchId ? [['Batch', result.batchId] as [string, string]] : []),
    ['Queue', result.queue],
    ['Tries', result.tries],
    ['Timeout', formatDuration(result.timeoutMs)],
    ['Backoff', describeBackoff(result.backoff)],
    ['Workers running', capacity ? `${capacity.workers} (${capacity.slots} job${capacity.slots === 1 ? '' : 's'} at once)` : 'unknown (this database does not track workers)'],
    ['Estimated time', estimate],
  ];
}

/** The shared TWS rate limit is a floor under any estimate: 3,025 taxpayers at 100/min take 31 minutes however many workers run. */
function withRateLimit(estimate: { text: string; ms?: number }, jobs: number, rateLimit: string): { text: string; ms?: number } {
  const limit = twsRateLimit(rateLimit);
  if (!limit || jobs === 0) return estimate;
  const floorMs = (Math.ceil(jobs / limit.limit) - 1) * parseDuration(limit.per);
  if (floorMs <= 0 || (estimate.ms !== undefined && estimate.ms >= floorMs)) return estimate;
  return { ms: floorMs, text: `at least ${formatDuration(floorMs)}: TWS rate limit ${rateLimit} (MAILQ_TWS_RATE_LIMIT)${estimate.ms === undefined ? `; ${estimate.text}` : ''}` };
}

/** Wall time for the running workers, from this database's recent sync times (or TWS's usual second). */
function describeEstimate(jobs: number, measuredMs: number | undefined, capacity: WorkerCapacity | undefined, queue: string): { text: string; ms?: number } {
  const perJobMs = measuredMs ?? ASSUMED_MS_PER_TAXPAYER;
  const basis = measuredMs === undefined ? `~${formatDuration(perJobMs)} per taxpayer, assumed` : `${formatDuration(perJobMs)} per taxpayer, measured`;
  if (capacity && capacity.slots > 0) {
    const ms = estimateDurationMs(jobs, perJobMs, capacity.slots);
    return { ms, text: `~${formatDuration(ms)} (${jobs} × ${basis}, ${capacity.slots} at once)` };
  }
  const one = formatDuration(estimateDurationMs(jobs, perJobMs, 1));
  const ten = formatDuration(estimateDurationMs(jobs, perJobMs, 10));
  const prefix = capacity ? `no worker is running on '${queue}'` : 'unknown';
  return { text: `${prefix}; at ${basis}: ${one} one at a time, ${ten} with 10 at once` };
}

async function directMode(context: CommandContext, mq: Mailq, filter: TaxpayerFilter, argv: ModeFlags): Promise<number> {
  const sync = mailboxSyncFor(mq, context.settings);
  const ids = await selectTaxpayers(sync.store, filter);
  const concurrency = argv.concurrency ?? 1;
  if (argv['dry-run'] || ids.length === 0) {
    const perTaxpayerMs = (await sync.store.meanSyncDurationMs(filter)) ?? ASSUMED_MS_PER_TAXPAYER;
    const estimateMs = estimateDurationMs(ids.length, perTaxpayerMs, concurrency);
    if (argv.json) context.output.out(json({ taxpayers: ids.length, concurrency, dryRun: argv['dry-run'], estimatedMs: estimateMs }));
    else if (ids.length === 0) context.output.out('No active taxpayers to sync.');
    else context.output.out(summaryTable([['Taxpayers', `${ids.length} (dry run: nothing synced)`], ['Concurrency', concurrency], ['Estimated time', `~${formatDuration(estimateMs)}`]]));
    return 0;
  }
  try {
    sync.tws();
  } catch (error) {
    throw new MailqError((error as Error).message, { exitCode: 2 });
  }

  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const progress = createProgress(context.output, 'Syncing', ids.length);
  let result: DirectSyncResult;
  try {
    const limit = twsRateLimit(context.settings.tws.rateLimit);
    result = await syncMailboxesDirectly(sync, ids, {
      concurrency,
      // Direct mode shares the workers' TWS limit: a run here never adds to a queue run's requests.
      beforeRequest: limit && (() => mq.rateLimits.take(resolveRateLimit(limit), 1, stop.signal)),
      tries: mailboxSettings(context.settings).tries,
      signal: stop.signal,
      onProgress: ({ done, synced, failed }) => progress.update(done, `synced ${synced}, failed ${failed}`),
    });
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const reasons = groupFailures(result.failures);
  if (argv.json) {
    context.output.out(json({ ...result, concurrency, reasons }));
  } else {
    context.output.out(summaryTable(directSummary(result, concurrency)));
    if (reasons.length > 0) context.output.out(failureTable(reasons, result));
  }
  return result.failed > 0 || result.notStarted > 0 ? 1 : 0;
}

function directSummary(result: DirectSyncResult, concurrency: number): Array<[string, string | number]> {
  const rows: Array<[string, string | number]> = [
    ['Taxpayers', result.total],
    ['Synced', result.synced],
    ['Failed', result.failed],
    ['Messages', result.messages],
    ['Time', formatDuration(result.elapsedMs)],
    ['Concurrency', concurrency],
  ];
  if (result.skipped > 0) rows.splice(2, 0, ['Skipped (inactive)', result.skipped]);
  if (result.notStarted > 0) rows.push(['Not started (interrupted)', result.notStarted]);
  return rows;
}

export function failureTable(reasons: readonly FailureReason[], direct?: DirectSyncResult): string {
  return table(
    ['failure', 'taxpayers', 'example'],
    reasons.map((reason) => {
      const ids = direct?.failures.filter((failure) => failure.code === reason.code).map((failure) => failure.taxpayerId) ?? [];
      const who = ids.length ? `${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', …' : ''}: ` : '';
      return [describeFailureCode(reason.code), reason.count, truncate(`${who}${shortFailureMessage(reason.example)}`, 90)];
    }),
  );
}
