import { createRequire } from 'node:module';
import type { Knex } from 'knex';
import { noteDriverMessage, statementError } from './errors.js';

// knex's mysql2 dialect, the class `client: 'mysql2'` names; knex exports it under no name.
const Mysql2Client = createRequire(import.meta.url)('knex/lib/dialects/mysql2/index.js') as typeof Knex.Client;

/** knex's client hands a statement to the driver with `_query` (missing from knex's types); `query` wraps it for knex. */
const driverQuery = (Mysql2Client.prototype as unknown as { _query(connection: unknown, statement: unknown): Promise<unknown> })._query;

/**
 * knex's mysql2 client, except that a failed statement rejects with a DatabaseError: one short line
 * naming the statement by its verb and table, with the server's reason and code, and the driver's
 * error as `cause`. knex writes the whole statement, values included, in front of the driver's
 * message: for a bulk INSERT that is every payload of a chunk, hundreds of KB that would otherwise
 * reach callers, the CLI's output and logs. Every statement on the pools mailq builds passes here,
 * in transactions too: knex builds a transaction's client from this class's prototype.
 */
export class MailqMysql2Client extends Mysql2Client {
  _query(connection: unknown, statement: unknown): Promise<unknown> {
    return driverQuery.call(this, connection, statement).catch((error: unknown) => {
      // Noted here, before knex writes the statement in front of it (in `query` below, it is too late).
      noteDriverMessage(error);
      throw error;
    });
  }

  override query(connection: unknown, statement: unknown): Promise<unknown> {
    return (super.query(connection, statement) as Promise<unknown>).catch((error: unknown) => {
      throw statementError(error, statementText(statement));
    });
  }
}

/** knex passes a statement as its text (BEGIN, COMMIT) or as an object holding it. */
function statementText(statement: unknown): string | undefined {
  if (typeof statement === 'string') return statement;
  const sql = (statement as { sql?: unknown } | null)?.sql;
  return typeof sql === 'string' ? sql : undefined;
}
