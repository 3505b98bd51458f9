/**
 * A benchmark worker process. The parent forks it, waits for `ready` (connected, warmed up), sends
 * `go` to every child at once, and times until each reports `done`: process start-up stays out of
 * the figures, for mailq and the yardstick alike.
 */
import mysql from 'mysql2/promise';
import { createLogger, createMailq } from '../src/index.js';
import { handled, noop, sleep50 } from './jobs.js';
import { batchDrain, oneRowDrain } from './yardsticks.js';

export interface ChildTask {
  role: 'mailq' | 'one-row' | 'batch';
  url: string;
  queue: string;
  concurrency: number;
  /** mailq only: jobs claimed ahead of free slots (unset: the worker's default). */
  prefetch?: number;
}

export type ChildMessage = { type: 'ready' } | { type: 'done'; handled: number[]; cpuMs: number; error?: string };

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve, reject) => process.send!(message, (error: Error | null) => (error ? reject(error) : resolve())));
}

function waitForGo(): Promise<void> {
  return new Promise((resolve) => process.once('message', () => resolve()));
}

async function runMailq(task: ChildTask): Promise<void> {
  // As `mailq work` would: default pool and settings, only the queue and concurrency chosen.
  const mq = createMailq({ databaseUrl: task.url, jobs: [noop, sleep50], logger: createLogger({ level: 'error', pretty: false }) });
  await mq.knex.raw('SELECT 1');
  const worker = mq.worker({ queues: [task.queue], concurrency: task.concurrency, prefetch: task.prefetch, stopWhenEmpty: true });
  await send({ type: 'ready' });
  await waitForGo();
  const cpu = process.cpuUsage();
  await worker.run();
  await report(cpu);
  await mq.close();
}

async function runYardstick(task: ChildTask): Promise<void> {
  const pool = mysql.createPool({ uri: task.url, connectionLimit: task.concurrency, timezone: 'Z' });
  await Promise.all(Array.from({ length: task.concurrency }, async () => (await pool.getConnection()).release()));
  await send({ type: 'ready' });
  await waitForGo();
  const cpu = process.cpuUsage();
  const record = (id: number) => void handled.push(id);
  await (task.role === 'batch' ? batchDrain(pool, 'jobs', task.queue, task.concurrency, record) : oneRowDrain(pool, 'jobs', task.queue, task.concurrency, record));
  await report(cpu);
  await pool.end();
}

async function report(cpuAtGo: NodeJS.CpuUsage): Promise<void> {
  const used = process.cpuUsage(cpuAtGo);
  await send({ type: 'done', handled, cpuMs: (used.user + used.system) / 1000 });
}

const task = JSON.parse(process.argv[2]!) as ChildTask;
try {
  await (task.role === 'mailq' ? runMailq(task) : runYardstick(task));
} catch (error) {
  await send({ type: 'done', handled, cpuMs: 0, error: (error as Error).stack ?? String(error) });
  process.exitCode = 1;
}
process.disconnect();
