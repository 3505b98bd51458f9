import { defineCommand } from '../command.js';
import { databaseLabel } from '../context.js';
import type { Output } from '../output.js';
import { formatTime, json, table } from '../output.js';
import { formatBytes } from '../../bytes.js';
import { formatDuration, parseDuration } from '../../duration.js';
import { queuesOverMax, type QueueHealth, type QueueOverview, type StatusReport } from '../../monitor/monitor.js';
import type { WorkerRecord } from '../../worker/worker-rows.js';
import { sleep } from '../../sleep.js';
import { duration, integer, names } from '../options.js';

/** Exit codes of `mailq monitor`: usable from cron or a health check. */
export const MONITOR_EXIT = { ok: 0, overMax: 3 } as const;

export const monitorCommand = defineCommand({
  command: 'monitor [queues..]',
  describe: 'Queue health: pending, delayed, running, failed, oldest wait, throughput, workers; exits 3 when a queue is over --max',
  builder: (yargs) =>
    yargs
      .positional('queues', names('[queues]', { what: 'queue', describe: 'Queues to show (default: every queue seen)' }))
      .option('max', integer('--max', { min: 0, describe: 'Exit 3 when a queue has more pending jobs than this' }))
      .option('json', { type: 'boolean', default: false })
      .option('watch', { type: 'boolean', default: false, describe: 'Refresh until interrupted' })
      .option('interval', duration('--interval', { timer: true, default: '2s', describe: 'Refresh interval with --watch' })),
  async run(context, argv) {
    const mq = await context.mailq();
    const queues = argv.queues ?? [];
    const check = async () => {
      const overview = await mq.monitor.queues(queues);
      const over = argv.max === undefined ? [] : queuesOverMax(overview, argv.max);
      return { overview, over };
    };
    if (!argv.watch) {
      const { overview, over } = await check();
      printMonitor(context.output, overview, argv.max, argv.json, false);
      return over.length ? MONITOR_EXIT.overMax : MONITOR_EXIT.ok;
    }
    // Checked when argv was parsed (see ../options.ts).
    const intervalMs = Math.max(200, parseDuration(argv.interval ?? '2s'));
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      while (!stop.signal.aborted) {
        const { overview } = await check();
        printMonitor(context.output, overview, argv.max, argv.json, true);
        await sleep(intervalMs, stop.signal);
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return MONITOR_EXIT.ok;
  },
});

export const statusCommand = defineCommand({
  command: 'status',
  describe: 'One screen of it all: queues, workers, supervisors, paused queues, the last restart',
  builder: (yargs) => yargs.option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const report = await (await context.mailq()).monitor.status();
    if (argv.json) return context.output.out(json({ database: databaseLabel(context), ...report }));
    context.output.out(`Database: ${databaseLabel(context)}`);
    printStatus(context.output, report);
  },
});

function printMonitor(output: Output, overview: QueueOverview, max: number | undefined, asJson: boolean, watching: boolean): void {
  if (asJson) {
    const over = max === undefined ? [] : queuesOverMax(overview, max).map((queue) => queue.queue);
    const value = { checkedAt: overview.checkedAt, max: max ?? null, ok: over.length === 0, overMax: over, queues: overview.queues };
    output.out(watching ? JSON.stringify(value) : json(value));
    return;
  }
  if (watching && output.isTTY) output.out('\x1b[2J\x1b[H');
  output.out(queueTable(overview.queues, max));
  const over = max === undefined ? [] : queuesOverMax(overview, max);
  if (over.length) output.out(`Over --max=${max}: ${over.map((queue) => `${queue.queue} (${queue.pending} pending)`).join(', ')}`);
  if (watching) output.out(`${formatTime(overview.checkedAt)} · Ctrl-C to stop`);
}

function queueTable(queues: QueueHealth[], max?: number): string {
  if (queues.length === 0) return 'No queues yet.';
  return table(
    ['queue', 'pending', 'delayed', 'running', 'failed', 'oldest wait', 'done/min (5m)', 'done (15m)', 'failed (15m)', 'workers', 'state'],
    queues.map((queue) => [
      queue.queue,
      queue.pending,
      queue.delayed,
      queue.reserved,
      queue.failed,
      queue.oldestPendingSeconds === null ? '' : formatDuration(queue.oldestPendingSeconds * 1000),
      +(queue.throughput.last5Minutes.completed / 5).toFixed(1),
      queue.throughput.last15Minutes.completed,
      queue.throughput.last15Minutes.failed,
      queue.workers,
      [queue.paused ? 'paused' : 'active', max !== undefined && queue.pending > max ? 'OVER MAX' : ''].filter(Boolean).join(', '),
    ]),
  );
}

function printStatus(output: Output, report: StatusReport): void {
  output.out(queueTable(report.queues));
  output.out('');
  if (report.hosts.length) {
    output.out(
      table(
        ['host', 'state', 'workers live', 'supervisors', 'running', 'last beat'],
        report.hosts.map((host) => [host.host, host.state === 'lost' ? 'LOST' : 'live', `${host.liveWorkers}/${host.workers}`, host.supervisors, host.running, `${formatDuration(host.silentMs)} ago`]),
      ),
    );
  }
  if (report.supervisors.length) {
    output.out(
      table(
        ['supervisor', 'host', 'pid', 'state', 'detail', 'restarts', 'started', 'last beat'],
        report.supervisors.map((record) => [record.id, record.host, record.pid, liveness(record), record.detail ?? '', record.restarts, formatTime(record.startedAt), ago(record)]),
      ),
    );
  }
  output.out(
    report.workers.length
      ? table(
          ['worker', 'pid', 'queues', 'state', 'running', 'done', 'failed', 'memory', 'started', 'last beat'],
          report.workers.map((record) => [
            record.id,
            record.pid,
            record.queues.join(','),
            liveness(record),
            `${record.running}/${record.concurrency}`,
            record.jobsDone,
            record.jobsFailed,
            formatBytes(record.memoryBytes),
            formatTime(record.startedAt),
            ago(record),
          ]),
        )
      : 'No workers are running.',
  );
  if (report.paused.length) output.out(`Paused: ${report.paused.map((row) => `${row.queue} (since ${formatTime(row.pausedAt)})`).join(', ')}`);
  if (report.restartRequestedAt) output.out(`Last restart requested: ${formatTime(report.restartRequestedAt)}`);
}

function liveness(record: WorkerRecord): string {
  const state = record.detail && record.kind === 'worker' ? `${record.state} (${record.detail})` : record.state;
  return record.alive ? state : `silent (last: ${state})`;
}

function ago(record: WorkerRecord): string {
  return `${formatDuration(record.silentMs)} ago`;
}
