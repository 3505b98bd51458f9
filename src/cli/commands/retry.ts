import { defineCommand } from '../command.js';
import { MailqError } from '../../errors.js';
import { decimal, ids, name, uuid } from '../options.js';

export const retryCommand = defineCommand({
  command: 'retry <ids..>',
  describe: 'Move failed jobs back onto their queue (ids, or "all")',
  builder: (yargs) =>
    yargs
      .positional('ids', ids('<ids>', { all: true, demandOption: true, describe: 'Failed job ids, or all' }))
      .option('queue', name('--queue', { what: 'queue', describe: 'Only failed jobs of this queue' }))
      .option('batch', uuid('--batch', { describe: 'Only failed jobs of this batch (e.g. retry all --batch <id>)' }))
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const mq = await context.mailq();
    const given = argv.ids as Array<number | 'all'>;
    const result = await mq.failed.retry(given[0] === 'all' ? 'all' : (given as number[]), { queue: argv.queue, batchId: argv.batch });
    if (argv.json) context.output.out(JSON.stringify(result));
    else context.output.out(`Retried ${result.retried} failed job${result.retried === 1 ? '' : 's'}.`);
    for (const { id, heldBy } of argv.json ? [] : result.alreadyQueued) {
      context.output.out(`Failed job ${id} is already queued: job ${heldBy} holds its unique key (removed from failed jobs).`);
    }
    if (result.missing.length > 0) throw new MailqError(`no failed job with id ${result.missing.join(', ')}`);
  },
});

export const forgetCommand = defineCommand({
  command: 'forget <ids..>',
  describe: 'Delete failed jobs by id',
  builder: (yargs) => yargs.positional('ids', ids('<ids>', { demandOption: true, describe: 'Failed job ids' })),
  async run(context, argv) {
    const ids = argv.ids as number[];
    const forgotten = await (await context.mailq()).failed.forget(ids);
    if (forgotten < ids.length) throw new MailqError(`forgot ${forgotten} of ${ids.length}: some ids are not failed jobs`);
    context.output.out(`Forgot ${forgotten} failed job${forgotten === 1 ? '' : 's'}.`);
  },
});

export const flushCommand = defineCommand({
  command: 'flush',
  describe: 'Delete all failed jobs (or those older than --hours)',
  builder: (yargs) =>
    yargs
      .option('hours', decimal('--hours', { min: 0, max: 1_000_000, describe: 'Only those that failed more than this many hours ago' }))
      .option('queue', name('--queue', { what: 'queue', describe: 'Only this queue' })),
  async run(context, argv) {
    const flushed = await (await context.mailq()).failed.flush({ hours: argv.hours, queue: argv.queue });
    context.output.out(`Flushed ${flushed} failed job${flushed === 1 ? '' : 's'}.`);
  },
});
