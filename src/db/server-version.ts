import type { Knex } from 'knex';
import { MailqError } from '../errors.js';

export interface ServerVersion {
  product: 'MariaDB' | 'MySQL';
  version: string;
  major: number;
  minor: number;
  patch: number;
}

/** What `SELECT VERSION()` says, e.g. `10.11.19-MariaDB-0+deb12u1` or `8.0.36`. */
export function parseServerVersion(version: string): ServerVersion {
  const [major = 0, minor = 0, patch = 0] = (/^(\d+)\.(\d+)\.(\d+)/.exec(version)?.slice(1) ?? []).map(Number);
  return { product: /mariadb/i.test(version) ? 'MariaDB' : 'MySQL', version, major, minor, patch };
}

export async function serverVersion(knex: Knex): Promise<ServerVersion> {
  const [rows] = (await knex.raw('SELECT VERSION() AS version')) as [Array<{ version: string }>];
  return parseServerVersion(rows[0]!.version);
}

/** The claim needs `FOR UPDATE SKIP LOCKED`: MariaDB 10.6 and MySQL 8.0.1 brought it. */
export function supportsSkipLocked({ product, major, minor, patch }: ServerVersion): boolean {
  return product === 'MariaDB' ? major > 10 || (major === 10 && minor >= 6) : major > 8 || (major === 8 && (minor > 0 || patch >= 1));
}

export function minimumVersionFor(product: ServerVersion['product']): string {
  return product === 'MariaDB' ? 'MariaDB 10.6' : 'MySQL 8.0.1';
}

/**
 * Refuses a server without SKIP LOCKED before anything runs on it: otherwise the first claim
 * would fail with a bare SQL syntax error.
 */
export async function assertSupportedServer(knex: Knex): Promise<void> {
  const server = await serverVersion(knex);
  if (supportsSkipLocked(server)) return;
  throw new MailqError(
    `this server is ${server.product} ${server.version}: mailq needs ${minimumVersionFor(server.product)} or later (its workers claim with SELECT … FOR UPDATE SKIP LOCKED)`,
  );
}
