import { defineCommand } from '../command.js';
import { InvalidJobError } from '../../errors.js';
import { duration, integer, json, name, text } from '../options.js';

export const dispatchCommand = defineCommand({
  command: 'dispatch <job> [payload]',
  describe: 'Enqueue one job by name with a JSON payload',
  builder: (yargs) =>
    yargs
      .positional('job', name('<job>', { what: 'job name', demandOption: true }))
      .positional('payload', json('[payload]', { default: '{}', describe: 'JSON payload' }))
      .option('queue', name('--queue', { what: 'queue' }))
      .option('delay', duration('--delay', { describe: 'Run no earlier than this from now (30s, 5m)' }))
      .option('priority', integer('--priority', { min: -32_768, max: 32_767, describe: 'Lower runs first; default 0' }))
      .option('unique', text('--unique', { maxLength: 10_000, describe: 'Skip if a job of this type with this key is pending or running' }))
      .option('jobs', { type: 'string', array: true, describe: 'Modules that export job definitions (to validate the payload)' })
      .option('force', { type: 'boolean', default: false, describe: 'Dispatch a job no loaded module defines (for another service\'s workers): its payload is not checked' })
      .option('json', { type: 'boolean', default: false }),
  settings: (argv) => ({ jobs: argv.jobs }),
  async run(context, argv) {
    const mq = await context.mailq();
    const name = argv.job as string;
    // A name nobody here defines is most often a typo: it would queue a job that fails on the worker.
    if (!mq.registry.get(name) && !argv.force) {
      throw new InvalidJobError(`no loaded module defines job '${name}': load its module with --jobs <module> (or the config file's jobs), or pass --force to dispatch it for another service's workers`);
    }
    const job = await mq.dispatch(name, argv.payload, { queue: argv.queue, delay: argv.delay, priority: argv.priority, unique: argv.unique });
    if (argv.json) return context.output.out(JSON.stringify(job));
    context.output.out(job.skipped ? `Skipped ${name}: job ${job.id} with the same unique key is pending or running.` : `Dispatched ${name} as job ${job.id} on queue ${job.queue}.`);
  },
});
