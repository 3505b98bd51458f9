import type { Knex } from 'knex';
import { MAILBOX_SYNC_QUEUE } from '../../src/mailbox/job.js';
import type { MailboxStore } from '../../src/mailbox/store.js';
import type { Mailq } from '../../src/mailq.js';
import type { Worker } from '../../src/worker/worker.js';
import type { Output } from '../../src/cli/output.js';

export const taxIdOf = (n: number) => String(20_100_000_000 + n);

/** Taxpayers 1..count with RUC-like tax ids; team = (n % teams) + 1. Returns their ids in order. */
export async function seedTaxpayers(store: MailboxStore, count: number, options: { teams?: number; inactive?: number[] } = {}): Promise<number[]> {
  const teams = options.teams ?? 3;
  await store.insertTaxpayers(
    Array.from({ length: count }, (_, i) => ({ taxId: taxIdOf(i + 1), name: `Taxpayer ${i + 1}`, teamId: ((i + 1) % teams) + 1, active: !options.inactive?.includes(i + 1) })),
  );
  const rows = (await store.knex(store.tables.taxpayers).select('id').orderBy('id')) as Array<{ id: number }>;
  return rows.map((row) => Number(row.id));
}

export async function countRows(knex: Knex, table: string, where: Record<string, unknown> = {}): Promise<number> {
  const [row] = (await knex(table).where(where).count({ count: '*' })) as Array<{ count: number | string }>;
  return Number(row?.count ?? 0);
}

/** Every row and column, in primary-key order: what "changes no row" is checked against. */
export async function snapshot(knex: Knex, table: string): Promise<unknown[]> {
  return knex(table).select('*').orderBy('id');
}

export async function until(condition: () => Promise<boolean>, timeoutMs = 45_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Runs real workers on the mailbox queue until it holds no job (done or failed), then stops them.
 * Unlike stopWhenEmpty, jobs waiting out a backoff or a deferral keep the workers running.
 */
export async function drain(mq: Mailq, options: { workers?: number; concurrency?: number; onWorker?: (worker: Worker) => void } = {}): Promise<Worker[]> {
  const workers = Array.from({ length: options.workers ?? 1 }, () => mq.worker({ queues: [MAILBOX_SYNC_QUEUE], concurrency: options.concurrency ?? 8, sleep: '10ms', sweepInterval: 0 }));
  workers.forEach((worker) => options.onWorker?.(worker));
  const runs = workers.map((worker) => worker.run());
  try {
    await until(async () => (await countRows(mq.knex, mq.tables.jobs, { queue: MAILBOX_SYNC_QUEUE })) === 0, 50_000, 'the mailbox queue to drain');
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await Promise.all(runs);
  }
  return workers;
}

export interface CapturedOutput extends Output {
  stdout: string[];
  stderr: string[];
  text(): string;
}

export function captureOutput(): CapturedOutput {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, isTTY: false, out: (line) => void stdout.push(line), err: (line) => void stderr.push(line), text: () => stdout.join('\n') };
}
