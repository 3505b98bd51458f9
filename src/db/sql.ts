/** One `?` per value, comma-separated: the inside of `IN (…)` or of a VALUES tuple. */
export function placeholders(values: readonly unknown[]): string {
  return values.map(() => '?').join(', ');
}

/**
 * Matches exactly the given reservations of one worker (see Reservation in src/worker/claimed-job.ts):
 * the `id IN` keeps it a primary-key range, the row constructor makes a late statement for an
 * earlier reservation of the same row match nothing.
 */
export function reservationsMatchSql(reservations: ReadonlyArray<{ id: number; attempt: number; deferrals: number }>, workerId: string): { sql: string; bindings: unknown[] } {
  const ids = reservations.map((reservation) => reservation.id);
  return {
    sql: `id IN (${placeholders(ids)}) AND reserved_by = ? AND (id, attempts, deferrals) IN (${reservations.map(() => '(?, ?, ?)').join(', ')})`,
    bindings: [...ids, workerId, ...reservations.flatMap((reservation) => [reservation.id, reservation.attempt, reservation.deferrals])],
  };
}
