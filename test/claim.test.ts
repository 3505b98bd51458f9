import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { tableNames } from '../src/db/tables.js';
import type { Mailq } from '../src/mailq.js';
import { JobRows } from '../src/worker/job-rows.js';
import type { ClaimedJob } from '../src/worker/claimed-job.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, millisBetween, openQueue } from './support/queue.js';

const PREFIX = 'mq_';
const tables = tableNames(PREFIX);
const defaults = { maxAttempts: 3, timeoutMs: 5_000, leaseGraceMs: 1_000, leaseMaxMs: 300_000 };

let db: TestDatabase;
let mq: Mailq;
let rows: JobRows;

beforeAll(async () => {
  db = await createTestDatabase('claim');
  // A pool large enough for every concurrent claimer to hold its own connection.
  mq = openQueue(db.url, { tablePrefix: PREFIX, poolMax: 24 });
  await mq.migrate();
  rows = new JobRows(mq.knex, tables);
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex(tables.jobs).delete();
});

interface ExplainRow {
  key: string | null;
  Extra: string | null;
  type: string;
}

async function explain(sql: { toSQL(): { sql: string; bindings: readonly unknown[] } }): Promise<ExplainRow[]> {
  const { sql: text, bindings } = sql.toSQL();
  const [plan] = (await mq.knex.raw(`EXPLAIN ${text}`, bindings as never)) as [ExplainRow[]];
  return plan;
}

describe('the claim SELECT', () => {
  it('is served by the claim index, with no filesort, on a table with many rows', async () => {
    // Enough rows, spread over queues, priorities, reservations and due times, that a full scan would show.
    const payloads = Array.from({ length: 3_000 }, (_, n) => ({ n }));
    await mq.dispatchMany('noop', payloads.slice(0, 1_000), { queue: 'mail' });
    await mq.dispatchMany('noop', payloads.slice(1_000, 2_000), { queue: 'mail', priority: 3, delay: '1h' });
    await mq.dispatchMany('noop', payloads.slice(2_000), { queue: 'other' });
    await mq.knex(tables.jobs).where('id', '<', 200).update({ reserved_at: mq.knex.raw('NOW(3)') });
    await mq.knex.raw(`ANALYZE TABLE \`${tables.jobs}\``);

    for (const queue of ['mail', 'other', 'empty']) {
      const plan = await explain(rows.claimSelectSql(queue, 10));
      expect(plan).toHaveLength(1);
      expect(plan[0]!.key, queue).toBe(`${PREFIX}jobs_claim_index`);
      expect(plan[0]!.Extra ?? '', queue).not.toMatch(/filesort|temporary/i);
      // One range (or ref) of the index, never a scan of the whole index or table.
      expect(['ref', 'range'], queue).toContain(plan[0]!.type);
    }
  });

  it('claims due, free jobs of its queue only, in priority then FIFO order, and reserves them on the database clock', async () => {
    const late = await mq.dispatch('noop', { n: 'late' }, { queue: 'mail', delay: '1h' });
    const other = await mq.dispatch('noop', { n: 'other' }, { queue: 'other' });
    const low = await mq.dispatch('noop', { n: 'low' }, { queue: 'mail', priority: 9 });
    const first = await mq.dispatch('noop', { n: 'first' }, { queue: 'mail' });
    const second = await mq.dispatch('noop', { n: 'second' }, { queue: 'mail' });
    const urgent = await mq.dispatch('noop', { n: 'urgent' }, { queue: 'mail', priority: -1 });

    const claimed = await rows.claim(['mail'], 10, 'worker-a', defaults);
    expect(claimed.map((job) => job.id)).toEqual([urgent.id, first.id, second.id, low.id]);
    expect(claimed[0]).toMatchObject({ attempt: 1, maxAttempts: 3, timeoutMs: 5_000, queue: 'mail', name: 'noop' });

    const reserved = await mq.knex(tables.jobs).whereIn('id', claimed.map((job) => job.id));
    for (const row of reserved) {
      expect(row).toMatchObject({ reserved_by: 'worker-a', attempts: 1, max_attempts: 3, timeout_ms: 5_000 });
      // The lease is the job's timeout plus the grace, from the reservation time.
      expect(await millisBetween(mq.knex, row.reserved_at, row.lease_until)).toBe(6_000);
    }
    expect(await mq.knex(tables.jobs).whereIn('id', [late.id, other.id]).whereNull('reserved_at').count({ n: '*' })).toEqual([{ n: 2 }]);

    // Reserved jobs are not claimed again; the next claim finds nothing due.
    expect(await rows.claim(['mail'], 10, 'worker-b', defaults)).toEqual([]);
  });

  it('reads queues in the order given: the second only when the first has too few', async () => {
    await mq.dispatchMany('noop', [{}, {}, {}], { queue: 'low' });
    await mq.dispatchMany('noop', [{}, {}], { queue: 'high' });
    const claimed = await rows.claim(['high', 'low'], 3, 'w', defaults);
    expect(claimed.map((job) => job.queue)).toEqual(['high', 'high', 'low']);
  });
});

describe('concurrent claimers (SKIP LOCKED)', () => {
  it('never hand out the same job twice: disjoint sets whose union is every job', async () => {
    const total = 400;
    await mq.dispatchMany('noop', Array.from({ length: total }, (_, n) => ({ n })), { queue: 'race' });

    const claimers = 16;
    const perClaimer = await Promise.all(
      Array.from({ length: claimers }, async (_, index) => {
        const mine: ClaimedJob[] = [];
        let emptyInARow = 0;
        // One empty claim never means "drained" (SKIP LOCKED may have skipped rows others locked).
        while (emptyInARow < 3 || (await rows.anyDue(['race']))) {
          const claimed = await rows.claim(['race'], 1 + (index % 7), `claimer-${index}`, defaults);
          mine.push(...claimed);
          emptyInARow = claimed.length === 0 ? emptyInARow + 1 : 0;
        }
        return mine;
      }),
    );

    const ids = perClaimer.flat().map((job) => job.id);
    expect(ids).toHaveLength(total);
    expect(new Set(ids).size).toBe(total);
    // More than one claimer got work: the test really raced.
    expect(perClaimer.filter((mine) => mine.length > 0).length).toBeGreaterThan(1);
    // Every row is reserved exactly once, by the claimer that reported it.
    const owners = new Map(perClaimer.flatMap((mine, index) => mine.map((job) => [job.id, `claimer-${index}`] as const)));
    const reserved = await mq.knex(tables.jobs).select('id', 'reserved_by', 'attempts').where({ queue: 'race' });
    expect(reserved).toHaveLength(total);
    for (const row of reserved) {
      expect(row.attempts).toBe(1);
      expect(row.reserved_by).toBe(owners.get(Number(row.id)));
    }
    expect(await count(mq.knex, tables.jobs, { reserved_at: null })).toBe(0);
  });
});
