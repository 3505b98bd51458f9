import { defineCommand } from '../command.js';
import { formatTime, json } from '../output.js';
import { ALL_QUEUES } from '../../controls/queue-controls.js';
import { formatDuration } from '../../duration.js';
import { MailqError } from '../../errors.js';
import { name, names } from '../options.js';

/** Queues named on the command line, or '*' with --all. */
function targetQueues(argv: { queues?: string[]; all?: boolean }): string[] {
  const queues = argv.queues ?? [];
  if (argv.all && queues.length > 0) throw new MailqError('name queues or pass --all, not both', { exitCode: 2 });
  if (argv.all) return [ALL_QUEUES];
  if (queues.length === 0) throw new MailqError('name a queue (or pass --all)', { exitCode: 2 });
  return queues;
}

const label = (queue: string) => (queue === ALL_QUEUES ? 'every queue' : `'${queue}'`);

export const pauseCommand = defineCommand({
  command: 'pause [queues..]',
  describe: 'Stop workers claiming from these queues (running jobs finish)',
  builder: (yargs) =>
    yargs
      .positional('queues', names('[queues]', { what: 'queue', describe: 'Queue names' }))
      .option('all', { type: 'boolean', default: false, describe: 'Pause every queue' }),
  async run(context, argv) {
    const queues = targetQueues(argv);
    await (await context.mailq()).controls.pause(queues);
    const within = formatDuration(context.settings.worker.heartbeat);
    context.output.out(`Paused ${queues.map(label).join(', ')}: workers stop claiming from it within their heartbeat (${within}); running jobs finish.`);
  },
});

export const resumeCommand = defineCommand({
  command: 'resume [queues..]',
  describe: 'Let workers claim from paused queues again',
  builder: (yargs) =>
    yargs
      .positional('queues', names('[queues]', { what: 'queue', describe: 'Queue names' }))
      .option('all', { type: 'boolean', default: false, describe: 'Resume the pause of every queue (set by pause --all)' }),
  async run(context, argv) {
    const queues = targetQueues(argv);
    const resumed = await (await context.mailq()).controls.resume(queues);
    context.output.out(resumed ? `Resumed ${queues.map(label).join(', ')}.` : `Not paused: ${queues.map(label).join(', ')}.`);
  },
});

export const restartCommand = defineCommand({
  command: 'restart',
  describe: 'Tell every worker, on every host, to finish its current jobs and restart (e.g. after a deploy)',
  builder: (yargs) =>
    yargs
      .option('queue', name('--queue', { what: 'queue', describe: 'Only workers that serve this queue' }))
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const queue = argv.queue ?? ALL_QUEUES;
    const requestedAt = await (await context.mailq()).controls.requestRestart(queue);
    if (argv.json) {
      context.output.out(json({ queue, requestedAt }));
      return;
    }
    const within = formatDuration(context.settings.worker.heartbeat);
    context.output.out(
      `Restart requested at ${formatTime(requestedAt)} for ${label(queue)}: each worker sees it within its heartbeat (${within}), ` +
        'finishes its current jobs and exits; its supervisor (mailq work --processes, systemd, Supervisor) starts a fresh one.',
    );
  },
});

export const clearCommand = defineCommand({
  command: 'clear <queues..>',
  describe: 'Remove the waiting jobs of these queues (due, delayed, in backoff); running jobs finish',
  builder: (yargs) =>
    yargs.positional('queues', names('<queues>', { what: 'queue', demandOption: true, describe: 'Queue names' })).option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const queues = targetQueues({ queues: argv.queues });
    const cleared = await (await context.mailq()).clear(queues);
    if (argv.json) return void context.output.out(json(cleared));
    for (const { queue, removed, cancelledBatches } of cleared) {
      const batches = cancelledBatches.length === 0 ? '' : `; cancelled batch${cancelledBatches.length === 1 ? '' : 'es'} ${cancelledBatches.join(', ')}`;
      context.output.out(`Cleared ${removed} waiting job${removed === 1 ? '' : 's'} from ${label(queue)}${batches}.`);
    }
  },
});
