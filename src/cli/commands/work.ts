import { defineCommand } from '../command.js';
import type { CommandContext } from '../context.js';
import { workerOptionsFromSettings } from '../../worker/from-settings.js';
import type { WorkerStopReason } from '../../worker/worker.js';

/** Exit codes of `mailq work`: a supervisor (ours, systemd, Supervisor) restarts on any of them. */
export const WORK_EXIT = { ok: 0, stuckJob: 70 } as const;

export const workCommand = defineCommand({
  command: 'work',
  describe: 'Run a worker: claim and run jobs until stopped',
  builder: (yargs) =>
    yargs
      .option('queue', { type: 'string', describe: 'Queues to work, in priority order: a,b', default: undefined })
      .option('concurrency', { type: 'number', describe: 'Jobs run at once per process' })
      .option('processes', { type: 'number', describe: 'Worker processes under one supervisor' })
      .option('tries', { type: 'number', describe: 'Attempts per job, unless the job sets its own' })
      .option('timeout', { type: 'string', describe: 'Per-attempt timeout (120, 120s, 2m)' })
      .option('backoff', { type: 'string', describe: 'Delays between attempts: 60,120,300 or exp:1s:10m' })
      .option('sleep', { type: 'string', describe: 'Pause between polls when nothing is due' })
      .option('max-jobs', { type: 'number', describe: 'Stop after this many jobs' })
      .option('max-time', { type: 'string', describe: 'Stop after running this long' })
      .option('memory', { type: 'string', describe: 'Recycle a worker process above this RSS (128MB)' })
      .option('stop-wait', { type: 'string', describe: 'On SIGTERM, how long running jobs may finish' })
      .option('once', { type: 'boolean', describe: 'Run one job, then exit' })
      .option('stop-when-empty', { type: 'boolean', describe: 'Exit when no job is due' })
      .option('jobs', { type: 'string', array: true, describe: 'Modules that export job definitions' }),
  settings: (argv) => ({
    jobs: argv.jobs,
    worker: {
      queues: argv.queue,
      concurrency: argv.concurrency,
      processes: argv.processes,
      tries: argv.tries,
      timeout: argv.timeout,
      backoff: argv.backoff,
      sleep: argv.sleep,
      maxJobs: argv['max-jobs'],
      maxTime: argv['max-time'],
      memory: argv.memory,
      stopWait: argv['stop-wait'],
      once: argv.once,
      stopWhenEmpty: argv['stop-when-empty'],
    },
  }),
  run: (context) => runWorkerInProcess(context),
});

/** One worker in this process; SIGTERM/SIGINT stop it gracefully, a second signal exits at once. */
export async function runWorkerInProcess(context: CommandContext): Promise<number> {
  const mq = await context.mailq();
  await mq.knex.raw('SELECT 1 FROM ?? LIMIT 0', [mq.tables.jobs]);
  const worker = mq.worker(workerOptionsFromSettings(context.settings.worker));
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      context.logger.warn({ signal }, 'second signal: exiting now; unfinished jobs return when their lease expires');
      process.exit(130);
    }
    void worker.stop('signal');
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    const reason: WorkerStopReason = await worker.run();
    return reason === 'stuck-job' ? WORK_EXIT.stuckJob : WORK_EXIT.ok;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
