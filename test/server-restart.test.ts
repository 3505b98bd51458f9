import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, createMailq, defineJob, type Mailq } from '../src/index.js';
import { findServerBinaries, startThrowawayServer, type ThrowawayServer } from '../src/localdb/throwaway-server.js';
import { waitFor } from './support/queue.js';

/**
 * The database restarts under a working worker: connections drop, the server refuses new ones for a
 * while, then answers again. The worker must carry on by itself, losing nothing. Needs its own server
 * (the shared one is not ours to restart): one started from the local mariadbd/mysqld binaries.
 */
const JOBS = 400;
const CONCURRENCY = 4;
const handled: number[] = [];
const tick = defineJob({
  name: 'tick',
  async handle(_payload: unknown, { job }) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    handled.push(job.id);
  },
});

let server: ThrowawayServer | undefined;
let mq: Mailq;
let unavailable = '';
const warnings: Array<{ msg: string }> = [];
const sink = new Writable({
  write(chunk: Buffer, _encoding, done) {
    for (const line of chunk.toString().split('\n').filter(Boolean)) warnings.push(JSON.parse(line) as { msg: string });
    done();
  },
});

beforeAll(async () => {
  if (!(await findServerBinaries())) {
    unavailable = 'no local mariadbd/mysqld binaries to start a server of its own';
    return;
  }
  server = await startThrowawayServer();
  mq = createMailq({ databaseUrl: server.url, jobs: [tick], logger: createLogger({ level: 'warn', pretty: false, destination: sink }) });
  await mq.migrate();
}, 120_000);

afterAll(async () => {
  await mq?.close();
  await server?.stop();
});

/** Counts rows, or undefined while the server does not answer. */
async function countOrNothing(table: string): Promise<number | undefined> {
  try {
    const [row] = await mq.knex(table).count({ n: '*' });
    return Number(row!.n);
  } catch {
    return undefined;
  }
}

describe('the database restarts mid-run', () => {
  it('the worker reconnects and finishes every job; none is lost, none fails, none runs twice', async (context) => {
    if (!server) return context.skip(unavailable);
    await mq.dispatchMany(tick, Array.from({ length: JOBS }, () => ({})));
    const worker = mq.worker({ concurrency: CONCURRENCY, sleep: '50ms', heartbeat: '1s' });
    const running = worker.run();

    await waitFor('a fifth of the jobs to run', () => handled.length >= JOBS / 5);
    const warnedBefore = warnings.length;
    await server.restart(1_500);
    const handledAtRestart = handled.length;

    await waitFor('the queue to empty after the restart', async () => (await countOrNothing('jobs')) === 0, 60_000);
    expect(handled.length).toBeGreaterThan(handledAtRestart);
    await worker.stop();
    expect(await running).toBe('stopped');

    // It did meet the outage: its claim loop, outcome statements or heartbeat said so, and went on.
    expect(warnings.slice(warnedBefore).some((line) => /^(database unreachable|retrying |heartbeat failed)/.test(line.msg))).toBe(true);
    expect(new Set(handled).size).toBe(JOBS);
    expect(handled.length).toBe(JOBS);
    expect(await countOrNothing('failed_jobs')).toBe(0);
  }, 120_000);
});
