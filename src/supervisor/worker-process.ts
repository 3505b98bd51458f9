import { fork, type ChildProcess } from 'node:child_process';
import type { WorkerStopReason } from '../worker/events.js';
import { CHILD_ENV, isChildMessage, type SupervisorMessage } from './protocol.js';

/** The program a worker process runs: a module forked with these arguments. */
export interface WorkerCommand {
  modulePath: string;
  args: readonly string[];
  /** Extra environment on top of the supervisor's own. */
  env?: NodeJS.ProcessEnv;
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why the worker said it was stopping, if it got to say so. */
  reason: WorkerStopReason | undefined;
  uptimeMs: number;
  /** It registered and started claiming. */
  wasReady: boolean;
}

/**
 * One worker process, seen from its supervisor: started with its worker id in the environment,
 * asked to stop over IPC (not by signal: a terminal's Ctrl-C already reaches the whole process
 * group, and systemd may signal every process of the unit), killed when it overstays.
 */
export class WorkerProcess {
  readonly exited: Promise<ProcessExit>;
  readonly ready: Promise<boolean>;
  private readonly child: ChildProcess;
  private readonly startedAt = Date.now();
  private reason: WorkerStopReason | undefined;
  private wasReady = false;
  private hasExited = false;

  constructor(
    readonly workerId: string,
    supervisorId: string,
    command: WorkerCommand,
  ) {
    this.child = fork(command.modulePath, [...command.args], {
      env: { ...process.env, ...command.env, [CHILD_ENV.workerId]: workerId, [CHILD_ENV.supervisorId]: supervisorId },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let markReady: (ready: boolean) => void = () => undefined;
    this.ready = new Promise((resolve) => (markReady = resolve));
    this.child.on('message', (message) => {
      if (!isChildMessage(message)) return;
      if (message.type === 'mailq:ready') {
        this.wasReady = true;
        markReady(true);
      } else this.reason = message.reason;
    });
    this.exited = new Promise((resolve) => {
      // 'exit' can come before the last IPC message is read; 'close' comes after both.
      this.child.once('close', (code, signal) => {
        this.hasExited = true;
        markReady(false);
        resolve({ code, signal, reason: this.reason, uptimeMs: Date.now() - this.startedAt, wasReady: this.wasReady });
      });
    });
    // A failed fork (EAGAIN, ENOMEM) surfaces as 'error' and then 'close'; the supervisor sees it as a crash.
    this.child.on('error', () => undefined);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get uptimeMs(): number {
    return Date.now() - this.startedAt;
  }

  get isRunning(): boolean {
    return !this.hasExited;
  }

  /** Graceful: stop claiming, finish or put back running jobs, exit. */
  stop(): void {
    if (this.hasExited) return;
    if (this.child.connected) {
      const message: SupervisorMessage = { type: 'mailq:stop' };
      this.child.send(message, (error) => {
        if (error) this.child.kill('SIGTERM');
      });
    } else this.child.kill('SIGTERM');
  }

  /** Now: for a process that overstayed the stop wait. Its jobs are released by the supervisor. */
  kill(): void {
    if (!this.hasExited) this.child.kill('SIGKILL');
  }
}
