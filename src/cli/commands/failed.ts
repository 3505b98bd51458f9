import { defineCommand } from '../command.js';
import { formatTime, json, table, truncate } from '../output.js';
import { integer, name } from '../options.js';

/** How many rows a listing prints at most. */
export const MAX_LIST_LIMIT = 10_000;

export const failedCommand = defineCommand({
  command: 'failed',
  describe: 'List failed jobs, newest first',
  builder: (yargs) =>
    yargs
      .option('queue', name('--queue', { what: 'queue', describe: 'Only this queue' }))
      .option('limit', integer('--limit', { min: 1, max: MAX_LIST_LIMIT, default: 50, describe: 'How many to show' }))
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const mq = await context.mailq();
    const jobs = await mq.failed.list({ queue: argv.queue, limit: argv.limit });
    if (argv.json) return void context.output.out(json(jobs));
    if (jobs.length === 0) return void context.output.out('No failed jobs.');
    const total = await mq.failed.count(argv.queue);
    context.output.out(
      table(
        ['id', 'queue', 'job', 'attempts', 'failed at', 'reason'],
        jobs.map((job) => [job.id, job.queue, job.name, job.attempts, formatTime(job.failedAt), truncate(job.reason, 70)]),
      ),
    );
    if (total > jobs.length) context.output.out(`Showing ${jobs.length} of ${total} failed jobs (--limit to see more).`);
  },
});

export const failedShowCommand = defineCommand({
  command: 'failed:show <id>',
  describe: 'Show one failed job: payload and full exception',
  builder: (yargs) => yargs.positional('id', integer('<id>', { min: 1, demandOption: true })).option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const job = await (await context.mailq()).failed.show(argv.id as number);
    if (argv.json) return void context.output.out(json(job));
    context.output.out(
      [
        `id:        ${job.id}`,
        `uuid:      ${job.uuid}`,
        `queue:     ${job.queue}`,
        `job:       ${job.name}`,
        `attempts:  ${job.attempts}${job.maxAttempts ? ` of ${job.maxAttempts}` : ''}`,
        ...(job.uniqueKey ? [`unique:    ${job.uniqueKey}`] : []),
        ...(job.batchId ? [`batch:     ${job.batchId}`] : []),
        `failed at: ${formatTime(job.failedAt)}`,
        `payload:   ${JSON.stringify(job.payload)}`,
        'exception:',
        job.exception,
      ].join('\n'),
    );
  },
});
