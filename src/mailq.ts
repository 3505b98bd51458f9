import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { connect, poolLike } from './db/connection.js';
import { tableNames, type TableNames } from './db/tables.js';
import { InvalidJobError } from './errors.js';
import { FailedJobs } from './failed/store.js';
import { JobRegistry, type JobDefinition } from './job.js';
import { createLogger, withErrorSerializer } from './logger.js';
import { Dispatcher, type DispatchedJob, type DispatchManyOptions, type DispatchManyResult, type DispatchOneOptions } from './queue/dispatcher.js';
import { migrateLatest, migrateRollback, migrationStatus, queueMigrations, type MigrationStatus } from './schema/migrate.js';
import { Worker, type WorkerOptions } from './worker/worker.js';
import { QueueControls } from './controls/queue-controls.js';
import { Monitor } from './monitor/monitor.js';
import { runDoctor, type DoctorOptions, type DoctorReport } from './doctor/doctor.js';
import { Supervisor, type SupervisorOptions } from './supervisor/supervisor.js';
import { RateLimiter } from './ratelimit/limiter.js';
import { BatchStore } from './batch/store.js';
import type { BatchJob, BatchOptions, CreatedBatch } from './batch/batch.js';
import { clearQueues, type ClearedQueue } from './queue/clear.js';

export interface MailqOptions {
  /** `mysql://user:password@host:3306/database`; or pass your own `knex`. */
  databaseUrl?: string;
  /**
   * Your app's knex (mysql2 client), used as it is configured, and only for dispatch (`dispatch`,
   * `dispatchMany`, `batch`), so a job can be dispatched in your transaction. mailq opens a pool of
   * its own to the same database for everything else (workers, controls, reads, migrations), with
   * the session settings it needs. mailq never closes your knex.
   */
  knex?: Knex;
  /** Prefix for every mailq table, e.g. `mailq_` (letters, digits and _, at most 24 characters). */
  tablePrefix?: string;
  /** Job definitions this instance knows: dispatch by name and workers run them. */
  jobs?: JobDefinition[];
  /** Where mailq logs (default: warnings and errors to stderr). mailq logs through a child that serializes errors its own way (see serializeError). */
  logger?: Logger;
  /** Size of mailq's own pool. Default 10. */
  poolMax?: number;
  /**
   * Statements run on each new connection of mailq's own pool, before mailq's own settings (which
   * win where they meet: UTC): e.g. `['SET ROLE queue_user', 'SET SESSION innodb_lock_wait_timeout = 5']`.
   * Your knex's `afterCreate` does not run on mailq's pool: pass here what mailq's sessions need from it.
   */
  sessionSetup?: readonly string[];
}

/**
 * The queue: dispatch jobs, run workers, operate failed jobs.
 *
 * @example
 * const mq = createMailq({ databaseUrl: process.env.MAILQ_DATABASE_URL, jobs: [sendEmail] });
 * await mq.migrate();
 * await mq.dispatch(sendEmail, { userId: 42 }, { delay: '10s' });
 * await mq.dispatchMany(sendEmail, users.map((u) => ({ userId: u.id })));
 * await mq.worker({ queues: ['default'], concurrency: 10 }).run();
 */
export class Mailq {
  /** mailq's own pool (UTC sessions, several statements per round trip): workers, controls, reads, migrations. */
  readonly knex: Knex;
  readonly tables: TableNames;
  readonly registry: JobRegistry;
  readonly logger: Logger;
  /** Failed jobs: list, show, retry, forget, flush. */
  readonly failed: FailedJobs;
  /**
   * Pause, resume, restart: signals every worker on every host reads at its heartbeat.
   *
   * @example
   * await mq.controls.pause(['mailbox-sync']);   // workers stop claiming from it; running jobs finish
   * await mq.controls.resume(['mailbox-sync']);
   * await mq.controls.requestRestart();          // every worker finishes its jobs and exits; supervisors start fresh ones
   */
  readonly controls: QueueControls;
  /**
   * Queue health and worker status from the tables.
   *
   * @example
   * const { queues } = await mq.monitor.queues(['mailbox-sync']);
   * if (queues[0]!.pending > 1000) alert(`backlog: ${queues[0]!.pending}`);
   * const { workers } = await mq.monitor.status();
   */
  readonly monitor: Monitor;
  /** Batches: find, list, cancel (create them with `batch()`). */
  readonly batches: BatchStore;
  /** The shared rate limits: take tokens or pause a key from outside a job. */
  readonly rateLimits: RateLimiter;
  private readonly dispatcher: Dispatcher;
  private readonly workers = new Set<Worker>();

  constructor(options: MailqOptions) {
    if (!options.knex && !options.databaseUrl) throw new InvalidJobError('createMailq needs a databaseUrl or a knex instance');
    // Checked before any pool opens: the prefix goes into SQL as part of every table name.
    this.tables = tableNames(options.tablePrefix);
    // Pools open no connection until a query needs one.
    const pool = { poolMax: options.poolMax, sessionSetup: options.sessionSetup };
    this.knex = options.knex ? poolLike(options.knex, pool) : connect(options.databaseUrl!, pool);
    this.registry = new JobRegistry(options.jobs);
    this.logger = options.logger ? withErrorSerializer(options.logger) : createLogger({ level: 'warn' });
    this.failed = new FailedJobs(this.knex, this.tables);
    this.controls = new QueueControls(this.knex, this.tables);
    this.monitor = new Monitor(this.knex, this.tables);
    // Dispatch alone goes through the app's knex: it is what must share the app's transactions.
    this.dispatcher = new Dispatcher(options.knex ?? this.knex, this.tables, (job) => this.resolveJob(job));
    this.batches = new BatchStore(this.knex, this.tables, this.dispatcher, (job) => this.resolveJob(job), (queues, transaction) => this.wakeWorkers(queues, transaction));
    this.rateLimits = new RateLimiter(this.knex, this.tables);
  }

  /**
   * Removes the waiting jobs (due, delayed, in backoff) of these queues; running jobs finish.
   * A batch that loses jobs this way is cancelled, so it still finishes and its counts stay true.
   *
   * @example
   * const [{ removed }] = await mq.clear(['mailbox-sync']);
   */
  clear(queues: readonly string[]): Promise<ClearedQueue[]> {
    return clearQueues(this.knex, this.tables, queues);
  }

  /** Creates or upgrades the queue's tables (an add-on such as `mailq/mailbox` migrates its own); returns the migrations it applied. */
  migrate(): Promise<string[]> {
    return migrateLatest(this.knex, queueMigrations(this.tables));
  }

  migrationStatus(): Promise<MigrationStatus> {
    return migrationStatus(this.knex, queueMigrations(this.tables));
  }

  /** Undoes the queue's last batch of migrations, or all of them: its tables and their rows are dropped. */
  rollback(options: { all?: boolean } = {}): Promise<string[]> {
    return migrateRollback(this.knex, queueMigrations(this.tables), options.all);
  }

  /** Enqueues one job. Pass `transaction` to enqueue atomically with your own writes. */
  dispatch<P, I = P>(job: JobDefinition<P, I> | string, payload: I, options?: DispatchOneOptions): Promise<DispatchedJob> {
    return this.dispatcher.dispatch(job, payload, options).then((dispatched) => {
      this.wakeWorkers([dispatched.queue], options?.transaction);
      return dispatched;
    });
  }

  /** Validates every payload, then bulk-inserts them in chunks of multi-row INSERTs, in one transaction. */
  dispatchMany<P, I = P>(job: JobDefinition<P, I> | string, payloads: readonly I[], options?: DispatchManyOptions): Promise<DispatchManyResult> {
    return this.dispatcher.dispatchMany(job, payloads, options).then((dispatched) => {
      this.wakeWorkers([dispatched.queue], options?.transaction);
      return dispatched;
    });
  }

  /**
   * Idle workers of this instance on any of these queues (where a dispatch or a batch just put jobs)
   * claim at once instead of at their next poll (other processes poll as before). Inside a caller's
   * transaction: once it commits.
   */
  private wakeWorkers(queues: Iterable<string>, transaction?: Knex.Transaction): void {
    const woken = new Set(queues);
    const wake = () => {
      for (const worker of this.workers) if (worker.queues.some((queue) => woken.has(queue))) worker.wake();
    };
    if (transaction) void transaction.executionPromise.then(wake, () => undefined);
    else wake();
  }

  /**
   * Dispatches jobs as one batch, followed as a whole: progress, failures, and callback jobs that run
   * exactly once when it finishes. Pass one job type and its payloads, or a list of `{ job, payload }`.
   *
   * @example
   * const batch = await mq.batch(syncMailbox, taxpayers.map((t) => ({ taxpayerId: t.id })), {
   *   name: 'nightly sync',
   *   then: { job: 'notify', payload: { text: 'all mailboxes synced' } },
   *   catch: { job: 'notify', payload: { text: 'some mailboxes failed' } },
   *   finally: { job: 'sync-report' },
   * });
   * console.log(batch.id, (await mq.batches.find(batch.id)).progress);
   */
  batch<P>(job: JobDefinition<P> | string, payloads: readonly P[], options?: BatchOptions): Promise<CreatedBatch>;
  batch(jobs: readonly BatchJob[], options?: BatchOptions): Promise<CreatedBatch>;
  batch(first: JobDefinition | string | readonly BatchJob[], second?: readonly unknown[] | BatchOptions, third?: BatchOptions): Promise<CreatedBatch> {
    if (Array.isArray(first)) return this.batches.create(first as readonly BatchJob[], second as BatchOptions | undefined);
    const job = first as JobDefinition | string;
    return this.batches.create((second as readonly unknown[]).map((payload) => ({ job, payload })), third);
  }

  /**
   * A worker over this queue's jobs (plus any given here); call `run()` to start it. The `preflight`
   * of each job on the worker's queues runs first: a missing setting throws a ConfigError here,
   * before anything is claimed.
   */
  worker(options: WorkerOptions & { jobs?: JobDefinition[] } = {}): Worker {
    const registry = options.jobs ? new JobRegistry([...this.registryJobs(), ...options.jobs]) : this.registry;
    const worker = new Worker(this.knex, this.tables, registry, this.logger, options);
    // Its queues as the worker resolved them (the default included); it has claimed nothing yet.
    registry.preflight(worker.queues);
    this.workers.add(worker);
    // Kept until its run has settled, not just begun to stop: close() waits for a draining worker.
    const forget = () => void this.workers.delete(worker);
    worker.once('stopping', () => void worker.stop().then(forget, forget));
    return worker;
  }

  /**
   * A supervisor that keeps N worker processes running (what `mailq work --processes=N` uses).
   *
   * @example
   * const supervisor = mq.supervisor({ processes: 4, queues: ['default'], concurrency: 5,
   *   command: { modulePath: 'node_modules/mailq/bin/mailq.js', args: ['work', '--queue=default', '--concurrency=5'] } });
   * process.on('SIGTERM', () => void supervisor.stop());
   * await supervisor.run();
   */
  supervisor(options: SupervisorOptions): Supervisor {
    return new Supervisor(this.knex, this.tables, this.logger, options);
  }

  /**
   * Checks the server and schema: version, SKIP LOCKED, migrations, the claim index and plan, lock settings.
   *
   * @example
   * const report = await mq.doctor();
   * for (const check of report.checks) console.log(check.status, check.name, check.value);
   */
  doctor(options?: DoctorOptions): Promise<DoctorReport> {
    return runDoctor(this.knex, this.tables, options);
  }

  /**
   * Stops this instance's workers gracefully, waits until each has finished (those already
   * stopping too: their running jobs end and are recorded, or are put back), then closes mailq's
   * pool (an app's own knex stays open).
   */
  async close(): Promise<void> {
    // A worker whose run failed has nothing left to wait for; its caller has the error.
    await Promise.allSettled([...this.workers].map((worker) => worker.stop()));
    await this.knex.destroy();
  }

  private registryJobs(): JobDefinition[] {
    return this.registry.names().map((name) => this.registry.get(name)!);
  }

  private resolveJob(job: JobDefinition | string): JobDefinition | string {
    if (typeof job !== 'string') return job;
    return this.registry.get(job) ?? job;
  }
}

/**
 * What app code needs to queue work: a `Mailq`, or `fakeQueue()` from `mailq/testing` in its tests.
 *
 * @example
 * export async function signUp(queue: JobQueue, user: { email: string }) {
 *   await queue.dispatch(sendWelcome, { email: user.email });
 * }
 */
export type JobQueue = Pick<Mailq, 'dispatch' | 'dispatchMany' | 'batch'>;

/**
 * Opens a queue on a database URL (or your own knex pool).
 *
 * @example
 * const mq = createMailq({ databaseUrl: process.env.MAILQ_DATABASE_URL, jobs: [sendWelcome] });
 */
export function createMailq(options: MailqOptions): Mailq {
  return new Mailq(options);
}

