import type { LedgerRow } from './ledger.js';

/** How each worker process that ran jobs ended, on the database's clock (ms since the epoch). */
export interface ProcessEndTimes {
  /** Killed by the chaos run (SIGKILL): the moment just before the signal. */
  killed: ReadonlyMap<number, number>;
  /** Ended by itself (crash, recycle): the first moment it was seen gone. */
  exited: ReadonlyMap<number, number>;
}

/** What the tables hold once the workers have stopped. */
export interface EndState {
  /** Seqs of the jobs in failed_jobs. */
  failedSeqs: ReadonlySet<number>;
  /** Seqs of the jobs still in the jobs table. */
  queuedSeqs: ReadonlySet<number>;
  /** Rows of the jobs table still reserved. */
  leftReserved: number;
}

export interface DispatchRecord {
  /** Seqs whose dispatch call returned. */
  dispatched: readonly number[];
  /** Seqs whose dispatch call threw. */
  callFailed: readonly number[];
  /** dispatchMany calls that threw. */
  callsFailed: number;
}

/**
 * Why a job ran again, judged from the earlier run's ledger row and its process:
 * - after-kill: the earlier run's process was SIGKILLed before the later run started (at-least-once allows it);
 * - after-exit: that process ended by itself before the later run started (a crash: allowed too);
 * - after-failed-attempt: the earlier run ended before, in an error or an interruption (a retry or put-back);
 * - while-alive: the runs overlapped, or the earlier one completed and its process still lived. Never allowed.
 */
export type RerunKind = 'after-kill' | 'after-exit' | 'after-failed-attempt' | 'while-alive';

export interface Figures {
  dispatched: number;
  /** dispatchMany calls that threw (their jobs are not counted as dispatched). */
  dispatchCallsFailed: number;
  /** Jobs of those calls that were written all the same (they ran, failed or wait in the queue). */
  writtenAlthoughCallFailed: number;
  runs: number;
  /** Dispatched jobs with a completed run. */
  finished: number;
  /** Dispatched jobs that ran exactly once, to completion. */
  finishedOnce: number;
  rerunsAfterKill: number;
  rerunsAfterExit: number;
  retriesAfterFailedAttempt: number;
  /** Must be 0. */
  rerunsWhileAlive: number;
  /** In failed_jobs (tries are generous: none should be). */
  failed: number;
  /** Still in the jobs table at the end, not reserved (the drain ran out of time). */
  stillQueued: number;
  /** Must be 0: dispatched, never completed, not failed, not in the queue. */
  lost: number;
  /** Must be 0. */
  leftReserved: number;
}

export interface RerunExample {
  seq: number;
  earlier: LedgerRow;
  later: LedgerRow;
  earlierProcess: 'killed' | 'exited' | 'alive';
}

export interface Tally {
  figures: Figures;
  /** The first few reruns while alive, and lost seqs: what to look at first. */
  rerunsWhileAlive: RerunExample[];
  lostSeqs: number[];
}

const EXAMPLES = 20;

export function tally(dispatch: DispatchRecord, runs: readonly LedgerRow[], ends: ProcessEndTimes, end: EndState): Tally {
  const runsBySeq = groupBySeq(runs);
  const reruns: Record<RerunKind, number> = { 'after-kill': 0, 'after-exit': 0, 'after-failed-attempt': 0, 'while-alive': 0 };
  const whileAlive: RerunExample[] = [];
  for (const [seq, list] of runsBySeq) {
    for (let index = 1; index < list.length; index++) {
      const earlier = list[index - 1]!;
      const later = list[index]!;
      const kind = classifyRerun(earlier, later, ends);
      reruns[kind]++;
      if (kind === 'while-alive' && whileAlive.length < EXAMPLES) whileAlive.push({ seq, earlier, later, earlierProcess: processState(earlier.pid, later.startedAt.getTime(), ends) });
    }
  }
  const completed = (seq: number) => runsBySeq.get(seq)?.some((run) => run.outcome === 'completed') ?? false;
  const accounted = (seq: number) => completed(seq) || end.failedSeqs.has(seq) || end.queuedSeqs.has(seq);
  const lostSeqs = dispatch.dispatched.filter((seq) => !accounted(seq));
  const finishedOnce = dispatch.dispatched.filter((seq) => {
    const list = runsBySeq.get(seq);
    return list?.length === 1 && list[0]!.outcome === 'completed' && !end.queuedSeqs.has(seq);
  });
  return {
    figures: {
      dispatched: dispatch.dispatched.length,
      dispatchCallsFailed: dispatch.callsFailed,
      writtenAlthoughCallFailed: dispatch.callFailed.filter((seq) => runsBySeq.has(seq) || end.failedSeqs.has(seq) || end.queuedSeqs.has(seq)).length,
      runs: runs.length,
      finished: dispatch.dispatched.filter(completed).length,
      finishedOnce: finishedOnce.length,
      rerunsAfterKill: reruns['after-kill'],
      rerunsAfterExit: reruns['after-exit'],
      retriesAfterFailedAttempt: reruns['after-failed-attempt'],
      rerunsWhileAlive: reruns['while-alive'],
      failed: dispatch.dispatched.filter((seq) => end.failedSeqs.has(seq)).length,
      stillQueued: dispatch.dispatched.filter((seq) => end.queuedSeqs.has(seq) && !completed(seq)).length,
      lost: lostSeqs.length,
      leftReserved: end.leftReserved,
    },
    rerunsWhileAlive: whileAlive,
    lostSeqs: lostSeqs.slice(0, EXAMPLES),
  };
}

export function classifyRerun(earlier: LedgerRow, later: LedgerRow, ends: ProcessEndTimes): RerunKind {
  const laterStart = later.startedAt.getTime();
  const endedBefore = earlier.endedAt !== null && earlier.endedAt.getTime() <= laterStart;
  if (endedBefore && earlier.outcome !== 'completed') return 'after-failed-attempt';
  const state = processState(earlier.pid, laterStart, ends);
  if (state === 'killed') return 'after-kill';
  if (state === 'exited') return 'after-exit';
  return 'while-alive';
}

/** The earlier run's process at the moment the later run started. */
function processState(pid: number, at: number, ends: ProcessEndTimes): RerunExample['earlierProcess'] {
  const killedAt = ends.killed.get(pid);
  if (killedAt !== undefined && killedAt <= at) return 'killed';
  const exitedAt = ends.exited.get(pid);
  if (exitedAt !== undefined && exitedAt <= at) return 'exited';
  return 'alive';
}

function groupBySeq(runs: readonly LedgerRow[]): Map<number, LedgerRow[]> {
  const bySeq = new Map<number, LedgerRow[]>();
  for (const run of runs) {
    const list = bySeq.get(run.seq);
    if (list) list.push(run);
    else bySeq.set(run.seq, [run]);
  }
  for (const list of bySeq.values()) list.sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime());
  return bySeq;
}
