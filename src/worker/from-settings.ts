import type { WorkerSettings } from '../config.js';
import type { WorkerOptions } from './worker.js';
import { planToOption } from '../backoff.js';

const millis = (value: number | undefined) => (value === undefined ? undefined : `${value}ms`);

/** Validated settings (milliseconds) → worker options. */
export function workerOptionsFromSettings(settings: WorkerSettings): WorkerOptions {
  return {
    queues: settings.queues,
    concurrency: settings.concurrency,
    prefetch: settings.prefetch,
    tries: settings.tries,
    timeout: millis(settings.timeout),
    backoff: planToOption(settings.backoff),
    sleep: millis(settings.sleep),
    maxJobs: settings.maxJobs,
    maxTime: millis(settings.maxTime),
    once: settings.once,
    stopWhenEmpty: settings.stopWhenEmpty,
    stopWait: millis(settings.stopWait),
    leaseGrace: millis(settings.leaseGrace),
    timeoutGrace: millis(settings.timeoutGrace),
    sweepInterval: millis(settings.sweepInterval),
    heartbeat: millis(settings.heartbeat),
    memoryLimit: settings.memory,
    hostname: settings.hostname,
  };
}
