import { fileURLToPath } from 'node:url';
import { defineCommand } from '../command.js';
import type { CommandContext } from '../context.js';
import { workerOptionsFromSettings } from '../../worker/from-settings.js';
import type { WorkerStopReason } from '../../worker/events.js';
import { childStopWaitMs, WORKER_EXIT } from '../../supervisor/protocol.js';
import { followSupervisor, supervisedIdentity, type SupervisedIdentity } from '../../supervisor/supervised-child.js';
import { handleSupervisorSignals } from '../../supervisor/signals.js';
import { Supervisor } from '../../supervisor/supervisor.js';
import { checkMetricsFlags, serveWorkerMetrics, type WorkerMetricsFlags } from '../worker-metrics.js';

/** Exit codes of `mailq work`: a supervisor (ours, systemd, Supervisor) restarts on any of them. */
export const WORK_EXIT = { ...WORKER_EXIT, forced: 130 } as const;

/** The CLI entry the supervisor forks for each worker process (from dist/src/cli/commands/). */
const MAILQ_BIN = fileURLToPath(new URL('../../../../bin/mailq.js', import.meta.url));

export const workCommand = defineCommand({
  command: 'work',
  describe: 'Run workers: one in this process, or --processes=N under a supervisor',
  builder: (yargs) =>
    yargs
      .option('queue', { type: 'string', describe: 'Queues to work, in priority order: a,b', default: undefined })
      .option('concurrency', { type: 'number', describe: 'Jobs run at once per process' })
      .option('prefetch', { type: 'number', describe: 'Jobs claimed ahead of free slots per process, so a freed slot starts the next at once' })
      .option('processes', { type: 'number', describe: 'Worker processes under one supervisor (restarts, recycling, graceful stop)' })
      .option('supervise', { type: 'boolean', describe: 'Use the supervisor even for one process' })
      .option('tries', { type: 'number', describe: 'Attempts per job, unless the job sets its own' })
      .option('timeout', { type: 'string', describe: 'Per-attempt timeout (120, 120s, 2m)' })
      .option('backoff', { type: 'string', describe: 'Delays between attempts: 60,120,300 or exp:1s:10m' })
      .option('sleep', { type: 'string', describe: 'Pause between polls when nothing is due' })
      .option('max-jobs', { type: 'number', describe: 'Recycle a worker process after this many jobs' })
      .option('max-time', { type: 'string', describe: 'Recycle a worker process after running this long' })
      .option('memory', { type: 'string', describe: 'Recycle a worker process above this RSS (128MB; a bare number is MB)' })
      .option('stop-wait', { type: 'string', describe: 'On SIGTERM, how long running jobs may finish before they are put back' })
      .option('timeout-grace', { type: 'string', describe: 'How long a handler may ignore its timeout before its process recycles (default 10s)' })
      .option('heartbeat', { type: 'string', describe: 'How often workers report in and read pause/restart signals (default 5s)' })
      .option('once', { type: 'boolean', describe: 'Run one job, then exit' })
      .option('stop-when-empty', { type: 'boolean', describe: 'Exit when no job is due' })
      .option('jobs', { type: 'string', array: true, describe: 'Modules that export job definitions' })
      .option('metrics-port', { type: 'number', describe: 'Serve this worker process’s Prometheus /metrics on this port' })
      .option('metrics-host', { type: 'string', describe: 'Address for --metrics-port (default 127.0.0.1; others need MAILQ_DASHBOARD_TOKEN)' })
      .option('hostname', { type: 'string', describe: "The host name shown in mailq status and in worker ids (env MAILQ_HOSTNAME; default: the machine's)" }),
  settings: (argv) => ({
    jobs: argv.jobs,
    worker: {
      queues: argv.queue,
      concurrency: argv.concurrency,
      prefetch: argv.prefetch,
      processes: argv.processes,
      tries: argv.tries,
      timeout: argv.timeout,
      backoff: argv.backoff,
      sleep: argv.sleep,
      maxJobs: argv['max-jobs'],
      maxTime: argv['max-time'],
      memory: argv.memory,
      stopWait: argv['stop-wait'],
      heartbeat: argv.heartbeat,
      timeoutGrace: argv['timeout-grace'],
      once: argv.once,
      stopWhenEmpty: argv['stop-when-empty'],
      hostname: argv.hostname,
    },
  }),
  run: (context, argv) => {
    const identity = supervisedIdentity();
    if (identity) return runSupervisedWorker(context, identity);
    const supervise = context.settings.worker.processes > 1 || Boolean(argv.supervise);
    checkMetricsFlags(argv, supervise);
    if (supervise) return runSupervisor(context);
    return runWorkerInProcess(context, argv);
  },
});

/** One worker in this process; SIGTERM/SIGINT stop it gracefully, a second signal exits at once. */
export async function runWorkerInProcess(context: CommandContext, metrics: WorkerMetricsFlags = {}): Promise<number> {
  const mq = await context.mailq();
  await assertSchema(context);
  const worker = mq.worker(workerOptionsFromSettings(context.settings.worker));
  const metricsServer = await serveWorkerMetrics(context, mq, worker, metrics);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      context.logger.warn({ signal }, 'second signal: exiting now; unfinished jobs return when their lease expires');
      process.exit(WORK_EXIT.forced);
    }
    void worker.stop('signal');
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    return exitCodeFor(await worker.run());
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await metricsServer?.close();
  }
}

/** A worker process under `mailq work --processes=N`: its supervisor names it and tells it when to stop. */
async function runSupervisedWorker(context: CommandContext, identity: SupervisedIdentity): Promise<number> {
  const mq = await context.mailq();
  const settings = context.settings.worker;
  const worker = mq.worker({
    ...workerOptionsFromSettings(settings),
    workerId: identity.workerId,
    supervisorId: identity.supervisorId,
    stopWait: `${childStopWaitMs(settings.stopWait)}ms`,
  });
  const unfollow = followSupervisor(worker, context.logger);
  try {
    return exitCodeFor(await worker.run());
  } finally {
    unfollow();
  }
}

/**
 * `--processes=N`: this process only supervises. It loads the settings and job modules first,
 * so a bad config fails here once instead of in N crash-looping children.
 */
async function runSupervisor(context: CommandContext): Promise<number> {
  const mq = await context.mailq();
  await assertSchema(context);
  const settings = context.settings.worker;
  const supervisor = new Supervisor(mq.knex, mq.tables, context.logger, {
    processes: settings.processes,
    command: { modulePath: MAILQ_BIN, args: [...context.invocation.argv] },
    queues: settings.queues,
    concurrency: settings.concurrency,
    stopWait: `${settings.stopWait}ms`,
    heartbeat: `${settings.heartbeat}ms`,
    hostname: settings.hostname,
  });
  const unhook = handleSupervisorSignals({
    stop: (signal) => {
      context.logger.info({ signal }, 'stopping (a second signal kills the workers at once)');
      void supervisor.stop();
    },
    force: () => void supervisor.forceStop(),
    reload: () => void supervisor.reload(),
  });
  try {
    const end = await supervisor.run();
    return end === 'forced' ? WORK_EXIT.forced : WORK_EXIT.ok;
  } finally {
    unhook();
  }
}

/** A missing table fails here with "run `mailq migrate` first", not later in a loop. */
async function assertSchema(context: CommandContext): Promise<void> {
  const { knex, tables } = await context.mailq();
  await knex.raw('SELECT 1 FROM ??, ?? LIMIT 0', [tables.jobs, tables.workers]);
}

function exitCodeFor(reason: WorkerStopReason): number {
  return reason === 'stuck-job' ? WORK_EXIT.stuckJob : WORK_EXIT.ok;
}
