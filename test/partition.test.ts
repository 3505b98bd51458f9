import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killIfRunning, RECORDING_JOBS, startCli, waitFor, type CliProcess } from './support/processes.js';
import { overlappingRuns, recordingDatabase, type JobRun, type RecordingDatabase } from './support/recording.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';

/**
 * A 30 s partition of one of three worker processes (three hosts, each behind its own proxy) while
 * 3,000 jobs drain. The partitioned worker must fence itself: abort its jobs (their signal fires with
 * a LeaseLostError) before their leases end, and write nothing for them afterwards, while the other
 * two take them over; then carry on once the network is back. The ledger bypasses the proxies, so it
 * records every run as it happens. Compiled JS from dist: build first.
 */
const JOBS = 3_000;
const PARTITION_MS = 30_000;
/** Lease = timeout 10 s + grace 0.2 s; every 100th job runs 9.9 s, long enough to be fenced mid-run. */
const PARTITION_CONFIG = fileURLToPath(new URL('./fixtures/partition.config.mjs', import.meta.url));
const LONG_JOB_MS = 9_900;
const jobMs = (n: number) => (n % 100 === 50 ? LONG_JOB_MS : 40 + (n % 8) * 20);

let rec: RecordingDatabase;
const proxies: TcpProxy[] = [];
const hosts: CliProcess[] = [];

interface OutcomeWrite {
  job_id: number;
  op: 'update' | 'delete';
  old_reserved_by: string;
  new_last_error: string | null;
  at: Date;
}

beforeAll(async () => {
  rec = await recordingDatabase('partition');
  // Every write that ends a reservation (release, retry, defer, delete, move to failed_jobs), and whose reservation it ended.
  await rec.mq.knex.raw(`CREATE TABLE outcome_writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, job_id BIGINT NOT NULL, op VARCHAR(8) NOT NULL,
    old_reserved_by VARCHAR(191) NOT NULL, new_last_error TEXT NULL, at DATETIME(3) NOT NULL)`);
  await rec.mq.knex.raw(`CREATE TRIGGER jobs_outcome_update AFTER UPDATE ON jobs FOR EACH ROW
    INSERT INTO outcome_writes (job_id, op, old_reserved_by, new_last_error, at)
    SELECT OLD.id, 'update', OLD.reserved_by, NEW.last_error, NOW(3) FROM DUAL WHERE OLD.reserved_by IS NOT NULL AND NEW.reserved_by IS NULL`);
  await rec.mq.knex.raw(`CREATE TRIGGER jobs_outcome_delete AFTER DELETE ON jobs FOR EACH ROW
    INSERT INTO outcome_writes (job_id, op, old_reserved_by, new_last_error, at)
    SELECT OLD.id, 'delete', OLD.reserved_by, NULL, NOW(3) FROM DUAL WHERE OLD.reserved_by IS NOT NULL`);
});

afterEach(async () => {
  hosts.splice(0).forEach((host) => killIfRunning(host));
  await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
});

afterAll(async () => {
  await rec?.close();
});

describe('one worker host of three partitioned for 30 s', () => {
  it('loses no job, runs none twice at once, and the partitioned worker writes nothing for the jobs it let go', async () => {
    const keys = Array.from({ length: JOBS }, (_, n) => `p-${n}`);
    await rec.mq.dispatchMany('record', keys.map((key, n) => ({ key, ms: jobMs(n) })), { queue: 'partition', tries: 10 });
    const database = new URL(rec.db.url);
    for (let n = 1; n <= 3; n++) {
      const proxy = await startTcpProxy({ host: database.hostname, port: Number(database.port || 3306) });
      proxies.push(proxy);
      const url = new URL(proxy.urlThrough(rec.db.url));
      url.searchParams.set('stallCheck', '1s');
      url.searchParams.set('connectTimeout', '1s');
      hosts.push(
        startCli(
          ['work', '--queue=partition', '--concurrency=8', '--jobs', RECORDING_JOBS, '--config', PARTITION_CONFIG, '--heartbeat=250ms', '--sleep=20ms', `--hostname=host-${n}`],
          { MAILQ_DATABASE_URL: url.toString(), RECORDING_DATABASE_URL: rec.db.url },
        ),
      );
    }
    const remaining = () => rec.count('jobs');
    await waitFor('a sixth of the jobs done', async () => (await remaining()) <= JOBS * (5 / 6), 60_000, 100);
    const partitioned = (await rec.workers()).find((row) => row.host === 'host-2')!;
    const partitionedPid = Number(partitioned.pid);
    // Cut it off just after it started a long job, so that one outlives its lease and must be aborted.
    await waitFor('host-2 to start a long job', async () => {
      const [rows] = (await rec.mq.knex.raw(
        `SELECT COUNT(*) AS n FROM job_runs WHERE pid = ? AND ended_at IS NULL AND started_at > NOW(3) - INTERVAL 800000 MICROSECOND
           AND CAST(SUBSTRING(job_key, 3) AS UNSIGNED) % 100 = 50`,
        [partitionedPid],
      )) as [Array<{ n: number }>];
      return Number(rows[0]!.n) > 0;
    }, 60_000, 50);

    proxies[1]!.stall();
    const partitionedAt = Date.now();
    // Its leases as the database last renewed them: from here on it cannot renew them.
    const leaseUntil = new Map<number, number>(
      (await rec.mq.knex('jobs').where({ reserved_by: partitioned.id }).select('id', 'lease_until')).map((row) => [Number(row.id), (row.lease_until as Date).getTime()]),
    );
    await new Promise((resolve) => setTimeout(resolve, PARTITION_MS));
    const remainingAtHeal = await remaining();
    proxies[1]!.forward();
    const healedAt = Date.now();

    await waitFor('the queue to drain', async () => (await remaining()) === 0, 120_000, 200);
    // The partitioned worker took new jobs once it was back.
    const runs = (await rec.runs()) as JobRun[];
    expect(runs.some((run) => run.pid === partitionedPid && run.started_at.getTime() > healedAt)).toBe(true);
    for (const host of hosts) host.child.kill('SIGTERM');
    const exits = await Promise.all(hosts.map((host) => host.exited));
    expect(exits.map((exit) => exit.code)).toEqual([0, 0, 0]);

    // 0 lost.
    const finished = new Set(runs.filter((run) => run.finished_at).map((run) => run.job_key));
    expect(keys.filter((key) => !finished.has(key)), 'jobs that never completed').toEqual([]);
    expect(await rec.count('failed_jobs')).toBe(0);
    // 0 runs overlapping in time; every run recorded its end.
    expect(runs.filter((run) => !run.ended_at), 'runs without an end').toEqual([]);
    expect(overlappingRuns(runs), 'jobs run twice at once').toEqual([]);

    // The partitioned worker let its jobs go during the partition: running ones were aborted (their
    // signal fired with a LeaseLostError), finished ones waiting for their DELETE were dropped...
    const aborted = runs.filter((run) => run.pid === partitionedPid && run.end_reason === 'LeaseLostError');
    expect(aborted.length).toBeGreaterThan(0);
    // The jobs it held when it was cut off were aborted before their leases ended (the room left is
    // printed below: up to one renewal interval).
    const heldAtCut = aborted.filter((run) => leaseUntil.has(Number(run.job_id)));
    expect(heldAtCut.length).toBeGreaterThan(0);
    const roomMs = heldAtCut.map((run) => leaseUntil.get(Number(run.job_id))! - run.ended_at!.getTime());
    for (const [n, run] of heldAtCut.entries()) expect(roomMs[n], `job ${run.job_id}: ms between its abort and its lease's end`).toBeGreaterThan(0);
    const letGoAt = new Map<number, number>();
    for (const line of hosts[1]!.logs()) if (line.msg === 'let go of a job whose lease was lost') letGoAt.set(Number(line.jobId), Number(line.time));
    for (const run of aborted) expect(letGoAt.has(Number(run.job_id)), `aborted job ${run.job_id} is in the let-go log`).toBe(true);
    // ...and wrote no outcome for them afterwards: the next write that ended its reservation of such a job
    // was another worker's lease sweep (later writes belong to new claims, which may be its own again).
    const writes = (await rec.mq.knex('outcome_writes').where({ old_reserved_by: partitioned.id }).orderBy('id')) as OutcomeWrite[];
    const writtenAfterLettingGo = [...letGoAt].flatMap(([jobId, at]) => {
      const next = writes.find((write) => Number(write.job_id) === jobId && write.at.getTime() > at);
      return next && !(next.op === 'update' && next.new_last_error?.startsWith('lease expired')) ? [next] : [];
    });
    expect(writtenAfterLettingGo, 'outcome writes by the partitioned worker after it let the job go').toEqual([]);

    const abortLag = aborted.map((run) => run.ended_at!.getTime() - partitionedAt);
    console.log(
      `partition: ${letGoAt.size} jobs let go, ${aborted.length} of them aborted mid-run ${Math.min(...abortLag)}–${Math.max(...abortLag)} ms into it (${heldAtCut.length} held at the cut), ` +
        `${Math.min(...roomMs)}–${Math.max(...roomMs)} ms before their leases ended; ` +
        `${remainingAtHeal} jobs left when it healed; ` +
        `${runs.length} runs of ${JOBS} jobs; drained ${Date.now() - healedAt} ms after the heal`,
    );
  }, 240_000);
});
