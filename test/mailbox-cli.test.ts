import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../dist/src/cli/main.js';
import { parseJsonColumn } from '../src/db/json.js';
import { connect, type Knex } from '../src/db/connection.js';
import { tableNames } from '../src/db/tables.js';
import { fakeMailboxMessages, startFakeTws, type FakeTws } from '../src/mailbox/fake-tws.js';
import { MailboxStore } from '../src/mailbox/store.js';
import { mailboxTables } from '../src/mailbox/tables.js';
import { WorkerRows } from '../src/worker/worker-rows.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { captureOutput, countRows, seedTaxpayers, taxIdOf } from './support/mailbox.js';

const BIN = new URL('../bin/mailq.js', import.meta.url).pathname;
const TOKEN = 'cli-token-77e1';
let db: TestDatabase;
let knex: Knex;
let store: MailboxStore;
let ids: number[];
const tables = tableNames();
const mailbox = mailboxTables({ tables });

async function mailq(...args: string[]) {
  const output = captureOutput();
  const code = await main([...args, '--database-url', db.url], output);
  return { code, out: output.text(), err: output.stderr.join('\n') };
}

async function jobRows() {
  const rows = (await knex(tables.jobs).select('queue', 'name', 'payload', 'max_attempts', 'backoff', 'timeout_ms').orderBy('id')) as Array<Record<string, unknown>>;
  return rows.map((row) => ({ ...row, payload: parseJsonColumn(row.payload), backoff: parseJsonColumn(row.backoff) }));
}

beforeAll(async () => {
  db = await createTestDatabase('mailbox-cli');
  expect((await mailq('migrate', '--mailbox')).code).toBe(0);
  knex = connect(db.url);
  store = new MailboxStore(knex, mailbox);
  // 30 taxpayers in teams 1..3; taxpayer 30 is inactive.
  ids = await seedTaxpayers(store, 30, { teams: 3, inactive: [30] });
});

afterAll(async () => {
  await knex?.destroy();
  await db?.drop();
});

afterEach(async () => {
  await knex(tables.jobs).delete();
  await knex(tables.failedJobs).delete();
});

describe('mailq sync-mailbox --queue', () => {
  it('dispatches one job per active taxpayer and prints the summary', async () => {
    const { code, out } = await mailq('sync-mailbox', '--queue');
    expect(code).toBe(0);
    expect(out).toMatch(/│ Jobs dispatched\s+│ 29\s+│/);
    expect(out).toMatch(/│ Queue\s+│ mailbox-sync\s+│/);
    expect(out).toMatch(/│ Tries\s+│ 3\s+│/);
    expect(out).toMatch(/│ Timeout\s+│ 2m\s+│/);
    expect(out).toMatch(/│ Backoff\s+│ 1m, 2m, 5m\s+│/);
    expect(out).toMatch(/│ Workers running\s+│ 0 \(0 jobs at once\)/);
    expect(out).toMatch(/│ Estimated time\s+│ no worker is running on 'mailbox-sync'; at ~1s per taxpayer, assumed: 29s one at a time, 3s with 10 at once/);
    expect(out).toContain("No worker serves 'mailbox-sync': start some with mailq work --queue=mailbox-sync");
    // One batch around the night's jobs, to follow with `mailq batch <id>`.
    const batchId = /│ Batch\s+│ ([0-9a-f-]{36})\s+│/.exec(out)?.[1];
    expect(out).toContain(`Follow it: mailq batch ${batchId} --watch`);
    expect(await knex(tables.jobs).where({ batch_id: batchId! }).count({ n: '*' })).toEqual([{ n: 29 }]);
    expect(await knex(tables.jobBatches).where({ id: batchId! }).first('total_jobs', 'pending_jobs')).toEqual({ total_jobs: 29, pending_jobs: 29 });
    // A second run while those are pending skips every taxpayer: one pending sync job each.
    const again = await mailq('sync-mailbox', '--queue', '--json');
    expect(JSON.parse(again.out)).toMatchObject({ taxpayers: 29, dispatched: 0, skipped: 29 });
    const rows = await jobRows();
    expect(rows).toHaveLength(29);
    expect(rows.map((row) => row.payload)).toEqual(ids.slice(0, 29).map((taxpayerId) => ({ taxpayerId })));
    expect(rows[0]).toEqual({ queue: 'mailbox-sync', name: 'sync-taxpayer-mailbox', payload: { taxpayerId: ids[0] }, max_attempts: 3, backoff: [60_000, 120_000, 300_000], timeout_ms: 120_000 });
  });

  it('estimates from the live workers that serve the queue (their heartbeats in the workers table)', async () => {
    const workers = new WorkerRows(knex, tables);
    const worker = (id: string, queues: string[], concurrency: number) => ({ id, kind: 'worker' as const, host: 'h', pid: 1, queues, concurrency, heartbeatMs: 5_000 });
    await workers.register(worker('sync-a', ['mailbox-sync'], 4), { state: 'running' });
    await workers.register(worker('sync-b', ['other', 'mailbox-sync'], 6), { state: 'running' });
    await workers.register(worker('elsewhere', ['other'], 8), { state: 'running' });
    await workers.register(worker('dead', ['mailbox-sync'], 8), { state: 'running' });
    await knex(tables.workers).where({ id: 'dead' }).update({ last_beat_at: knex.raw('NOW(3) - INTERVAL 1 MINUTE') });
    try {
      const { code, out } = await mailq('sync-mailbox', '--queue', '--team', '1');
      expect(code).toBe(0);
      expect(out).toMatch(/│ Workers running\s+│ 2 \(10 jobs at once\)/);
    } finally {
      await knex(tables.workers).delete();
    }
  });

  it('narrows to teams and taxpayers, and takes the job settings as flags', async () => {
    expect((await mailq('sync-mailbox', '--queue', '--team', '2')).code).toBe(0);
    const team2 = (await knex(mailbox.taxpayers).where({ team_id: 2, active: true }).orderBy('id').pluck('id')).map(Number);
    expect((await jobRows()).map((row) => (row.payload as { taxpayerId: number }).taxpayerId)).toEqual(team2);
    await knex(tables.jobs).delete();

    const { code, out } = await mailq('sync-mailbox', '--queue', '--taxpayer', String(ids[3]), '--taxpayer', String(ids[5]), '--tries', '5', '--timeout', '30s', '--backoff', '1,2');
    expect(code).toBe(0);
    expect(out).toMatch(/│ Jobs dispatched\s+│ 2\s+│/);
    expect(out).toMatch(/│ Backoff\s+│ 1s, 2s\s+│/);
    expect(await jobRows()).toEqual(
      [ids[3], ids[5]].map((taxpayerId) => ({ queue: 'mailbox-sync', name: 'sync-taxpayer-mailbox', payload: { taxpayerId }, max_attempts: 5, backoff: [1_000, 2_000], timeout_ms: 30_000 })),
    );
  });

  it('--dry-run counts without writing; --json is machine-readable', async () => {
    const dry = await mailq('sync-mailbox', '--queue', '--dry-run');
    expect(dry.code).toBe(0);
    expect(dry.out).toMatch(/│ Jobs dispatched\s+│ 0 \(dry run: 29 would be\)/);
    expect(await countRows(knex, tables.jobs)).toBe(0);

    const asJson = await mailq('sync-mailbox', '--queue', '--team', '1', '--json');
    expect(asJson.code).toBe(0);
    const team1 = await countRows(knex, mailbox.taxpayers, { team_id: 1, active: true });
    expect(JSON.parse(asJson.out)).toMatchObject({ taxpayers: team1, dispatched: team1, queue: 'mailbox-sync', tries: 3, timeoutMs: 120_000, backoff: [60_000, 120_000, 300_000], dryRun: false, workers: { workers: 0, slots: 0 } });
  });

  it('refuses taxpayers that do not exist or are inactive, dispatching nothing (exit 1)', async () => {
    const missing = await mailq('sync-mailbox', '--queue', '--taxpayer', String(ids[0]), '--taxpayer', '99999');
    expect(missing.code).toBe(1);
    expect(missing.err).toBe('mailq: no taxpayer with id 99999: nothing was synced');
    const inactive = await mailq('sync-mailbox', '--queue', '--taxpayer', String(ids[29]));
    expect(inactive.code).toBe(1);
    expect(inactive.err).toBe(`mailq: taxpayer ${ids[29]} is inactive: nothing was synced`);
    expect(await countRows(knex, tables.jobs)).toBe(0);
  });
});

describe('mailq sync-mailbox (direct mode)', () => {
  let tws: FakeTws;
  const broken = [taxIdOf(4), taxIdOf(7)];

  beforeAll(async () => {
    tws = await startFakeTws({ token: TOKEN, latencyMs: 5, brokenTaxpayers: broken });
  });
  afterAll(async () => {
    await tws.close();
  });
  afterEach(() => {
    delete process.env.MAILQ_TWS_URL;
    delete process.env.MAILQ_TWS_TOKEN;
  });

  it('syncs in this process with --concurrency, prints the summary and the failures, exit 1 when some failed', async () => {
    process.env.MAILQ_TWS_URL = tws.url;
    process.env.MAILQ_TWS_TOKEN = TOKEN;
    const chosen = ids.slice(0, 10);
    const { code, out } = await mailq('sync-mailbox', ...chosen.flatMap((id) => ['--taxpayer', String(id)]), '--concurrency', '4');
    expect(code).toBe(1);
    const expectedMessages = [1, 2, 3, 5, 6, 8, 9, 10].reduce((sum, n) => sum + fakeMailboxMessages(taxIdOf(n)).length, 0);
    expect(out).toMatch(/│ Taxpayers\s+│ 10\s+│/);
    expect(out).toMatch(/│ Synced\s+│ 8\s+│/);
    expect(out).toMatch(/│ Failed\s+│ 2\s+│/);
    expect(out).toMatch(new RegExp(`│ Messages\\s+│ ${expectedMessages}\\s+│`));
    expect(out).toMatch(/│ Concurrency\s+│ 4\s+│/);
    expect(out).toMatch(new RegExp(`│ TWS 404: taxpayer not found\\s+│ 1\\s+│ ${ids[3]}: ${taxIdOf(4)}: answered 404`));
    expect(out).toMatch(new RegExp(`│ TWS 403: access forbidden\\s+│ 1\\s+│ ${ids[6]}: ${taxIdOf(7)}: answered 403`));
    expect(await countRows(knex, mailbox.mailboxMessages)).toBe(expectedMessages);
    // Direct mode does not go through the queue.
    expect(await countRows(knex, tables.jobs)).toBe(0);
    expect(await countRows(knex, tables.failedJobs)).toBe(0);

    const again = await mailq('sync-mailbox', '--team', '1', '--json');
    const team1 = (await knex(mailbox.taxpayers).where({ team_id: 1, active: true }).pluck('tax_id')) as string[];
    const result = JSON.parse(again.out) as { total: number; synced: number; failed: number };
    expect(result.total).toBe(team1.length);
    expect(result.failed).toBe(team1.filter((taxId) => broken.includes(taxId)).length);
    expect(again.code).toBe(result.failed > 0 ? 1 : 0);
  });

  it('says what to set when TWS is not configured (exit 2)', async () => {
    const { code, err } = await mailq('sync-mailbox', '--taxpayer', String(ids[0]));
    expect(code).toBe(2);
    expect(err).toBe('mailq: TWS is not configured: set MAILQ_TWS_URL and MAILQ_TWS_TOKEN (or tws.url and tws.token in mailq.config.js)');
  });
});

describe('bad flags', () => {
  it.each([
    [['sync-mailbox', '--concurrency', '0'], "--concurrency: expected an integer from 1 to 10000, got '0'"],
    [['sync-mailbox', '--concurrency', 'lots'], "--concurrency: expected an integer from 1 to 10000, got 'lots'"],
    [['sync-mailbox', '--queue', '--concurrency', '4'], '--concurrency is for direct mode'],
    [['sync-mailbox', '--taxpayer', 'abc'], "--taxpayer: expected an integer ≥ 1, got 'abc'"],
    [['sync-mailbox', '--team', '-1'], "--team: expected an integer ≥ 1, got '-1'"],
    [['sync-mailbox', '--timeout', '10s'], '--timeout and --backoff apply to queued jobs: add --queue'],
    [['sync-mailbox', '--queue', '--tries', '0'], "--tries: expected an integer from 1 to 10000, got '0'"],
    [['sync-mailbox', '--queue', '--backoff', 'soon'], "--backoff: invalid duration 'soon'"],
    [['sync-mailbox', '--queue', '--frobnicate'], 'Unknown argument: frobnicate'],
    [['demo', '--taxpayers', '0'], "--taxpayers: expected an integer from 1 to 1000000, got '0'"],
    [['demo', '--latency', 'slow'], "invalid duration 'slow'"],
    [['fake-tws', '--error-rate', '2'], "--error-rate: expected a number from 0 to 1, got '2'"],
    [['fake-tws', '--rate-limit', 'fast'], 'Invalid rate "fast"'],
  ])('%j → exit 2', async (args, message) => {
    const { code, err } = await mailq(...args);
    expect(code).toBe(2);
    expect(err).toContain(message);
    expect(await countRows(knex, tables.jobs)).toBe(0);
  });
});

describe('mailq work runs the built-in sync job, configured from the environment', () => {
  it('drains a --queue dispatch against TWS; the token reaches neither the queue nor the logs', async () => {
    const tws = await startFakeTws({ token: TOKEN, latencyMs: 5, brokenTaxpayers: [taxIdOf(2)] });
    try {
      // Forget the direct-mode test's syncs, so TWS sends whole mailboxes again.
      await knex(mailbox.mailboxMessages).delete();
      await knex(mailbox.taxpayers).update({ last_synced_at: null });
      const chosen = ids.slice(0, 6);
      expect((await mailq('sync-mailbox', '--queue', ...chosen.flatMap((id) => ['--taxpayer', String(id)]))).code).toBe(0);
      const worker = await run(['work', '--queue', 'mailbox-sync', '--concurrency', '3', '--stop-when-empty', '--log-level', 'info'], { MAILQ_DATABASE_URL: db.url, MAILQ_TWS_URL: tws.url, MAILQ_TWS_TOKEN: TOKEN });
      expect(worker.code).toBe(0);
      expect(await countRows(knex, tables.jobs)).toBe(0);
      const expected = [1, 3, 4, 5, 6].reduce((sum, n) => sum + fakeMailboxMessages(taxIdOf(n)).length, 0);
      expect(await countRows(knex, mailbox.mailboxMessages)).toBe(expected);
      const failed = (await knex(tables.failedJobs).select('attempts', 'exception', 'payload')) as Array<{ attempts: number; exception: string; payload: string }>;
      expect(failed).toHaveLength(1);
      expect(failed[0]!.attempts).toBe(1);
      expect(failed[0]!.exception).toContain(`answered 404: taxpayer ${taxIdOf(2)} not found`);
      expect(worker.stderr).toContain('job failed');
      expect(JSON.stringify(failed) + worker.stderr + worker.stdout).not.toContain(TOKEN);
    } finally {
      await tws.close();
    }
  });
});

describe('mailq fake-tws', () => {
  it('serves mailboxes until SIGTERM, then prints what it served', async () => {
    const child = spawn(process.execPath, [BIN, 'fake-tws', '--port', '0', '--latency', '5ms', '--token', TOKEN, '--broken', 'none', '--rate-limit', 'none'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = createInterface({ input: child.stdout! });
    const output: string[] = [];
    const url = await new Promise<string>((resolve, reject) => {
      lines.on('line', (line) => {
        output.push(line);
        const match = /^Fake TWS listening on (http:\/\/\S+)$/.exec(line);
        if (match) resolve(match[1]!);
      });
      child.once('exit', (code) => reject(new Error(`fake-tws exited early (${code})`)));
    });
    const refused = await fetch(`${url}/taxpayers/${taxIdOf(1)}/mailbox`);
    expect(refused.status).toBe(401);
    const page = await fetch(`${url}/taxpayers/${taxIdOf(1)}/mailbox?page=1`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(page.status).toBe(200);
    expect(((await page.json()) as { messages: unknown[] }).messages).toHaveLength(Math.min(50, fakeMailboxMessages(taxIdOf(1)).length));
    const stats = (await (await fetch(`${url}/_stats`)).json()) as { requests: number; ok: number; unauthorized: number };
    expect(stats).toMatchObject({ requests: 2, ok: 1, unauthorized: 1 });
    const exit = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(output.join('\n')).toMatch(/│ Requests\s+│ 2\s+│/);
  });
});

describe('mailq demo', () => {
  it('runs the whole sync in a configured database, prints the side-by-side, and cleans up after itself', async () => {
    const { code, out } = await mailq('demo', '--taxpayers', '40', '--latency', '5ms', '--concurrency', '4', '--backoff', '10ms', '--error-rate', '0.05');
    expect(code).toBe(0);
    expect(out).toContain('Database: the configured database');
    expect(out).toContain('Seeded 40 taxpayers (2 that TWS refuses for good, 1 whose mailbox TWS garbles)');
    // Like with like: first attempts on both sides; the retries and their backoff on a line of their own.
    expect(out).toMatch(/│ First pass\s+│ [^│]+ \(projected from 10\)\s+│ [^│]+ \(measured\)/);
    expect(out).toMatch(/Retry tail: .*\(?3 tries, backoff 10ms\)?\. Queue run in all: \S+\./);
    expect(out).toMatch(/│ Synced\s+│ 37\s+│/);
    expect(out).toMatch(/│ Failed\s+│ 3 \(2 after 1 attempt, 1 after 3 attempts\)/);
    expect(out).toMatch(/│ TWS 404: taxpayer not found\s+│ 1\s+│/);
    expect(out).toMatch(/│ TWS 403: access forbidden\s+│ 1\s+│/);
    expect(out).toMatch(/│ malformed TWS response\s+│ 1\s+│/);
    const [left] = (await knex.raw("SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'mailq\\_demo\\_%'")) as [Array<{ n: number }>];
    expect(Number(left[0]!.n)).toBe(0);
  });

  it('runs its workers as `mailq work` processes with --processes, and --keep keeps the tables', async () => {
    const { code, out } = await mailq('demo', '--taxpayers', '30', '--latency', '5ms', '--concurrency', '3', '--processes', '2', '--backoff', '1s', '--error-rate', '0', '--keep', '--json');
    expect(code).toBe(0);
    const result = JSON.parse(out) as { synced: number; failed: number; processes: number; failedByAttempts: Record<string, number>; kept: { tablePrefix: string }; firstPassMs: number; queueMs: number; retriesAfterFirstPass: number; speedUp: number; directProjectedMs: number };
    expect(result).toMatchObject({ synced: 27, failed: 3, processes: 2, failedByAttempts: { 1: 2, 3: 1 }, kept: { tablePrefix: 'mailq_demo_' } });
    // The malformed taxpayer fails its first attempt and is retried twice, a second apart: when every
    // taxpayer has been tried once it still waits, and the run ends later, in the retry tail.
    expect(result.retriesAfterFirstPass).toBe(1);
    expect(result.firstPassMs).toBeLessThan(result.queueMs - 500);
    expect(result.speedUp).toBeCloseTo(result.directProjectedMs / result.firstPassMs, 5);
    const demoTables = tableNames('mailq_demo_');
    expect(await countRows(knex, demoTables.jobs)).toBe(0);
    expect(await countRows(knex, demoTables.failedJobs)).toBe(3);
    expect(await countRows(knex, mailboxTables({ tables: demoTables }).taxpayers, { last_sync_status: 'ok' })).toBe(27);
  });
});

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
