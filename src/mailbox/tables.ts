import { ConfigError } from '../errors.js';
import { tableNameProblem, type TableNames } from '../db/tables.js';
import { quoteValue } from '../names.js';

/** The mailbox sync's tables, beside the queue's and under the same prefix unless the app names its own. */
export interface MailboxTables {
  taxpayers: string;
  mailboxMessages: string;
  /** Records which of the add-on's migrations ran (its own ledger, apart from the queue's). */
  migrations: string;
}

/** Tables an app may already own under names of its own; these names are used as given (no prefix). */
export type MailboxTableOverrides = Partial<Pick<MailboxTables, 'taxpayers' | 'mailboxMessages'>>;

/**
 * The mailbox tables of a queue instance: its prefix, or names the app chose. The names go into SQL
 * unescaped: a bad one is a ConfigError.
 *
 * @example
 * const tables = mailboxTables(mq);                             // taxpayers, mailbox_messages
 * const own = mailboxTables(mq, { taxpayers: 'clients' });      // the app's own taxpayers table
 */
export function mailboxTables(queue: { tables: Pick<TableNames, 'prefix'> }, overrides: MailboxTableOverrides = {}): MailboxTables {
  const { prefix } = queue.tables;
  for (const [key, name] of Object.entries(overrides)) {
    const problem = name === undefined ? undefined : tableNameProblem(name);
    if (problem) throw new ConfigError(`table name ${key} ${quoteValue(name)} ${problem}`);
  }
  return {
    taxpayers: overrides.taxpayers ?? `${prefix}taxpayers`,
    mailboxMessages: overrides.mailboxMessages ?? `${prefix}mailbox_messages`,
    migrations: `${prefix}mailq_mailbox_migrations`,
  };
}
