import { defineCommand } from '../command.js';
import { MailqError } from '../../errors.js';

export const dispatchCommand = defineCommand({
  command: 'dispatch <job> [payload]',
  describe: 'Enqueue one job by name with a JSON payload',
  builder: (yargs) =>
    yargs
      .positional('job', { type: 'string', demandOption: true })
      .positional('payload', { type: 'string', default: '{}', describe: 'JSON payload' })
      .option('queue', { type: 'string' })
      .option('delay', { type: 'string', describe: 'Run no earlier than this from now (30s, 5m)' })
      .option('priority', { type: 'number', describe: 'Lower runs first; default 0' })
      .option('unique', { type: 'string', describe: 'Skip if a job of this type with this key is pending or running' })
      .option('jobs', { type: 'string', array: true, describe: 'Modules that export job definitions (to validate the payload)' })
      .option('json', { type: 'boolean', default: false }),
  settings: (argv) => ({ jobs: argv.jobs }),
  async run(context, argv) {
    let payload: unknown;
    try {
      payload = JSON.parse(argv.payload ?? '{}');
    } catch (error) {
      throw new MailqError(`payload is not valid JSON: ${(error as Error).message}`, { exitCode: 2 });
    }
    const mq = await context.mailq();
    const job = await mq.dispatch(argv.job, payload, { queue: argv.queue, delay: argv.delay, priority: argv.priority, unique: argv.unique });
    if (argv.json) return context.output.out(JSON.stringify(job));
    context.output.out(job.skipped ? `Skipped ${argv.job}: job ${job.id} with the same unique key is pending or running.` : `Dispatched ${argv.job} as job ${job.id} on queue ${job.queue}.`);
  },
});
