/** The slice of a mysql2 callback connection whose statements can be observed. */
export interface ObservableConnection {
  query: (...args: unknown[]) => unknown;
}

/**
 * Called as a statement goes out on the connection; returns what to run when its reply (or its
 * failure) arrives, before the statement's own caller hears of it.
 */
export type StatementObserver = () => (error: unknown) => void;

/**
 * Lets `observe` see every statement sent on one mysql2 connection and its outcome. Several
 * observers may be stacked on a connection; each sees every statement once.
 *
 * @example
 * observeStatements(connection, () => {
 *   const sentAt = Date.now();
 *   return (error) => console.log(error ? 'failed' : 'answered', Date.now() - sentAt, 'ms');
 * });
 */
export function observeStatements(connection: ObservableConnection, observe: StatementObserver): void {
  const send = connection.query.bind(connection);
  connection.query = (...args: unknown[]) => {
    const at = args.findLastIndex((arg) => typeof arg === 'function');
    // Streamed queries (no callback) are left unobserved; mailq does not use them.
    if (at === -1) return send(...args);
    const callback = args[at] as (...results: unknown[]) => void;
    const replied = observe();
    let settled = false;
    args[at] = (...results: unknown[]) => {
      if (!settled) {
        settled = true;
        replied(results[0]);
      }
      callback(...results);
    };
    return send(...args);
  };
}
