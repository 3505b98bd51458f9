import type { Logger } from 'pino';
import type { WorkerStopReason } from '../worker/events.js';
import type { Worker } from '../worker/worker.js';
import { CHILD_ENV, isSupervisorMessage, type ChildMessage } from './protocol.js';

/** Who this process is when a supervisor started it. */
export interface SupervisedIdentity {
  workerId: string;
  supervisorId: string;
}

/** This process's identity if a mailq supervisor forked it (env ids and an IPC channel); otherwise undefined. */
export function supervisedIdentity(env: NodeJS.ProcessEnv = process.env): SupervisedIdentity | undefined {
  const workerId = env[CHILD_ENV.workerId];
  const supervisorId = env[CHILD_ENV.supervisorId];
  if (!workerId || !supervisorId || typeof process.send !== 'function') return undefined;
  return { workerId, supervisorId };
}

/**
 * The worker process's side of the supervisor link. It stops when the supervisor asks (IPC) or
 * disappears (the channel closes: a supervisor killed with -9 leaves no orphans claiming jobs),
 * and ignores SIGINT/SIGTERM: those are meant for the supervisor, which also reaches it through
 * the process group or the unit's cgroup. Returns a function that unhooks everything.
 *
 * @example
 * // A worker entry of your own, forked by mq.supervisor({ command: { modulePath: 'worker.js', args: [] }, … })
 * const identity = supervisedIdentity();
 * const worker = mq.worker({ queues: ['default'], workerId: identity?.workerId, supervisorId: identity?.supervisorId });
 * if (identity) followSupervisor(worker, mq.logger);
 * process.exit((await worker.run()) === 'stuck-job' ? 70 : 0); // exit even if a stuck handler still runs
 */
export function followSupervisor(worker: Worker, logger: Logger): () => void {
  const send = (message: ChildMessage) => {
    if (process.connected) process.send?.(message, undefined, {}, () => undefined);
  };
  const onMessage = (message: unknown) => {
    if (isSupervisorMessage(message)) void worker.stop('signal');
  };
  const onDisconnect = () => {
    logger.warn('supervisor gone: stopping');
    void worker.stop('signal');
  };
  const onSignal = (signal: NodeJS.Signals) => logger.debug({ signal }, 'signal ignored: the supervisor decides when this worker stops');
  const onReady = () => send({ type: 'mailq:ready' });
  const onStopping = (reason: WorkerStopReason) => send({ type: 'mailq:stopping', reason });

  process.on('message', onMessage);
  process.on('disconnect', onDisconnect);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  worker.on('ready', onReady);
  worker.on('stopping', onStopping);
  if (!process.connected) onDisconnect();
  return () => {
    process.off('message', onMessage);
    process.off('disconnect', onDisconnect);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    worker.off('ready', onReady);
    worker.off('stopping', onStopping);
  };
}
