export interface SignalHandlers {
  /** SIGTERM or SIGINT: stop gracefully. */
  stop(signal: NodeJS.Signals): void;
  /** A second SIGTERM/SIGINT while stopping: stop now. */
  force(signal: NodeJS.Signals): void;
  /** SIGHUP: reload the worker processes one by one. */
  reload(): void;
}

/** Routes the supervisor's signals; returns a function that removes the handlers. */
export function handleSupervisorSignals(handlers: SignalHandlers): () => void {
  let stopping = false;
  const onStop = (signal: NodeJS.Signals) => {
    if (stopping) return handlers.force(signal);
    stopping = true;
    handlers.stop(signal);
  };
  const onReload = () => handlers.reload();
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onReload);
  return () => {
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    process.off('SIGHUP', onReload);
  };
}
