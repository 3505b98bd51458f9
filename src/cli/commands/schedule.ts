import { defineCommand } from '../command.js';
import type { CommandContext } from '../context.js';
import { formatTime, json, table } from '../output.js';
import { MailqError } from '../../errors.js';
import { Scheduler, type SlotResult } from '../../schedule/scheduler.js';
import { cliCommandRunner } from '../schedule-runner.js';
import { duration, hostnameOption } from '../options.js';

async function schedulerFor(context: CommandContext, grace?: string): Promise<Scheduler> {
  const entries = context.settings.schedule;
  if (entries.length === 0) throw new MailqError('no schedule: add `schedule: [{ cron, run }]` to mailq.config.js', { exitCode: 2 });
  const mq = await context.mailq();
  return new Scheduler(mq.knex, mq.tables, entries, {
    runner: cliCommandRunner(context.settings, context.loaded.configPath, context.invocation),
    logger: context.logger,
    grace,
    hostname: context.settings.worker.hostname,
    onSlot: (result) => {
      const line = describeSlot(result);
      if (line) context.output.out(line);
    },
  });
}

function describeSlot(result: SlotResult): string | undefined {
  const when = formatTime(result.slot);
  switch (result.outcome) {
    case 'fired':
      return `${when} ${result.run}: ${result.exitCode === 0 ? 'done' : `failed (exit ${result.exitCode})`}${result.batchId ? `, batch ${result.batchId}` : ''}`;
    case 'skipped':
      return `${when} ${result.run}: skipped, ${result.reason}`;
    default:
      return undefined;
  }
}

const graceOption = duration('--grace', { describe: 'How late a slot may still fire (default 5m)' });

export const scheduleRunCommand = defineCommand({
  command: 'schedule:run',
  describe: 'Fire the schedule entries that are due now (run from cron every minute)',
  builder: (yargs) => yargs.option('grace', graceOption).option('hostname', hostnameOption).option('json', { type: 'boolean', default: false }),
  settings: (argv) => ({ worker: { hostname: argv.hostname } }),
  async run(context, argv) {
    const scheduler = await schedulerFor(context, argv.grace);
    const results = await scheduler.runDue();
    if (argv.json) context.output.out(json(results));
    // A failed run fails the cron job too, so cron's mail says so.
    return results.some((result) => result.outcome === 'fired' && result.exitCode !== 0) ? 1 : 0;
  },
});

export const scheduleCommand = defineCommand({
  command: 'schedule',
  describe: 'Run the schedule in the foreground until stopped (one per host, or several: each slot fires once)',
  builder: (yargs) => yargs.option('grace', graceOption).option('hostname', hostnameOption),
  settings: (argv) => ({ worker: { hostname: argv.hostname } }),
  async run(context, argv) {
    const scheduler = await schedulerFor(context, argv.grace);
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    context.logger.info({ entries: scheduler.entries.length }, 'scheduler started');
    try {
      await scheduler.loop(stop.signal);
    } finally {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
    context.logger.info('scheduler stopped');
  },
});

export const scheduleListCommand = defineCommand({
  command: 'schedule:list',
  describe: 'List schedule entries: next slot and last run',
  builder: (yargs) => yargs.option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const overview = await (await schedulerFor(context)).overview();
    if (argv.json) return context.output.out(json(overview));
    context.output.out(
      table(
        ['entry', 'cron', 'timezone', 'run', 'next', 'last run'],
        overview.map(({ key, entry, next, last }) => [
          key === `${entry.cron} ${entry.run}` ? '' : key,
          entry.cron,
          entry.timezone ?? 'UTC',
          entry.run + (entry.withoutOverlapping ? ' (no overlap)' : ''),
          formatTime(next),
          last ? `${formatTime(last.slot)} ${last.status}${last.batchId ? ` batch ${last.batchId}` : ''}` : '-',
        ]),
      ),
    );
  },
});
