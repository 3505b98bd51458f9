/**
 * The job the chaos run dispatches, loaded by its worker processes (`--config` names this module):
 * it records each run in the ledger, waits `ms` (honouring its signal), and records how it ended.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { connect, defineJob, type Knex } from '../../src/index.js';
import { CHILD_ENV } from '../../src/supervisor/protocol.js';
import { sleep } from '../../src/sleep.js';
import { recordEnd, recordStart, type RunOutcome } from './ledger.js';

export const CHAOS_QUEUE = 'chaos';

/** Generous, so that no job fails for good under the faults: a failed one is reported, never counted lost. */
export const LEDGER_JOB_TRIES = 25;

let pool: Knex | undefined;
function ledgerPool(): Knex {
  const url = process.env.MAILQ_DATABASE_URL;
  if (!url) throw new Error('the chaos ledger job needs MAILQ_DATABASE_URL');
  pool ??= connect(url, { poolMax: 4 });
  return pool;
}

export const ledgerJob = defineJob({
  name: 'chaos-ledger',
  queue: CHAOS_QUEUE,
  schema: z.object({ seq: z.number().int(), ms: z.number().int().min(0) }),
  tries: LEDGER_JOB_TRIES,
  timeout: '20s',
  async handle({ seq, ms }, { job, signal }) {
    const runId = randomUUID().replaceAll('-', '');
    const workerId = process.env[CHILD_ENV.workerId] ?? null;
    await recordStart(ledgerPool(), { runId, seq, jobId: job.id, jobUuid: job.uuid, attempt: job.attempt, pid: process.pid, workerId });
    let outcome: RunOutcome = 'threw';
    try {
      await sleep(ms, signal);
      if (signal.aborted) {
        outcome = 'aborted';
        throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
      }
      outcome = 'completed';
    } finally {
      await recordEnd(ledgerPool(), runId, outcome);
    }
  },
});
