import type { MailqMigration } from '../../schema/migration-set.js';
import type { MailboxTables } from '../tables.js';
import * as createMailbox from './20261128000002_create_mailbox.js';

/** The mailbox add-on's migrations, in order; `mailq migrate` runs them only where the mailbox is enabled. */
export const mailboxMigrations: ReadonlyArray<MailqMigration<MailboxTables>> = [createMailbox];
