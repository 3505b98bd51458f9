import { parseBackoffFlag, type BackoffOption } from '../../backoff.js';
import { formatDuration, parseDuration } from '../../duration.js';
import { redactUrl } from '../../db/url.js';
import { MailqError } from '../../errors.js';
import { runDemo, type DemoResult } from '../../mailbox/demo.js';
import { mailboxSettings } from '../../mailbox/from-settings.js';
import { parseRate, type Rate } from '../../ratelimit/rate.js';
import { defineCommand } from '../command.js';
import { json, summaryTable, table } from '../output.js';
import { createProgress, type Progress } from '../progress.js';
import { failureTable } from './sync-mailbox.js';
import { LIMITS } from '../../config.js';
import { backoff as backoffOption, decimal, duration, integer, rate } from '../options.js';
import { startDashboard } from '../../dashboard/server.js';

export const demoCommand = defineCommand({
  command: 'demo',
  describe: 'Run the nightly mailbox sync end to end against a fake TWS and compare queue mode with direct mode',
  databaseOptional: true,
  builder: (yargs) =>
    yargs
      .option('taxpayers', integer('--taxpayers', { min: 1, max: 1_000_000, default: 3025, describe: 'Taxpayers to seed and sync' }))
      .option('latency', duration('--latency', { timer: true, default: '1s', describe: 'Fake TWS time per request' }))
      .option('concurrency', integer('--concurrency', { min: 1, max: LIMITS.concurrency, default: 10, describe: 'Jobs at once per worker process' }))
      .option('processes', integer('--processes', { min: 1, max: 64, default: 1, describe: 'Worker processes (1: a worker inside this process)' }))
      .option('error-rate', decimal('--error-rate', { min: 0, max: 1, default: 0.02, describe: 'Share of TWS requests that fail with a transient 5xx' }))
      .option('rate-limit', rate('--rate-limit', { parse: parseRate, describe: 'Make the fake TWS answer 429 past this rate (e.g. 600/min)' }))
      .option('tries', integer('--tries', { min: 1, max: LIMITS.tries, describe: 'Attempts per taxpayer (default: mailbox.tries, 3)' }))
      .option('backoff', backoffOption('--backoff', { default: '5,10,30', describe: 'Delays between attempts; shorter than the production 60,120,300 so a demo run ends' }))
      .option('keep', { type: 'boolean', default: false, describe: 'Keep the demo tables to inspect them afterwards' })
      .option('json', { type: 'boolean', default: false, describe: 'Print the figures as JSON' })
      .option('dashboard', { type: 'boolean', default: false, describe: 'Serve the dashboard on 127.0.0.1 while the demo runs' })
      .option('dashboard-port', integer('--dashboard-port', { min: 0, max: 65_535, default: 8080, describe: 'Port for --dashboard (0: any free one)' })),
  settings: (argv) => ({ mailbox: { tries: argv.tries } }),
  async run(context, argv) {
    const usage = (message: string) => new MailqError(message, { exitCode: 2 });
    let latencyMs: number;
    let backoff: BackoffOption;
    let rateLimit: Rate | undefined;
    try {
      latencyMs = parseDuration(argv.latency);
      backoff = parseBackoffFlag(argv.backoff);
      rateLimit = argv['rate-limit'] ? parseRate(argv['rate-limit']) : undefined;
    } catch (error) {
      throw usage((error as Error).message);
    }
    const { out } = context.output;
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    let progress: Progress | undefined;
    try {
      const result = await runDemo(
        {
          taxpayers: argv.taxpayers,
          latencyMs,
          concurrency: argv.concurrency,
          processes: argv.processes,
          errorRate: argv['error-rate'],
          rateLimit,
          tries: mailboxSettings(context.settings).tries,
          backoff,
          timeout: `${mailboxSettings(context.settings).timeout}ms`,
          keep: argv.keep,
          databaseUrl: context.settings.databaseUrl || undefined,
          signal: stop.signal,
          onQueueReady: argv.dashboard
            ? async (mq) => {
                const dashboard = await startDashboard(mq, { port: argv['dashboard-port'], logger: context.logger });
                (argv.json ? context.output.err : out)(`Dashboard on ${dashboard.openUrl} while the demo runs`);
                return () => dashboard.close();
              }
            : undefined,
        },
        {
          step: (line) => (argv.json ? context.output.err(line) : out(line)),
          progress: ({ done, total, failed, elapsedMs }) => {
            progress ??= createProgress(context.output, 'Syncing mailboxes', total);
            progress.update(done, `failed ${failed} | ${formatDuration(elapsedMs)}`);
          },
        },
      );
      progress?.stop();
      if (argv.json) out(json(result));
      else printResult(out, result);
      return 0;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
});

function printResult(out: (text: string) => void, result: DemoResult): void {
  const slots = result.concurrency * result.processes;
  const queueLabel = `Queue (${result.concurrency} at once${result.processes > 1 ? ` × ${result.processes} processes` : ''})`;
  const { firstPassMs } = result;
  out('');
  out(`${result.taxpayers} taxpayers at ${formatDuration(result.latencyMs)} of TWS latency each, every one tried once:`);
  out(
    table(
      ['', 'Direct (one after another)', queueLabel],
      [
        ['First pass', `${formatDuration(result.directProjectedMs)} (projected from ${result.directSample})`, `${formatDuration(firstPassMs)} (measured)`],
        ['Per taxpayer', `${precise(result.directMeanMs)} (measured on ${result.directSample})`, `${precise(firstPassMs / result.taxpayers)} (first pass ÷ taxpayers)`],
        ['Speed-up', '1×', `${result.speedUp.toFixed(1)}×  (ideal ${slots}×: ${formatDuration(result.idealMs)})`],
      ],
    ),
  );
  out(retryTail(result, firstPassMs));
  const failedRows = Object.entries(result.failedByAttempts).map(([attempts, count]) => `${count} after ${attempts} attempt${attempts === '1' ? '' : 's'}`);
  out(
    summaryTable([
      ['Synced', result.synced],
      ['Failed', result.failed ? `${result.failed} (${failedRows.join(', ')})` : 0],
      ['Messages stored', result.messages],
      ['One sync in the queue run', `${precise(result.meanSyncMs)} on average`],
      ['Dispatch (bulk insert)', formatDuration(result.dispatchMs)],
      ...(result.batchId ? [['Batch', result.kept ? `${result.batchId} (mailq batch ${result.batchId})` : result.batchId] as [string, string]] : []),
      ['TWS requests', `${result.tws.requests} (${result.tws.serverErrors} transient 5xx, ${result.tws.rateLimited} × 429, ${result.tws.malformed} malformed)`],
      ['Database', result.database],
    ]),
  );
  if (result.reasons.length > 0) {
    out('Why they failed (mailq failed lists each one):');
    out(failureTable(result.reasons));
  }
  if (result.kept) {
    const env = `MAILQ_DATABASE_URL=${redactUrl(result.kept.url)}${result.kept.tablePrefix ? ` MAILQ_TABLE_PREFIX=${result.kept.tablePrefix}` : ''}`;
    out(`Kept the demo tables. Look around: ${env} npx mailq failed`);
  }
}

/** The retries, apart: their backoff is waiting by design, and direct mode's projection has none. */
function retryTail(result: DemoResult, firstPassMs: number): string {
  const policy = `${result.tries} tries, backoff ${result.backoff}`;
  const total = `Queue run in all: ${formatDuration(result.queueMs)}.`;
  if (result.retriesAfterFirstPass === undefined) return `Retry tail: under ${formatDuration(result.pollMs)} (the queue drained within the poll that saw the first pass end; ${policy}). ${total}`;
  if (result.retriesAfterFirstPass === 0) return `Retry tail: none (no job waited for a retry; ${policy}). ${total}`;
  const jobs = `${result.retriesAfterFirstPass} job${result.retriesAfterFirstPass === 1 ? '' : 's'}`;
  return `Retry tail: +${formatDuration(result.queueMs - firstPassMs)} after the first pass for ${jobs} to retry (${policy}). ${total}`;
}

/** Per-taxpayer times differ in the hundredths: 1.04s, not 1s. */
function precise(ms: number): string {
  return ms >= 1_000 && ms < 60_000 ? `${(ms / 1_000).toFixed(2)}s` : formatDuration(ms);
}
