import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describeBackoff, toBackoffPlan, type BackoffOption } from '../backoff.js';
import { formatDuration, type Duration } from '../duration.js';
import { MailqError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { createMailq, type Mailq } from '../mailq.js';
import type { Worker } from '../worker/worker.js';
import { openDemoDatabase, type DemoDatabase } from './demo-database.js';
import { syncMailboxesDirectly } from './direct.js';
import { dispatchMailboxSync } from './dispatch.js';
import { startFakeTws, type FakeTws, type FakeTwsCounts } from './fake-tws.js';
import { mailboxSyncJob, TWS_RATE_LIMIT_KEY } from './job.js';
import { resolveRateLimit } from '../ratelimit/rate-limit.js';
import { formatRate, type Rate } from '../ratelimit/rate.js';
import type { FailureReason, NewTaxpayer } from './store.js';
import { MailboxSync } from './sync.js';
import { migrateMailbox, rollbackMailbox } from './schema.js';
import { mailboxTables } from './tables.js';
import { sleep } from '../sleep.js';

export interface DemoOptions {
  /** Default 3,025: the real nightly run. */
  taxpayers?: number;
  /** Fake TWS time per request. Default 1 s. */
  latencyMs?: number;
  /** Jobs at once per worker process. Default 10. */
  concurrency?: number;
  /** 1: a worker in this process; more: that many `mailq work` child processes. */
  processes?: number;
  /** Share of TWS requests that fail with a transient 5xx. Default 0.02. */
  errorRate?: number;
  /** The fake TWS's own limit (429 with Retry-After past it), and the workers' shared limit too. Default none. */
  rateLimit?: Rate;
  tries?: number;
  backoff?: BackoffOption;
  timeout?: Duration;
  /** Leave the demo's tables behind to inspect them. */
  keep?: boolean;
  /** The configured database, if any (else the demo finds or starts one). */
  databaseUrl?: string;
  seed?: number;
  signal?: AbortSignal;
  logger?: Logger;
  /** Called once the demo's queue is migrated (e.g. to serve the dashboard on it); what it returns is awaited at the end. */
  onQueueReady?: (mq: Mailq) => Promise<(() => Promise<void>) | void>;
}

export interface DemoProgress {
  done: number;
  total: number;
  failed: number;
  elapsedMs: number;
}

export interface DemoReporter {
  step(line: string): void;
  progress?(progress: DemoProgress): void;
}

export interface DemoResult {
  database: string;
  /** The night's batch: every job of the queue run. */
  batchId: string | null;
  kept: { url: string; tablePrefix: string } | undefined;
  taxpayers: number;
  brokenTaxpayers: number;
  malformedTaxpayers: number;
  concurrency: number;
  processes: number;
  latencyMs: number;
  tries: number;
  /** Dispatch (one bulk insert) to drained queue: every job done or in failed_jobs, retries and their backoff included. */
  queueMs: number;
  dispatchMs: number;
  /**
   * When every taxpayer had been tried once (each job's first attempt ended, whatever its outcome):
   * the figure to compare with direct mode's projection, which is of first attempts too.
   */
  firstPassMs: number;
  /** Jobs still waiting for a retry when the first pass ended; undefined when the queue drained within the poll that saw the first pass end. */
  retriesAfterFirstPass: number | undefined;
  /** How often the demo read the queue: the resolution of firstPassMs. */
  pollMs: number;
  /** Mean time of one taxpayer's successful sync in the queue run (TWS latency, our writes, a busy machine). */
  meanSyncMs: number;
  /** Direct mode, measured: this many taxpayers synced one after another before the queue run… */
  directSample: number;
  /** …took this long each, on average… */
  directMeanMs: number;
  /** …so one attempt for each of them would take this long: taxpayers × directMeanMs. */
  directProjectedMs: number;
  /** Direct projection ÷ the queue's first pass: like compared with like (no retry backoff on either side). */
  speedUp: number;
  backoff: string;
  /** The first pass's floor: rounds of `slots` taxpayers at the TWS latency. */
  idealMs: number;
  synced: number;
  failed: number;
  /** Failed jobs by the attempts they used: permanent failures use one. */
  failedByAttempts: Record<number, number>;
  reasons: FailureReason[];
  messages: number;
  tws: FakeTwsCounts;
}

const DEMO_DEFAULTS = { taxpayers: 3025, latencyMs: 1000, concurrency: 10, processes: 1, errorRate: 0.02, tries: 3, backoff: [5, 10, 30], timeout: 120 };
/** Fine enough to see the first pass end apart from the retries in a demo of a few hundred taxpayers. */
const POLL_MS = 50;
/** Taxpayers synced in direct mode first, to measure it rather than assume it. */
const DIRECT_SAMPLE = 10;
const STALL_LIMIT_MS = 10 * 60_000;
const BIN = fileURLToPath(new URL('../../../bin/mailq.js', import.meta.url));

/**
 * `mailq demo`: the nightly mailbox sync end to end against a fake TWS — migrate, seed taxpayers
 * (a few permanently broken), dispatch through the queue path, run workers, measure — and the
 * figures to compare with direct mode.
 *
 * @example
 * const result = await runDemo({ taxpayers: 300, latencyMs: 200 }, { step: console.log });
 * console.log(result.queueMs, result.directProjectedMs);
 */
export async function runDemo(options: DemoOptions, reporter: DemoReporter): Promise<DemoResult> {
  const settings = { ...DEMO_DEFAULTS, ...stripUndefined(options) };
  validate(settings);
  const database = await openDemoDatabase(options.databaseUrl, (line) => reporter.step(line));
  reporter.step(`Database: ${database.description}`);
  let mq: Mailq | undefined;
  let tws: FakeTws | undefined;
  let keep = settings.keep ?? false;
  const closers: Array<() => Promise<void>> = [];
  try {
    mq = createMailq({ databaseUrl: database.url, tablePrefix: database.tablePrefix, logger: options.logger ?? createLogger({ level: 'silent' }), poolMax: settings.concurrency + 5 });
    if (!database.dedicated) await removeDemoTables(mq);
    await mq.migrate();
    await migrateMailbox(mq);
    const queueReady = await options.onQueueReady?.(mq);
    if (queueReady) closers.push(queueReady);

    const seed = seedPlan(settings.taxpayers);
    const token = randomBytes(12).toString('hex');
    tws = await startFakeTws({ latencyMs: settings.latencyMs, errorRate: settings.errorRate, rateLimit: settings.rateLimit, brokenTaxpayers: seed.broken, malformedTaxpayers: seed.malformed, token, seed: settings.seed ?? 1 });
    const sync = new MailboxSync({ knex: mq.knex, tables: mailboxTables(mq), tws: { url: tws.url, token } });
    // Given a TWS limit, the workers share the same one (mailq's margin keeps them just under it).
    const rateLimit = settings.rateLimit && { key: TWS_RATE_LIMIT_KEY, limit: settings.rateLimit.limit, per: `${settings.rateLimit.perMs}ms` };
    mq.registry.add(mailboxSyncJob(sync, { tries: settings.tries, backoff: settings.backoff, timeout: settings.timeout, rateLimit }));
    await sync.store.insertTaxpayers(seed.taxpayers);
    reporter.step(`Seeded ${settings.taxpayers} taxpayers (${seed.broken.length} that TWS refuses for good, ${seed.malformed.length} whose mailbox TWS garbles)`);
    reporter.step(`Fake TWS on ${tws.url}: ${formatDuration(settings.latencyMs)} per request, ${(settings.errorRate * 100).toFixed(1)}% transient errors${settings.rateLimit ? `, ${formatRate(settings.rateLimit)} limit` : ''}`);

    const sampleIds = (await sync.taxpayerIds()).slice(0, DIRECT_SAMPLE);
    reporter.step(`Direct mode on ${sampleIds.length} taxpayers, one after another, to measure it…`);
    // The sample's requests count against the shared limit too, or the queue run's first window would overrun TWS's.
    const beforeRequest = rateLimit && (() => mq!.rateLimits.take(resolveRateLimit(rateLimit), 1, options.signal));
    const sample = await syncMailboxesDirectly(sync, sampleIds, { tries: 1, signal: options.signal, beforeRequest });
    const directMeanMs = sample.elapsedMs / sampleIds.length;
    reporter.step(`…${(directMeanMs / 1_000).toFixed(2)}s per taxpayer: ${formatDuration(directMeanMs * settings.taxpayers)} for all ${settings.taxpayers}. Now the queue:`);

    const startedAt = Date.now();
    const dispatched = await dispatchMailboxSync(mq);
    const dispatchMs = Date.now() - startedAt;
    reporter.step(`Dispatched ${dispatched.dispatched} jobs to '${dispatched.queue}' in ${dispatchMs} ms (one bulk insert) as batch ${dispatched.batchId}`);

    const workers = settings.processes === 1
      ? inProcessWorkers(mq, dispatched.queue, settings.concurrency)
      : childWorkers({ processes: settings.processes, concurrency: settings.concurrency, queue: dispatched.queue, databaseUrl: database.url, tablePrefix: database.tablePrefix, twsUrl: tws.url, token, rateLimit: settings.rateLimit });
    reporter.step(settings.processes === 1 ? `Working: ${settings.concurrency} jobs at once in this process` : `Working: ${settings.processes} worker processes × ${settings.concurrency} jobs at once`);
    let drained: { firstPassMs: number; retriesAfterFirstPass: number | undefined };
    try {
      drained = await waitUntilDrained(mq, dispatched.queue, dispatched.batchId, dispatched.dispatched, startedAt, workers, reporter, options.signal);
    } finally {
      await workers.stop();
    }
    const queueMs = Date.now() - startedAt;
    const result = await collectResult(mq, sync, tws, dispatched.queue, {
      database: database.description,
      batchId: dispatched.batchId,
      taxpayers: settings.taxpayers,
      brokenTaxpayers: seed.broken.length,
      malformedTaxpayers: seed.malformed.length,
      concurrency: settings.concurrency,
      processes: settings.processes,
      latencyMs: settings.latencyMs,
      tries: settings.tries,
      queueMs,
      dispatchMs,
      firstPassMs: drained.firstPassMs,
      retriesAfterFirstPass: drained.retriesAfterFirstPass,
      directSample: sampleIds.length,
      directMeanMs,
      backoff: describeBackoff(toBackoffPlan(settings.backoff)),
    });
    if (keep && database.ephemeral) {
      reporter.step('--keep: the throwaway server stops with the demo, so nothing can be kept; set MAILQ_DATABASE_URL to keep the tables');
      keep = false;
    }
    if (keep) result.kept = { url: database.url, tablePrefix: database.tablePrefix };
    return result;
  } catch (error) {
    keep = false;
    throw error;
  } finally {
    await tws?.close();
    if (mq && !keep && !database.dedicated) await removeDemoTables(mq).catch(() => undefined);
    for (const close of closers) await close().catch(() => undefined);
    await mq?.close();
    await database.close(keep);
  }
}

/** In a database that is not the demo's own, leave nothing behind, migration bookkeeping included. */
async function removeDemoTables(mq: Mailq): Promise<void> {
  await rollbackMailbox(mq, mailboxTables(mq), { all: true });
  await mq.rollback({ all: true });
  for (const ledger of [mailboxTables(mq).migrations, mq.tables.migrations]) {
    await mq.knex.schema.dropTableIfExists(`${ledger}_lock`);
    await mq.knex.schema.dropTableIfExists(ledger);
  }
}

function validate(settings: { taxpayers: number; concurrency: number; processes: number; errorRate: number; latencyMs: number }): void {
  const positiveInteger = (value: number) => Number.isInteger(value) && value > 0;
  if (!positiveInteger(settings.taxpayers)) throw new MailqError('--taxpayers must be an integer ≥ 1', { exitCode: 2 });
  if (!positiveInteger(settings.concurrency)) throw new MailqError('--concurrency must be an integer ≥ 1', { exitCode: 2 });
  if (!positiveInteger(settings.processes)) throw new MailqError('--processes must be an integer ≥ 1', { exitCode: 2 });
  if (!(settings.errorRate >= 0 && settings.errorRate <= 1)) throw new MailqError('--error-rate must be between 0 and 1', { exitCode: 2 });
  if (!(settings.latencyMs >= 0)) throw new MailqError('--latency must be a duration ≥ 0', { exitCode: 2 });
}

/** RUC-like tax ids; a few broken (404/403 alternately) and garbled taxpayers spread evenly. */
export function seedPlan(count: number): { taxpayers: NewTaxpayer[]; broken: string[]; malformed: string[] } {
  const taxId = (index: number) => String(20_100_000_000 + index);
  const taxpayers = Array.from({ length: count }, (_, i) => ({ taxId: taxId(i + 1), name: `Contribuyente ${i + 1} S.A.C.`, teamId: (i % 10) + 1 }));
  const taken = new Set<number>();
  // Evenly spread indexes (1-based), each moved to the next free one so the two sets never overlap.
  const spread = (how: number, offset: number) =>
    Array.from({ length: Math.min(how, count - taken.size) }, (_, k) => {
      let index = Math.min(count, Math.max(1, Math.round(((k + offset) * count) / how)));
      while (taken.has(index)) index = (index % count) + 1;
      taken.add(index);
      return taxId(index);
    });
  const broken = spread(Math.max(2, Math.round(count / 500)), 0.5);
  const malformed = spread(Math.max(1, Math.round(count / 1500)), 0.3);
  return { taxpayers, broken, malformed };
}

interface DemoWorkers {
  stop(): Promise<void>;
  /** Rejects when a worker dies, so the demo does not wait for jobs nobody runs. */
  failure: Promise<never>;
}

function inProcessWorkers(mq: Mailq, queue: string, concurrency: number): DemoWorkers {
  const worker: Worker = mq.worker({ queues: [queue], concurrency, sleep: '50ms' });
  const failure = worker.run().then(() => new Promise<never>(() => {}));
  failure.catch(() => undefined);
  return { failure, stop: async () => void (await worker.stop()) };
}

interface ChildWorkerOptions {
  processes: number;
  concurrency: number;
  queue: string;
  databaseUrl: string;
  tablePrefix: string;
  twsUrl: string;
  token: string;
  rateLimit: Rate | undefined;
}

/** N `mailq work` processes, configured the way an operator would: through the environment. */
function childWorkers(options: ChildWorkerOptions): DemoWorkers {
  const env: NodeJS.ProcessEnv = { ...process.env, MAILQ_DATABASE_URL: options.databaseUrl, MAILQ_TABLE_PREFIX: options.tablePrefix, MAILQ_TWS_URL: options.twsUrl, MAILQ_TWS_TOKEN: options.token, MAILQ_TWS_RATE_LIMIT: options.rateLimit ? formatRate(options.rateLimit) : 'off', MAILQ_LOG_LEVEL: 'fatal' };
  delete env.MAILQ_TAXPAYERS_TABLE;
  delete env.MAILQ_MAILBOX_MESSAGES_TABLE;
  const children: ChildProcess[] = [];
  let stopping = false;
  const failure = new Promise<never>((_, reject) => {
    for (let n = 0; n < options.processes; n++) {
      const child = spawn(process.execPath, [BIN, 'work', '--mailbox', '--queue', options.queue, '--concurrency', String(options.concurrency), '--sleep', '50ms'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-4_000); });
      child.once('exit', (code, signal) => {
        if (!stopping) reject(new MailqError(`worker process ${child.pid} exited (${signal ?? `code ${code}`}) before the queue drained: ${stderr.trim() || 'no output'}`));
      });
      children.push(child);
    }
  });
  failure.catch(() => undefined);
  return {
    failure,
    async stop() {
      stopping = true;
      await Promise.all(
        children.map((child) =>
          child.exitCode !== null || child.signalCode !== null
            ? undefined
            : new Promise<void>((resolve) => {
                child.once('exit', () => resolve());
                child.kill('SIGTERM');
              }),
        ),
      );
    },
  };
}

async function waitUntilDrained(mq: Mailq, queue: string, batchId: string | null, total: number, startedAt: number, workers: DemoWorkers, reporter: DemoReporter, signal?: AbortSignal): Promise<{ firstPassMs: number; retriesAfterFirstPass: number | undefined }> {
  let firstPassMs: number | undefined;
  let retriesAfterFirstPass: number | undefined;
  let lastDone = -1;
  let lastChangeAt = Date.now();
  for (;;) {
    if (signal?.aborted) throw new MailqError('demo interrupted');
    const counts = await queueCounts(mq, queue);
    const { inFirstPass } = counts;
    // The night's progress is its batch's: done (completed or failed for good) and failed.
    const batch = batchId ? await mq.batches.find(batchId) : undefined;
    const remaining = batch ? batch.pending : counts.remaining;
    const failed = batch ? batch.failed : counts.failed;
    const done = total - remaining;
    const elapsedMs = Date.now() - startedAt;
    if (inFirstPass === 0 && firstPassMs === undefined) {
      firstPassMs = elapsedMs;
      retriesAfterFirstPass = counts.remaining;
    }
    reporter.progress?.({ done, total, failed, elapsedMs });
    if (remaining === 0) return { firstPassMs: firstPassMs ?? elapsedMs, retriesAfterFirstPass };
    if (done !== lastDone) {
      lastDone = done;
      lastChangeAt = Date.now();
    } else if (Date.now() - lastChangeAt > STALL_LIMIT_MS) {
      throw new MailqError(`no job finished for ${STALL_LIMIT_MS / 60_000} minutes; ${remaining} left in '${queue}'`);
    }
    await Promise.race([workers.failure, sleep(POLL_MS, signal)]);
  }
}

/**
 * `inFirstPass`: jobs whose first attempt has not ended: never run (or only put back), or running it
 * now. A job that failed once and waits for its retry is past its first pass; a finished one is gone.
 */
async function queueCounts(mq: Mailq, queue: string): Promise<{ remaining: number; inFirstPass: number; failed: number }> {
  type Rows = [Array<Record<string, number | string>>];
  const [[jobs], [failed]] = (await Promise.all([
    mq.knex.raw(`SELECT COUNT(*) AS remaining, COALESCE(SUM(attempts = 0 OR (attempts = 1 AND reserved_at IS NOT NULL)), 0) AS in_first_pass FROM ?? WHERE queue = ?`, [mq.tables.jobs, queue]),
    mq.knex.raw(`SELECT COUNT(*) AS failed FROM ?? WHERE queue = ?`, [mq.tables.failedJobs, queue]),
  ])) as [Rows, Rows];
  return { remaining: Number(jobs[0]!.remaining), inFirstPass: Number(jobs[0]!.in_first_pass), failed: Number(failed[0]!.failed) };
}

type Measured = Pick<DemoResult, 'database' | 'batchId' | 'taxpayers' | 'brokenTaxpayers' | 'malformedTaxpayers' | 'concurrency' | 'processes' | 'latencyMs' | 'tries' | 'queueMs' | 'dispatchMs' | 'firstPassMs' | 'retriesAfterFirstPass' | 'directSample' | 'directMeanMs' | 'backoff'>;

async function collectResult(mq: Mailq, sync: MailboxSync, tws: FakeTws, queue: string, measured: Measured): Promise<DemoResult> {
  const [counts, reasons, meanSyncMs, messages, failedRows] = await Promise.all([
    sync.store.statusCounts(),
    sync.store.failureReasons(),
    sync.store.meanSyncDurationMs(),
    sync.store.countMessages(),
    mq.knex(mq.tables.failedJobs).select('attempts').count({ count: '*' }).where('queue', queue).groupBy('attempts') as Promise<Array<{ attempts: number; count: number | string }>>,
  ]);
  const failedByAttempts: Record<number, number> = {};
  for (const row of failedRows) failedByAttempts[Number(row.attempts)] = Number(row.count);
  const failed = Object.values(failedByAttempts).reduce((sum, n) => sum + n, 0);

  const { perTaxpayer: _perTaxpayer, requestTimes: _requestTimes, ...twsCounts } = tws.stats();
  const slots = measured.concurrency * measured.processes;
  return {
    ...measured,
    kept: undefined,
    pollMs: POLL_MS,
    meanSyncMs: meanSyncMs ?? measured.latencyMs,
    directProjectedMs: Math.round(measured.taxpayers * measured.directMeanMs),
    speedUp: (measured.taxpayers * measured.directMeanMs) / Math.max(1, measured.firstPassMs),
    idealMs: Math.ceil(measured.taxpayers / slots) * measured.latencyMs,
    synced: counts.ok,
    failed,
    failedByAttempts,
    reasons,
    messages,
    tws: twsCounts,
  };
}


function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as Partial<T>;
}
