/** Table names, all behind one configurable prefix so mailq can share a database with an app. */
export interface TableNames {
  jobs: string;
  failedJobs: string;
  migrations: string;
  /** The mailbox sync's tables: an app that already owns them can name its own (see MailboxTableNames). */
  taxpayers: string;
  mailboxMessages: string;
  /** The prefix every default name carries, for tables other modules look up by name. */
  prefix: string;
}

/** Tables an app may already own under names of its own; these names are used as given (no prefix). */
export type TableOverrides = Partial<Pick<TableNames, 'taxpayers' | 'mailboxMessages'>>;

export function tableNames(prefix = '', overrides: TableOverrides = {}): TableNames {
  return {
    jobs: `${prefix}jobs`,
    failedJobs: `${prefix}failed_jobs`,
    migrations: `${prefix}mailq_migrations`,
    taxpayers: overrides.taxpayers ?? `${prefix}taxpayers`,
    mailboxMessages: overrides.mailboxMessages ?? `${prefix}mailbox_messages`,
    prefix,
  };
}
