/** One `?` per value, comma-separated: the inside of `IN (…)` or of a VALUES tuple. */
export function placeholders(values: readonly unknown[]): string {
  return values.map(() => '?').join(', ');
}

/**
 * Row ids and counters written into the SQL as literals, comma-separated: a statement that finishes
 * 50 jobs carried ~200 bindings, and formatting them (a scan for each `?`, an escape per value)
 * cost the worker more than building the rest of it. Only safe integers pass, so nothing but
 * digits (and a minus sign) ever gets into the text.
 */
export function integerList(values: readonly number[]): string {
  let list = '';
  for (const value of values) list += list === '' ? integerLiteral(value) : `, ${integerLiteral(value)}`;
  return list;
}

function integerLiteral(value: number): string {
  if (!Number.isSafeInteger(value)) throw new TypeError(`not an integer, so not written into SQL: ${String(value)}`);
  return String(value);
}

/**
 * Matches exactly the given reservations of one worker (see Reservation in src/worker/claimed-job.ts):
 * the `id IN` keeps it a primary-key range, the row constructor makes a late statement for an
 * earlier reservation of the same row match nothing. Ids and counters are literals (integerList).
 */
export function reservationsMatchSql(reservations: ReadonlyArray<{ id: number; attempt: number; deferrals: number }>, workerId: string): { sql: string; bindings: unknown[] } {
  let ids = '';
  let tuples = '';
  for (const { id, attempt, deferrals } of reservations) {
    const separator = ids === '' ? '' : ', ';
    ids += separator + integerLiteral(id);
    tuples += `${separator}(${integerLiteral(id)}, ${integerLiteral(attempt)}, ${integerLiteral(deferrals)})`;
  }
  return { sql: `id IN (${ids}) AND reserved_by = ? AND (id, attempts, deferrals) IN (${tuples})`, bindings: [workerId] };
}
