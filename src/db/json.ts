/** mysql2 returns JSON columns as objects on MySQL and as strings on MariaDB (LONGTEXT): accept both. */
export function parseJsonColumn<T = unknown>(value: unknown): T {
  if (typeof value === 'string') return JSON.parse(value) as T;
  if (Buffer.isBuffer(value)) return JSON.parse(value.toString('utf8')) as T;
  return value as T;
}
