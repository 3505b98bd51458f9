import { endsSession } from './errors.js';
import { observeStatements, type ObservableConnection } from './statement-replies.js';

/** The slice of a mysql2 callback connection the check reads: the same state knex's own checkout check reads. */
export interface PooledConnection extends ObservableConnection {
  _closing?: boolean;
  _fatalError?: unknown;
  _protocolError?: unknown;
  stream: { destroyed: boolean; destroy(): void };
  destroy(): void;
}

/**
 * Which pooled connections may be handed out again, decided at checkout without a round trip.
 *
 * knex checks a connection at checkout against mysql2's own state (a fatal error, closing, socket
 * destroyed). That state changes only once Node has read the socket's close, and two kinds of dead
 * connection get past it:
 * - The server answers a statement with an error and then ends the session (a statement over
 *   max_allowed_packet): the error arrives before the close, the caller releases the connection
 *   at once, and the next statement is written into a socket the server has closed (ECONNRESET).
 *   Such a connection is closed here as soon as that error arrives.
 * - Idle connections whose path went dark (a partition, a failover that black-holes the old
 *   address) show nothing at all: each would be found out only by the stall check, one statement
 *   and several seconds at a time, long enough for a worker to lose leases it could have renewed.
 *   One connection failing is the sign: every connection that has not answered since is retired
 *   at its next checkout, and the pool opens fresh ones. Retiring a healthy one costs a reconnect.
 */
export class PoolHealth {
  /** Connection failures seen so far: fatal errors of statements sent on a connection that was open. */
  private failures = 0;
  /** `failures` when each connection last answered. */
  private readonly answeredAt = new WeakMap<PooledConnection, number>();

  /** Follows a new connection's statements; call before its first one. */
  watch(connection: PooledConnection): void {
    this.answeredAt.set(connection, this.failures);
    observeStatements(connection, () => {
      // A statement refused because the connection was already closed here tells nothing new.
      const wasOpen = isOpen(connection);
      return (error) => {
        if (isFatal(error)) {
          if (wasOpen) this.failures++;
        } else if (endsSession(error)) {
          close(connection);
        } else {
          this.answeredAt.set(connection, this.failures);
        }
      };
    });
  }

  /** The pool's `validate`: false retires the connection (closed here; the pool opens another when needed). */
  mayHandOut(connection: PooledConnection): boolean {
    if (this.answeredAt.get(connection) === this.failures) return true;
    close(connection);
    return false;
  }
}

/** mysql2 flags a connection whose socket failed or closed with `fatal`. */
function isFatal(error: unknown): boolean {
  return (error as { fatal?: unknown } | null)?.fatal === true;
}

function isOpen(connection: PooledConnection): boolean {
  return !connection._closing && !connection._fatalError && !connection._protocolError && !connection.stream.destroyed;
}

/** Takes no more statements, and leaves no socket behind: on a dark path a polite close would wait for minutes. */
function close(connection: PooledConnection): void {
  connection.destroy();
  connection.stream.destroy();
}
