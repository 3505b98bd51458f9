import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { parseBytes } from './bytes.js';
import { MAX_TIMER_MS, MAX_TIMER_TEXT, parseDuration } from './duration.js';
import { parseBackoffFlag, toBackoffPlan, type BackoffPlan } from './backoff.js';
import { ConfigError } from './errors.js';
import { parseDatabaseUrl } from './db/url.js';
import { tableNameProblem, tablePrefixProblem } from './db/tables.js';
import { nameProblem, quoteValue } from './names.js';
import { scheduleEntrySchema } from './schedule/entry.js';
import { parseRate } from './ratelimit/rate.js';

/**
 * One schema for every setting, whatever its source. Precedence: CLI flags, then environment
 * (`MAILQ_*`, `DATABASE_URL`), then the config file, then these defaults.
 */
const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
  try {
    return parseDuration(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

/** A duration that a timer waits for: Node's timers cannot wait longer than ~24.8 days (they fire after 1 ms instead). */
const timerDuration = duration.pipe(z.number().max(MAX_TIMER_MS, MAX_TIMER_TEXT));

/** Upper bounds of counts that are settings and flags alike: past them, a value is a typo (1e9 processes would fork until the host falls over). */
export const LIMITS = { concurrency: 10_000, prefetch: 10_000, processes: 1_000, tries: 10_000 } as const;

/** An integer from a number or its decimal text (env and flags are text); `true`, '' and '1e3' are not integers. */
function integer(min: number, max: number = Number.MAX_SAFE_INTEGER) {
  return z
    .union([z.number(), z.string().trim().regex(/^-?\d+$/, 'expected an integer').transform(Number)], { error: 'expected an integer' })
    .pipe(z.number().int('expected an integer').min(min, `expected an integer ≥ ${min}`).max(max, `expected an integer ≤ ${max}`));
}

const backoff = z
  .union([
    z.number(),
    z.string(),
    z.array(z.union([z.number(), z.string()])),
    z.object({ type: z.literal('exponential'), base: z.union([z.number(), z.string()]), max: z.union([z.number(), z.string()]).optional(), jitter: z.boolean().optional() }),
  ])
  .transform((value, ctx): BackoffPlan => {
    try {
      return toBackoffPlan(typeof value === 'string' ? parseBackoffFlag(value) : value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  });

const queueList = z
  .union([z.string(), z.array(z.string())])
  .transform((value) => (Array.isArray(value) ? value : value.split(',')).map((q) => q.trim()).filter(Boolean))
  .refine((queues) => queues.length > 0, 'name at least one queue')
  .superRefine((queues, ctx) => {
    for (const queue of queues) {
      const problem = nameProblem(queue);
      if (problem) ctx.addIssue({ code: 'custom', message: `queue ${quoteValue(queue)} ${problem}` });
    }
  });

const workerSchema = z.object({
  /** The host name workers and supervisors report (`--hostname`, MAILQ_HOSTNAME); default: the machine's. */
  hostname: z.string().trim().min(1).max(191).regex(/^[^\s:]+$/, 'a host name has no spaces or colons').optional(),
  queues: queueList.default(['default']),
  concurrency: integer(1, LIMITS.concurrency).default(1),
  /** Jobs claimed ahead of free slots per process (unset: the worker's default). */
  prefetch: integer(0, LIMITS.prefetch).optional(),
  processes: integer(1, LIMITS.processes).default(1),
  tries: integer(1, LIMITS.tries).default(1),
  timeout: timerDuration.default(60_000),
  backoff: backoff.default([0]),
  sleep: timerDuration.default(100),
  maxJobs: integer(1).optional(),
  maxTime: duration.optional(),
  /** Bytes of resident memory past which a worker process recycles. */
  memory: z
    .union([z.number(), z.string()])
    .transform((value, ctx) => {
      try {
        return parseBytes(value);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: (error as Error).message });
        return z.NEVER;
      }
    })
    .optional(),
  /** How often each worker reports in and reads pause/restart controls. */
  heartbeat: timerDuration.default(5_000),
  stopWait: timerDuration.default(60_000),
  leaseGrace: duration.default(30_000),
  timeoutGrace: timerDuration.default(10_000),
  sweepInterval: timerDuration.default(15_000),
  once: z.boolean().default(false),
  stopWhenEmpty: z.boolean().default(false),
});

const twsSchema = z.object({
  url: z.string().url('MAILQ_TWS_URL must be an http(s) URL').optional(),
  token: z.string().optional(),
  /** Every worker's shared limit on TWS requests: `100/min`, `10/s`, or `off`. */
  rateLimit: z
    .string()
    .default('100/min')
    .superRefine((text, ctx) => {
      if (text.trim().toLowerCase() === 'off') return;
      try {
        parseRate(text);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: `${(error as Error).message}, or off` });
      }
    }),
  /** Per HTTP request to TWS, body included. */
  requestTimeout: timerDuration.default(30_000),
});

/** A zod string checked by one of mailq's own rules (the library applies the same ones). */
function checked(problem: (value: unknown) => string | undefined) {
  return z.string().superRefine((value, ctx) => {
    const found = problem(value);
    if (found) ctx.addIssue({ code: 'custom', message: `${quoteValue(value)} ${found}` });
  });
}

const tableName = checked(tableNameProblem);

/**
 * The mailbox sync add-on (`mailq/mailbox`): where its job runs and how hard it tries. Table names
 * default to the prefixed ones. Present (even as `mailbox: {}`, or through `--mailbox`) means enabled:
 * `mailq migrate` creates its tables and every `mailq` process knows its job.
 */
const mailboxSchema = z.object({
  queue: checked(nameProblem).default('mailbox-sync'),
  tries: integer(1, LIMITS.tries).default(3),
  backoff: backoff.default([60_000, 120_000, 300_000]),
  timeout: timerDuration.default(120_000),
  taxpayersTable: tableName.optional(),
  messagesTable: tableName.optional(),
});

export const NO_DATABASE_MESSAGE = 'no database configured: set MAILQ_DATABASE_URL (or DATABASE_URL), pass --database-url, or set databaseUrl in mailq.config.js';

const databaseUrl = z.string({ error: NO_DATABASE_MESSAGE }).superRefine((url, ctx) => {
  try {
    parseDatabaseUrl(url);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
  }
});

export const settingsSchema = z.object({
  databaseUrl,
  tablePrefix: checked(tablePrefixProblem).default(''),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  jobs: z.array(z.string()).default([]),
  worker: workerSchema.default(workerSchema.parse({})),
  tws: twsSchema.default(twsSchema.parse({})),
  mailbox: mailboxSchema.optional(),
  schedule: z.array(scheduleEntrySchema).default([]),
});

export type MailqSettings = z.output<typeof settingsSchema>;
export type WorkerSettings = MailqSettings['worker'];
export type TwsSettings = MailqSettings['tws'];
export type MailboxSettings = z.output<typeof mailboxSchema>;
export type MailqConfigInput = z.input<typeof settingsSchema> & { configDir?: string };

const CONFIG_FILE_NAMES = ['mailq.config.js', 'mailq.config.mjs', 'mailq.config.ts', 'mailq.config.mts'];

export interface LoadSettingsOptions {
  /** Values from CLI flags, already in the schema's shape. */
  flags?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** An explicit config file; otherwise the first of mailq.config.{js,mjs,ts,mts} in cwd, if any. */
  configPath?: string;
  cwd?: string;
  /**
   * For commands that can find a database themselves (`mailq demo`, `mailq fake-tws`): a missing
   * URL is then not an error and `settings.databaseUrl` is ''. A URL that is given is still validated.
   */
  databaseOptional?: boolean;
}

export interface LoadedSettings {
  settings: MailqSettings;
  /** Job modules resolved to absolute paths (relative entries are relative to the config file). */
  jobModules: string[];
  configPath?: string;
}

export async function loadSettings(options: LoadSettingsOptions = {}): Promise<LoadedSettings> {
  const cwd = options.cwd ?? process.cwd();
  const configPath = findConfigFile(cwd, options.configPath);
  const fileValues = configPath ? await importConfigFile(configPath) : {};
  const merged = mergeDeep(mergeDeep(fileValues, envValues(options.env ?? process.env)), stripUndefined(options.flags ?? {}));
  const settings = parseSettings(merged, { databaseOptional: options.databaseOptional });
  const baseDir = configPath ? path.dirname(configPath) : cwd;
  const fileJobs = (fileValues.jobs as string[] | undefined) ?? [];
  const jobModules = settings.jobs.map((entry) => resolveModule(entry, fileJobs.includes(entry) ? baseDir : cwd));
  return { settings, jobModules, configPath };
}

export function parseSettings(input: unknown, options: { databaseOptional?: boolean } = {}): MailqSettings {
  const schema = options.databaseOptional ? settingsSchema.extend({ databaseUrl: databaseUrl.optional().transform((url) => url ?? '') }) : settingsSchema;
  const result = schema.safeParse(isPlainObject(input) ? withMailboxEnabledByTws(input) : input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const where = issue.path.length ? `${issue.path.join('.')}: ` : '';
  throw new ConfigError(`invalid setting ${where}${issue.message}`);
}

/**
 * TWS settings (a `tws` section, MAILQ_TWS_URL, …) are only ever given to a process that syncs
 * mailboxes, so they enable the mailbox add-on as `mailbox: {}` would: a worker deployed with
 * them before the mailbox became an add-on keeps knowing its job.
 */
function withMailboxEnabledByTws(values: Record<string, unknown>): Record<string, unknown> {
  return values.tws !== undefined && values.mailbox === undefined ? { ...values, mailbox: {} } : values;
}

function envValues(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const tws = stripUndefined({ url: env.MAILQ_TWS_URL, token: env.MAILQ_TWS_TOKEN, rateLimit: env.MAILQ_TWS_RATE_LIMIT, requestTimeout: env.MAILQ_TWS_TIMEOUT });
  const mailbox = stripUndefined({ taxpayersTable: env.MAILQ_TAXPAYERS_TABLE, messagesTable: env.MAILQ_MAILBOX_MESSAGES_TABLE });
  return stripUndefined({
    databaseUrl: env.MAILQ_DATABASE_URL || env.DATABASE_URL || undefined,
    tablePrefix: env.MAILQ_TABLE_PREFIX,
    logLevel: env.MAILQ_LOG_LEVEL,
    worker: env.MAILQ_HOSTNAME ? { hostname: env.MAILQ_HOSTNAME } : undefined,
    tws: Object.keys(tws).length ? tws : undefined,
    mailbox: Object.keys(mailbox).length ? mailbox : undefined,
  });
}

function findConfigFile(cwd: string, explicit?: string): string | undefined {
  if (explicit === '') throw new ConfigError('config file: expected a file name, got an empty one');
  if (explicit) {
    const absolute = path.resolve(cwd, explicit);
    if (!existsSync(absolute)) throw new ConfigError(`config file not found: ${explicit}`);
    return absolute;
  }
  return CONFIG_FILE_NAMES.map((name) => path.join(cwd, name)).find((candidate) => existsSync(candidate));
}

async function importConfigFile(file: string): Promise<Record<string, unknown>> {
  let loaded: Record<string, unknown>;
  try {
    loaded = (await importModule(file)) as Record<string, unknown>;
  } catch (error) {
    throw new ConfigError(`cannot load config file ${file}: ${(error as Error).message}`);
  }
  const value = (loaded.default ?? loaded) as unknown;
  const resolved = typeof value === 'function' ? await (value as () => unknown)() : value;
  if (!resolved || typeof resolved !== 'object') throw new ConfigError(`config file ${file} must export an object`);
  return resolved as Record<string, unknown>;
}

/** Imports JS directly and TypeScript through tsx, so `mailq.config.ts` and `.ts` job modules work on Node 20. */
export async function importModule(file: string): Promise<Record<string, unknown>> {
  const url = pathToFileURL(file).href;
  if (/\.[mc]?ts$/.test(file)) {
    const { tsImport } = await import('tsx/esm/api');
    const loaded = (await tsImport(url, import.meta.url)) as Record<string, unknown>;
    // Outside a `"type": "module"` package a .ts file is compiled as CommonJS: its exports (and so its
    // `export default`) then sit one level down, flagged __esModule. Unwrap them, or a default export is lost.
    const inner = loaded.default as { __esModule?: unknown } | null | undefined;
    return typeof inner === 'object' && inner !== null && inner.__esModule === true ? (inner as Record<string, unknown>) : loaded;
  }
  return (await import(url)) as Record<string, unknown>;
}

function resolveModule(entry: string, baseDir: string): string {
  return entry.startsWith('.') || path.isAbsolute(entry) ? path.resolve(baseDir, entry) : entry;
}

function stripUndefined(values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function mergeDeep(base: Record<string, unknown>, override: Record<string, unknown>): Record<string, unknown> {
  const result: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    if (value === undefined) continue;
    result[key] = isPlainObject(value) && isPlainObject(result[key]) ? mergeDeep(result[key] as Record<string, unknown>, value) : value;
  }
  return result;
}
