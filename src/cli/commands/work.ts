import { fileURLToPath } from 'node:url';
import { defineCommand } from '../command.js';
import type { CommandContext } from '../context.js';
import type { Mailq } from '../../mailq.js';
import { workerOptionsFromSettings } from '../../worker/from-settings.js';
import type { WorkerStopReason } from '../../worker/events.js';
import { childStopWaitMs, WORKER_EXIT } from '../../supervisor/protocol.js';
import { followSupervisor, supervisedIdentity, type SupervisedIdentity } from '../../supervisor/supervised-child.js';
import { handleSupervisorSignals } from '../../supervisor/signals.js';
import { Supervisor } from '../../supervisor/supervisor.js';
import { LIMITS } from '../../config.js';
import { backoff, bytes, duration, hostnameOption, integer, names, text } from '../options.js';
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
      .option('queue', names('--queue', { what: 'queue', describe: 'Queues to work, in priority order: a,b' }))
      .option('concurrency', integer('--concurrency', { min: 1, max: LIMITS.concurrency, describe: 'Jobs run at once per process' }))
      .option('prefetch', integer('--prefetch', { min: 0, max: LIMITS.prefetch, describe: 'Jobs claimed ahead of free slots per process, so a freed slot starts the next at once' }))
      .option('processes', integer('--processes', { min: 1, max: LIMITS.processes, describe: 'Worker processes under one supervisor (restarts, recycling, graceful stop)' }))
      .option('supervise', { type: 'boolean', describe: 'Use the supervisor even for one process' })
      .option('tries', integer('--tries', { min: 1, max: LIMITS.tries, describe: 'Attempts per job, unless the job sets its own' }))
      .option('timeout', duration('--timeout', { timer: true, describe: 'Per-attempt timeout (120, 120s, 2m)' }))
      .option('backoff', backoff('--backoff', { describe: 'Delays between attempts: 60,120,300 or exp:1s:10m' }))
      .option('sleep', duration('--sleep', { timer: true, describe: 'Pause between polls when nothing is due' }))
      .option('max-jobs', integer('--max-jobs', { min: 1, describe: 'Recycle a worker process after this many jobs' }))
      .option('max-time', duration('--max-time', { describe: 'Recycle a worker process after running this long' }))
      .option('memory', bytes('--memory', { describe: 'Recycle a worker process above this RSS (128MB; a bare number is MB)' }))
      .option('stop-wait', duration('--stop-wait', { timer: true, describe: 'On SIGTERM, how long running jobs may finish before they are put back' }))
      .option('timeout-grace', duration('--timeout-grace', { timer: true, describe: 'How long a handler may ignore its timeout before its process recycles (default 10s)' }))
      .option('heartbeat', duration('--heartbeat', { timer: true, describe: 'How often workers report in and read pause/restart signals (default 5s)' }))
      .option('once', { type: 'boolean', describe: 'Run one job, then exit' })
      .option('stop-when-empty', { type: 'boolean', describe: 'Exit when no job is due' })
      .option('jobs', { type: 'string', array: true, describe: 'Modules that export job definitions' })
      .option('metrics-port', integer('--metrics-port', { min: 1, max: 65_535, describe: 'Serve this worker process’s Prometheus /metrics on this port' }))
      .option('metrics-host', text('--metrics-host', { maxLength: 255, describe: 'Address for --metrics-port (default 127.0.0.1; others need MAILQ_DASHBOARD_TOKEN)' }))
      .option('hostname', hostnameOption),
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
  const mq = await assertReady(context);
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
  const mq = await assertReady(context);
  const settings = context.settings.worker;
  const supervisor = new Supervisor(mq.knex, mq.tables, context.logger, {
    processes: settings.processes,
    // The workers get this process's flags, minus the database URL: that goes by environment, so no
    // password shows in `ps` (a process's arguments are readable by every user; its environment is not).
    command: { modulePath: MAILQ_BIN, args: withoutDatabaseUrl(context.invocation.argv), env: { MAILQ_DATABASE_URL: context.settings.databaseUrl } },
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

/** argv without `--database-url` (`=value` or the next argument), however yargs would read it. */
export function withoutDatabaseUrl(argv: readonly string[]): string[] {
  const flag = /^--(database-url|databaseUrl)(=|$)/;
  const kept: string[] = [];
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index]!;
    if (arg === '--') return [...kept, ...argv.slice(index)];
    const match = flag.exec(arg);
    if (!match) kept.push(arg);
    else if (match[2] === '') index++;
  }
  return kept;
}

/**
 * What would make every claim fail, found before the first: a setting the jobs on these queues need
 * (their preflight: a missing TWS token), then a missing table ("run `mailq migrate` first").
 */
async function assertReady(context: CommandContext): Promise<Mailq> {
  const mq = await context.mailq();
  mq.registry.preflight(context.settings.worker.queues);
  await mq.knex.raw('SELECT 1 FROM ??, ?? LIMIT 0', [mq.tables.jobs, mq.tables.workers]);
  return mq;
}

function exitCodeFor(reason: WorkerStopReason): number {
  return reason === 'stuck-job' ? WORK_EXIT.stuckJob : WORK_EXIT.ok;
}
