import type { Logger } from 'pino';
import { loadSettings, importModule, NO_DATABASE_MESSAGE, type LoadedSettings, type MailqSettings } from '../config.js';
import { explainDatabaseError } from '../db/errors.js';
import { parseDatabaseUrl, redactSecrets } from '../db/url.js';
import { ConfigError, MailqError } from '../errors.js';
import { jobsFromModule, type JobDefinition } from '../job.js';
import { createLogger } from '../logger.js';
import { createMailq, type Mailq } from '../mailq.js';
import { quoteValue } from '../names.js';
import { mailboxJobFor, mailboxTablesFor } from '../mailbox/from-settings.js';
import { mailboxMigrationSet } from '../mailbox/schema.js';
import { queueMigrations } from '../schema/migrate.js';
import type { MigrationSet } from '../schema/migration-set.js';
import type { Invocation } from './invocation.js';
import type { Output } from './output.js';

/** Flags every command accepts. */
export interface GlobalFlags {
  databaseUrl?: string;
  /** Enables the mailbox sync add-on as a `mailbox: {}` config section would. */
  mailbox?: boolean;
  config?: string;
  prefix?: string;
  verbose?: boolean;
  logLevel?: string;
}

export interface CommandContext {
  settings: MailqSettings;
  loaded: LoadedSettings;
  logger: Logger;
  output: Output;
  /** This run of the CLI: its arguments, and how to run another command line. */
  invocation: Invocation;
  /** Opens the queue on first use, with the job modules the config names (and the mailbox job, where enabled). */
  mailq(): Promise<Mailq>;
  /** The queue's migrations, then the mailbox add-on's where it is enabled. */
  migrationSets(): Promise<Array<MigrationSet<unknown>>>;
}

export async function loadJobModules(modules: string[]): Promise<JobDefinition[]> {
  const jobs: JobDefinition[] = [];
  for (const module of modules) {
    let loaded: Record<string, unknown>;
    try {
      loaded = await importModule(module);
    } catch (error) {
      throw new ConfigError(`cannot load job module ${quoteValue(module)}: ${(error as Error).message}`);
    }
    const found = jobsFromModule(loaded);
    if (found.length === 0) throw new ConfigError(`job module ${module} exports no job (use defineJob)`);
    jobs.push(...found);
  }
  return jobs;
}

export interface ContextOptions {
  /** The command finds a database itself when none is configured (see LoadSettingsOptions). */
  databaseOptional?: boolean;
  /** Where environment settings come from (default: the invocation's, else process.env). */
  env?: NodeJS.ProcessEnv;
}

export async function createContext(flags: GlobalFlags & Record<string, unknown>, settingsFlags: Record<string, unknown>, invocation: Invocation, options: ContextOptions = {}): Promise<CommandContext> {
  const loaded = await loadSettings({
    databaseOptional: options.databaseOptional,
    env: options.env ?? invocation.env,
    configPath: flags.config,
    flags: mergeFlags({ databaseUrl: flags.databaseUrl, tablePrefix: flags.prefix, logLevel: flags.verbose ? 'debug' : flags.logLevel, mailbox: flags.mailbox ? {} : undefined }, settingsFlags),
  });
  const { settings } = loaded;
  const logger = createLogger({ level: settings.logLevel });
  let instance: Promise<Mailq> | undefined;
  const context: CommandContext = {
    settings,
    loaded,
    logger,
    output: invocation.output,
    invocation,
    mailq: () => {
      instance ??= (async () => {
        if (!settings.databaseUrl) throw new ConfigError(`invalid setting databaseUrl: ${NO_DATABASE_MESSAGE}`);
        const userJobs = await loadJobModules(loaded.jobModules);
        const mq = createMailq({ databaseUrl: settings.databaseUrl, tablePrefix: settings.tablePrefix, logger, jobs: userJobs });
        if (settings.mailbox) mq.registry.add(mailboxJobFor(settings, context.mailq));
        return mq;
      })();
      return instance;
    },
    migrationSets: async () => {
      const mq = await context.mailq();
      const sets: Array<MigrationSet<unknown>> = [queueMigrations(mq.tables)];
      if (settings.mailbox) sets.push(mailboxMigrationSet(mailboxTablesFor(mq, settings)));
      return sets;
    },
  };
  closers.set(context, async () => {
    if (instance) await (await instance).close();
  });
  return context;
}

/** A command's own settings over the global flags: `sync-mailbox --tries` and `--mailbox` both fill `mailbox`. */
function mergeFlags(global: Record<string, unknown>, command: Record<string, unknown>): Record<string, unknown> {
  const merged = { ...global, ...command };
  if (isObject(global.mailbox) && isObject(command.mailbox)) merged.mailbox = { ...global.mailbox, ...command.mailbox };
  return merged;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

const closers = new WeakMap<CommandContext, () => Promise<void>>();

export function closeContext(context: CommandContext): Promise<void> {
  return closers.get(context)?.() ?? Promise.resolve();
}

/** The database this command works on, password masked: what doctor and status print. */
export function databaseLabel(context: CommandContext): string {
  return safeRedactedUrl(context.settings.databaseUrl);
}

/** Maps any error to one line and an exit code; the stack only with --verbose. */
export function reportError(error: unknown, output: Output, verbose: boolean, databaseUrl?: string): number {
  const redacted = safeRedactedUrl(databaseUrl);
  // A database error a user can fix is explained first, even as a DatabaseError (a MailqError too).
  const explained = explainDatabaseError(error, redacted) ?? (error instanceof MailqError ? error : undefined);
  const message = explained?.message ?? (error instanceof Error ? error.message : String(error));
  // Whatever the message quotes (a driver's error, a URL in a config file), no password leaves here.
  output.err(`mailq: ${redactSecrets(message, [databaseUrl])}`);
  if (verbose && error instanceof Error && error.stack) output.err(redactSecrets(error.stack, [databaseUrl]));
  return explained?.exitCode ?? 1;
}

function safeRedactedUrl(url: string | undefined): string {
  if (!url) return '(no database URL)';
  try {
    return parseDatabaseUrl(url).redacted;
  } catch {
    return '(invalid database URL)';
  }
}
