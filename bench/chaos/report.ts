import Table from 'cli-table3';
import type { ChaosResult } from './run.js';

type Row = [figure: string, value: number | string, meaning: string];

/** The plain summary: one row per figure, the must-be-0 ones marked. */
export function formatReport(result: ChaosResult): string {
  const { figures, faults, workers, drain } = result;
  const mustBeZero = (value: number) => (value === 0 ? '0 (must be 0: met)' : `${value} (must be 0: MISSED)`);
  const rows: Row[] = [
    ['dispatched', figures.dispatched, 'jobs whose dispatchMany call returned'],
    ['finished once', figures.finishedOnce, 'ran exactly once, to completion'],
    ['finished', figures.finished, 'completed at least once'],
    ['reruns after a kill', figures.rerunsAfterKill, "the earlier run's process was SIGKILLed first (allowed)"],
    ['reruns after a crash', figures.rerunsAfterExit, "the earlier run's process ended by itself first (allowed)"],
    ['retries after a failed attempt', figures.retriesAfterFailedAttempt, 'the earlier run ended in an error or was interrupted'],
    ['reruns while alive', mustBeZero(figures.rerunsWhileAlive), "runs overlapped, or the earlier one completed and its process lived"],
    ['lost', mustBeZero(figures.lost), 'dispatched, never completed, not failed, not queued'],
    ['left reserved', mustBeZero(figures.leftReserved), 'rows still reserved after the workers stopped gracefully'],
    ['failed', figures.failed, 'in failed_jobs (tries are generous)'],
    ['still queued', figures.stillQueued, 'in the queue, unreserved, when the drain ran out of time'],
    ['dispatch calls that threw', figures.dispatchCallsFailed, `of their jobs, ${figures.writtenAlthoughCallFailed} were written all the same`],
  ];
  const table = new Table({ head: ['figure', 'value', 'meaning'], style: { head: [], border: [] } });
  table.push(...rows);
  const injected = Object.entries(faults.injected).map(([kind, count]) => `${kind} ${count}`).join(', ');
  return [
    `mailq chaos — seed ${result.seed}, ${formatMinutes(result.durationMs)} of faults, ${result.settings.processes} processes × ${result.settings.concurrency} (prefetch ${result.settings.prefetch}), ${result.settings.server} (innodb_lock_wait_timeout ${result.settings.lockWaitTimeoutSeconds} s)`,
    `machine: ${result.machine.cores} cores (${result.machine.cpu}), node ${result.machine.node}, load ${result.machine.loadAverage.join(' ')}`,
    `faults injected: ${injected} (${faults.connectionsKilled} connections killed; ${faults.dispatchCallsDuringLockHolds} dispatch calls met a held lock)`,
    `worker processes: ${workers.processStarts} started, ${workers.killed} killed, ${workers.exitedOnTheirOwn} ended by themselves; ${figures.runs} runs recorded`,
    `drain: ${drain.emptied ? 'queue emptied' : 'queue NOT emptied'} in ${(drain.ms / 1000).toFixed(1)} s; supervisor exit ${drain.supervisorExit.signal ?? `code ${drain.supervisorExit.code}`}`,
    table.toString(),
    result.ok ? 'nothing lost, nothing run twice while alive, nothing left reserved' : 'MISSED: see rerunsWhileAlive and lostSeqs in the JSON',
  ].join('\n');
}

function formatMinutes(ms: number): string {
  return ms >= 60_000 ? `${+(ms / 60_000).toFixed(1)} min` : `${Math.round(ms / 1000)} s`;
}
