/** One `?` per value, comma-separated: the inside of `IN (…)` or of a VALUES tuple. */
export function placeholders(values: readonly unknown[]): string {
  return values.map(() => '?').join(', ');
}

/** Deletes rows by primary key: how completed jobs leave the jobs table, with or without batches. */
export function deleteByIdsSql(table: string, ids: readonly unknown[]): string {
  return `DELETE FROM \`${table}\` WHERE id IN (${placeholders(ids)})`;
}
