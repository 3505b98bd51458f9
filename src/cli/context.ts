import type { Logger } from 'pino';
import { loadSettings, importModule, NO_DATABASE_MESSAGE, type LoadedSettings, type MailqSettings } from '../config.js';
import type { TableOverrides } from '../db/tables.js';
import { explainDatabaseError } from '../db/errors.js';
import { parseDatabaseUrl } from '../db/url.js';
import { ConfigError, MailqError } from '../errors.js';
import { jobsFromModule, type JobDefinition } from '../job.js';
import { createLogger } from '../logger.js';
import { createMailq, type Mailq } from '../mailq.js';
import type { Invocation } from './invocation.js';
import type { Output } from './output.js';

/** Flags every command accepts. */
export interface GlobalFlags {
  databaseUrl?: string;
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
  /** Opens the queue on first use, with the job modules the config names. */
  mailq(): Promise<Mailq>;
}

/**
 * Built-in job sets that every `mailq` process knows (the mailbox sync registers here), given
 * the settings so they can read their own configuration.
 */
export type BuiltinJobs = (settings: MailqSettings, context: { logger: Logger; mailq: () => Promise<Mailq> }) => JobDefinition[] | Promise<JobDefinition[]>;
const builtinJobSets: BuiltinJobs[] = [];

export function registerBuiltinJobs(jobs: BuiltinJobs): void {
  builtinJobSets.push(jobs);
}

export async function loadJobModules(modules: string[]): Promise<JobDefinition[]> {
  const jobs: JobDefinition[] = [];
  for (const module of modules) {
    let loaded: Record<string, unknown>;
    try {
      loaded = await importModule(module);
    } catch (error) {
      throw new ConfigError(`cannot load job module ${module}: ${(error as Error).message}`);
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
}

export async function createContext(flags: GlobalFlags & Record<string, unknown>, settingsFlags: Record<string, unknown>, invocation: Invocation, options: ContextOptions = {}): Promise<CommandContext> {
  const loaded = await loadSettings({
    databaseOptional: options.databaseOptional,
    configPath: flags.config,
    flags: { databaseUrl: flags.databaseUrl, tablePrefix: flags.prefix, logLevel: flags.verbose ? 'debug' : flags.logLevel, ...settingsFlags },
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
        const mq = createMailq({ databaseUrl: settings.databaseUrl, tablePrefix: settings.tablePrefix, tables: mailboxTableOverrides(settings), logger, jobs: userJobs });
        for (const jobs of builtinJobSets) for (const job of await jobs(settings, { logger, mailq: context.mailq })) mq.registry.add(job);
        return mq;
      })();
      return instance;
    },
  };
  closers.set(context, async () => {
    if (instance) await (await instance).close();
  });
  return context;
}

/** The mailbox tables an app named itself (settings.mailbox.taxpayersTable / messagesTable). */
export function mailboxTableOverrides(settings: MailqSettings): TableOverrides {
  const overrides: TableOverrides = {};
  if (settings.mailbox.taxpayersTable) overrides.taxpayers = settings.mailbox.taxpayersTable;
  if (settings.mailbox.messagesTable) overrides.mailboxMessages = settings.mailbox.messagesTable;
  return overrides;
}

const closers = new WeakMap<CommandContext, () => Promise<void>>();

export function closeContext(context: CommandContext): Promise<void> {
  return closers.get(context)?.() ?? Promise.resolve();
}

/** Maps any error to one line and an exit code; the stack only with --verbose. */
export function reportError(error: unknown, output: Output, verbose: boolean, databaseUrl?: string): number {
  const redacted = safeRedactedUrl(databaseUrl);
  const explained = error instanceof MailqError ? error : explainDatabaseError(error, redacted);
  const message = explained?.message ?? (error instanceof Error ? error.message : String(error));
  output.err(`mailq: ${message}`);
  if (verbose && error instanceof Error && error.stack) output.err(error.stack);
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
