import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findServerBinaries } from '../src/localdb/throwaway-server.js';
import type { LedgerRow } from '../bench/chaos/ledger.js';
import { runChaos } from '../bench/chaos/run.js';
import { classifyRerun, type ProcessEndTimes } from '../bench/chaos/tally.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

/**
 * `npm run chaos` in short: 30 s of SIGKILLs, killed connections, lock waits on dispatch and (on a
 * throwaway server of its own) a database restart, under real supervised worker processes.
 * Compiled JS from dist: build first.
 */

const at = (ms: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, 0, ms));
function run(pid: number, startMs: number, endMs: number | null, outcome: LedgerRow['outcome'] = 'completed'): LedgerRow {
  return { seq: 1, jobId: 1, jobUuid: 'u', attempt: 1, pid, workerId: null, startedAt: at(startMs), endedAt: endMs === null ? null : at(endMs), outcome };
}
const ends = (killed: Array<[number, number]> = [], exited: Array<[number, number]> = []): ProcessEndTimes => ({
  killed: new Map(killed.map(([pid, ms]) => [pid, at(ms).getTime()])),
  exited: new Map(exited.map(([pid, ms]) => [pid, at(ms).getTime()])),
});

describe('how the chaos run judges a second run of a job', () => {
  it('after its process was killed: allowed, whether the first run ended or not', () => {
    expect(classifyRerun(run(1, 0, null), run(2, 500, 600), ends([[1, 100]]))).toBe('after-kill');
    expect(classifyRerun(run(1, 0, 50), run(2, 500, 600), ends([[1, 100]]))).toBe('after-kill');
  });

  it('after its process ended by itself: allowed', () => {
    expect(classifyRerun(run(1, 0, null), run(2, 500, 600), ends([], [[1, 100]]))).toBe('after-exit');
  });

  it('after an attempt that failed or was interrupted and ended first: a retry', () => {
    expect(classifyRerun(run(1, 0, 50, 'threw'), run(1, 60, 90), ends())).toBe('after-failed-attempt');
    expect(classifyRerun(run(1, 0, 50, 'aborted'), run(2, 60, 90), ends())).toBe('after-failed-attempt');
  });

  it('while the first run lived: overlapping runs, a completed run of a live process, or a kill that came after the second start', () => {
    expect(classifyRerun(run(1, 0, null), run(2, 500, 600), ends())).toBe('while-alive');
    expect(classifyRerun(run(1, 0, 700, 'threw'), run(2, 500, 600), ends())).toBe('while-alive');
    expect(classifyRerun(run(1, 0, 50), run(2, 60, 90), ends())).toBe('while-alive');
    expect(classifyRerun(run(1, 0, null), run(2, 500, 600), ends([[1, 550]]))).toBe('while-alive');
  });
});

describe('the short chaos run', () => {
  let database: TestDatabase | undefined;
  let logDir: string;
  let ownServer: boolean;

  beforeAll(async () => {
    logDir = await mkdtemp(path.join(tmpdir(), 'mailq-chaos-'));
    ownServer = (await findServerBinaries()) !== null;
    // Without local binaries the run uses the test server, and does not restart it.
    if (!ownServer) database = await createTestDatabase('chaos');
  });

  afterAll(async () => {
    await database?.drop();
    await rm(logDir, { recursive: true, force: true });
  });

  it('30 s of faults: nothing lost, nothing run twice while its first run lived, nothing left reserved', async () => {
    const result = await runChaos({ durationMs: 30_000, databaseUrl: database?.url, logFile: path.join(logDir, 'workers.log'), drainTimeoutMs: 60_000 });
    const summary = JSON.stringify({ seed: result.seed, faults: result.faults.injected, skipped: result.faults.list.filter((fault) => !fault.injected), figures: result.figures, rerunsWhileAlive: result.rerunsWhileAlive, lostSeqs: result.lostSeqs });

    // Faults did happen, so the run cannot pass by doing nothing.
    expect(result.faults.injected.sigkill, summary).toBeGreaterThan(0);
    expect(result.faults.injected['kill-connection'], summary).toBeGreaterThan(0);
    expect(result.faults.injected['lock-wait'], summary).toBeGreaterThan(0);
    expect(result.faults.injected.restart, summary).toBe(ownServer ? 1 : 0);
    expect(result.figures.dispatched, summary).toBeGreaterThan(100);
    expect(result.drain.emptied, summary).toBe(true);

    expect(result.figures.lost, summary).toBe(0);
    expect(result.figures.rerunsWhileAlive, summary).toBe(0);
    expect(result.figures.leftReserved, summary).toBe(0);
    expect(result.figures.finished, summary).toBe(result.figures.dispatched - result.figures.failed);
  }, 240_000);
});
