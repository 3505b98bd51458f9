import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { killIfRunning, startCli, waitFor, type CliProcess } from './support/processes.js';

let db: TestDatabase;
let demo: CliProcess | undefined;
let dashboard: CliProcess | undefined;

beforeAll(async () => {
  db = await createTestDatabase('dashboard cli');
  const early = startCli(['dashboard', '--port', '0'], { MAILQ_DATABASE_URL: db.url });
  expect((await early.exited).code).toBe(1);
  expect(early.output()).toContain('run `mailq migrate` first');
  const migrate = startCli(['migrate'], { MAILQ_DATABASE_URL: db.url });
  expect((await migrate.exited).code).toBe(0);
});

afterAll(async () => {
  killIfRunning(demo);
  killIfRunning(dashboard);
  await db?.drop();
});

it('mailq dashboard beyond localhost: exit 2 without a token; with MAILQ_DASHBOARD_TOKEN it serves bearer requests and never prints the token', async () => {
  const refused = startCli(['dashboard', '--host', '0.0.0.0', '--port', '0'], { MAILQ_DATABASE_URL: db.url, MAILQ_DASHBOARD_TOKEN: '' });
  expect((await refused.exited).code).toBe(2);
  expect(refused.output()).toContain('without a token');

  const token = 'cli-test-token-abcdefghijklmnop';
  dashboard = startCli(['dashboard', '--host', '0.0.0.0', '--port', '0'], { MAILQ_DATABASE_URL: db.url, MAILQ_DASHBOARD_TOKEN: token });
  const port = await waitFor('the dashboard address', () => /Dashboard on http:\/\/0\.0\.0\.0:(\d+)\//.exec(dashboard!.output())?.[1]);
  const base = `http://127.0.0.1:${port}`;
  expect((await fetch(`${base}/api/overview`)).status).toBe(401);
  expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  dashboard.child.kill('SIGINT');
  expect((await dashboard.exited).code).toBe(0);
  expect(dashboard.output()).not.toContain(token);
  expect(dashboard.output()).not.toContain(db.name);
});

it('mailq demo --dashboard prints the address and serves the demo’s queue while it runs', async () => {
  demo = startCli(['demo', '--dashboard', '--dashboard-port', '0', '--taxpayers', '60', '--latency', '150ms', '--concurrency', '2', '--backoff', '10ms', '--error-rate', '0'], {
    MAILQ_DATABASE_URL: db.url,
  });
  const url = await waitFor('the dashboard address', () => /Dashboard on (http:\/\/127\.0\.0\.1:\d+)\/ while the demo runs/.exec(demo!.output())?.[1]);
  const overview = await waitFor('the demo queue on the dashboard', async () => {
    const body = (await (await fetch(`${url}/api/overview`)).json()) as { queues: Array<{ queue: string; pending: number; reserved: number }>; batches: Array<{ total: number }> };
    const queue = body.queues.find((q) => q.queue === 'mailbox-sync');
    return queue && queue.pending + queue.reserved > 0 ? body : undefined;
  });
  expect(overview.batches[0]!.total).toBe(60);
  expect(await (await fetch(`${url}/`)).text()).toContain('<title>mailq dashboard</title>');
  expect((await demo.exited).code).toBe(0);
  expect(demo.output()).toContain('Synced');
  // Gone with the demo.
  await expect(fetch(`${url}/api/overview`)).rejects.toThrow();
});
