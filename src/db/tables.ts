import { ConfigError } from '../errors.js';
import { quoteValue } from '../names.js';

/**
 * The longest identifier mailq's migrations derive from a table name, without a prefix. A test
 * (test/table-prefix.test.ts) reads every index name from a migrated schema and keeps this true.
 */
export const LONGEST_DERIVED_NAME = 'mailbox_messages_taxpayer_received_index';
/** MySQL's limit on table and index names. */
export const MAX_IDENTIFIER_LENGTH = 64;
/** Longer, and some index name would pass MySQL's 64 characters: 24. */
export const MAX_TABLE_PREFIX_LENGTH = MAX_IDENTIFIER_LENGTH - LONGEST_DERIVED_NAME.length;
const TABLE_CHARS = /^[A-Za-z0-9_]*$/;

/** Why a table prefix cannot be used, or undefined. Prefixes go into SQL as identifiers: letters, digits and _ only. */
export function tablePrefixProblem(prefix: unknown): string | undefined {
  if (typeof prefix !== 'string' || !TABLE_CHARS.test(prefix)) return 'may hold letters, digits and _ only';
  if (prefix.length > MAX_TABLE_PREFIX_LENGTH) return `is ${prefix.length} characters long: at most ${MAX_TABLE_PREFIX_LENGTH}, so that every index name fits MySQL's ${MAX_IDENTIFIER_LENGTH}`;
  return undefined;
}

/** Why a table name (an app's own mailbox table) cannot be used, or undefined. */
export function tableNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0 || !TABLE_CHARS.test(name)) return 'may hold letters, digits and _ only';
  if (name.length > MAX_IDENTIFIER_LENGTH) return `is ${name.length} characters long (at most ${MAX_IDENTIFIER_LENGTH})`;
  return undefined;
}

/** Table names, all behind one configurable prefix so mailq can share a database with an app. */
export interface TableNames {
  jobs: string;
  failedJobs: string;
  migrations: string;
  /** The prefix every name carries; an add-on (`mailq/mailbox`) names its own tables with it. */
  prefix: string;
  /** One row per live worker (and supervisor): its heartbeat. */
  workers: string;
  /** Pause flags and restart signals, per queue ('*' = every queue). */
  queueControls: string;
  /** Per-queue, per-minute counts of finished jobs, added by workers at heartbeat time. */
  queueStats: string;
  /** One row per token slot of each rate-limit key (src/ratelimit). */
  rateLimits: string;
  /** One row per rate-limit key: its window and any 429 pause (what the dashboard shows). */
  rateLimitKeys: string;
  jobBatches: string;
  /** One row per schedule entry and slot: the row that makes a slot fire once across hosts. */
  scheduleRuns: string;
}

/**
 * Every table name, from a prefix (checked: it goes into SQL unescaped). A bad prefix is a ConfigError.
 *
 * @example
 * tableNames('mailq_').jobs; // 'mailq_jobs'
 */
export function tableNames(prefix = ''): TableNames {
  const problem = tablePrefixProblem(prefix);
  if (problem) throw new ConfigError(`table prefix ${quoteValue(prefix)} ${problem}`);
  return {
    jobs: `${prefix}jobs`,
    failedJobs: `${prefix}failed_jobs`,
    migrations: `${prefix}mailq_migrations`,
    prefix,
    workers: `${prefix}workers`,
    queueControls: `${prefix}queue_controls`,
    queueStats: `${prefix}queue_stats`,
    rateLimits: `${prefix}rate_limits`,
    rateLimitKeys: `${prefix}rate_limit_keys`,
    jobBatches: `${prefix}job_batches`,
    scheduleRuns: `${prefix}schedule_runs`,
  };
}
