import { defineCommand } from '../command.js';
import { formatTime, json, summaryTable, table, truncate } from '../output.js';
import type { Output } from '../output.js';
import { MailqError } from '../../errors.js';
import { parseDuration } from '../../duration.js';
import type { Batch } from '../../batch/batch.js';
import { followBatch } from '../../batch/store.js';
import { createProgress } from '../progress.js';
import { duration, integer, uuid } from '../options.js';
import { MAX_LIST_LIMIT } from './failed.js';

function progressText(batch: Batch): string {
  return `${batch.processed}/${batch.total} (${batch.progress}%)`;
}

export const batchesCommand = defineCommand({
  command: 'batches',
  describe: 'List batches, newest first',
  builder: (yargs) =>
    yargs
      .option('running', { type: 'boolean', default: false, describe: 'Only batches still running' })
      .option('limit', integer('--limit', { min: 1, max: MAX_LIST_LIMIT, default: 20, describe: 'How many to show' }))
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const batches = await (await context.mailq()).batches.list({ limit: argv.limit, running: argv.running });
    if (argv.json) return context.output.out(json(batches));
    if (batches.length === 0) return context.output.out(argv.running ? 'No running batches.' : 'No batches.');
    context.output.out(
      table(
        ['id', 'name', 'state', 'done', 'pending', 'failed', 'created', 'finished'],
        batches.map((batch) => [batch.id, truncate(batch.name, 30), batch.state, progressText(batch), batch.pending, batch.failed, formatTime(batch.createdAt), formatTime(batch.finishedAt)]),
      ),
    );
  },
});

export const batchCommand = defineCommand({
  command: 'batch <id>',
  describe: 'Show one batch: progress, failures (--watch follows it to the end)',
  builder: (yargs) =>
    yargs
      .positional('id', uuid('<id>', { demandOption: true, describe: 'Batch id' }))
      .option('watch', { type: 'boolean', default: false, describe: 'Follow the batch until it finishes' })
      .option('interval', duration('--interval', { timer: true, default: '1s', describe: 'With --watch: how often to look' }))
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const id = argv.id as string;
    const mq = await context.mailq();
    if (argv.json && !argv.watch) return context.output.out(json(await mq.batches.find(id)));
    const { output } = context;
    let batch = await mq.batches.find(id);
    if (argv.watch && !batch.finishedAt) {
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const view = argv.json ? jsonLines(output) : progressView(output, batch);
      try {
        batch = await followBatch(mq.batches, id, { intervalMs: Math.max(100, parseDuration(argv.interval ?? '1s')), signal: stop.signal, onChange: view.update });
      } finally {
        view.stop();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (argv.json) return;
    } else if (output.isTTY && !batch.finishedAt) {
      const view = progressView(output, batch);
      view.update(batch);
      view.stop();
    }
    output.out(describeBatch(batch));
  },
});

export const batchCancelCommand = defineCommand({
  command: 'batch:cancel <id>',
  describe: 'Cancel a batch: its waiting jobs are removed, running ones finish',
  builder: (yargs) => yargs.positional('id', uuid('<id>', { demandOption: true, describe: 'Batch id' })).option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const id = argv.id as string;
    const { batch, removed, alreadyFinished } = await (await context.mailq()).batches.cancel(id);
    if (argv.json) return context.output.out(json({ removed, alreadyFinished, batch }));
    if (alreadyFinished) throw new MailqError(`batch ${id} had already finished${batch.cancelledAt ? ' (cancelled)' : ''}; nothing to cancel`);
    const running = batch.pending;
    context.output.out(`Cancelled batch ${id}: removed ${removed} waiting job${removed === 1 ? '' : 's'}${running ? `; ${running} running job${running === 1 ? '' : 's'} will finish` : ''}.`);
  },
});

function describeBatch(batch: Batch): string {
  const lines = [
    summaryTable([
      ['id', batch.id],
      ['name', batch.name || '(none)'],
      ['state', batch.state],
      ['done', progressText(batch)],
      ['pending', batch.pending],
      ['failed', batch.failed],
      ['created', formatTime(batch.createdAt)],
      ['finished', formatTime(batch.finishedAt) || '-'],
      ...(batch.cancelledAt ? [['cancelled', formatTime(batch.cancelledAt)] as [string, string]] : []),
    ]),
  ];
  if (batch.failedJobIds.length > 0) {
    const shown = batch.failedJobIds.slice(0, 10);
    lines.push(`Failed jobs (uuid): ${shown.join(', ')}${batch.failedJobIds.length > shown.length ? `, … ${batch.failedJobIds.length - shown.length} more` : ''}`);
  }
  return lines.join('\n');
}

interface View {
  update(batch: Batch): void;
  stop(): void;
}

/** A bar on a terminal, a line per tenth elsewhere (the CLI's one progress display). */
function progressView(output: Output, batch: Batch): View {
  const progress = createProgress(output, batch.name || `batch ${batch.id}`, batch.total);
  return { update: (current) => progress.update(current.processed, `failed ${current.failed}`), stop: () => progress.stop() };
}

function jsonLines(output: Output): View {
  return { update: (batch) => output.out(JSON.stringify(batch)), stop: () => undefined };
}
