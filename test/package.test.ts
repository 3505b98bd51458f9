import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrations } from '../migrations/index.js';
import { mailboxMigrations } from '../src/mailbox/migrations/index.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { openQueue, ROOT } from './support/queue.js';

// mailq as an app gets it: `npm pack` (of dist: run `npm run build` first), unpacked into a scratch
// app's node_modules beside the dependencies it declares, then used by name: 'mailq', 'mailq/mailbox',
// 'mailq/testing', and `npx mailq`.

const run = promisify(execFile);
const queueMigrationNames = migrations.map((migration) => migration.name);
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const VITEST = path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');

let db: TestDatabase;
let mq: Mailq;
let app: string;
let files: string[];

beforeAll(async () => {
  db = await createTestDatabase('package');
  mq = openQueue(db.url);
  app = await mkdtemp(path.join(tmpdir(), 'mailq-app-'));
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', app], { cwd: ROOT });
  const [packed] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  files = packed!.files.map((file) => file.path);

  const installed = path.join(app, 'node_modules', 'mailq');
  await mkdir(installed, { recursive: true });
  await run('tar', ['-xzf', path.join(app, packed!.filename), '-C', installed, '--strip-components=1']);
  // Its dependencies, and the tools the app's own tests use, linked from this repo's node_modules.
  const manifest = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  for (const dependency of [...Object.keys(manifest.dependencies), 'vitest', 'typescript', '@types/node']) {
    const target = path.join(app, 'node_modules', dependency);
    await mkdir(path.dirname(target), { recursive: true });
    await symlink(path.join(ROOT, 'node_modules', dependency), target);
  }
  await mkdir(path.join(app, 'node_modules', '.bin'));
  await symlink(path.join('..', 'mailq', 'bin', 'mailq.js'), path.join(app, 'node_modules', '.bin', 'mailq'));
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }));
  await writeFile(
    path.join(app, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] } }),
  );
  // The app-test example, copied as an app would; the type check below covers it too.
  await cp(path.join(ROOT, 'examples', 'app-tests'), path.join(app, 'example'), { recursive: true });
}, 120_000);

afterAll(async () => {
  await mq?.close();
  await db?.drop();
  if (app) await rm(app, { recursive: true, force: true });
});

async function tablesWith(prefix: string): Promise<string[]> {
  const [rows] = (await mq.knex.raw('SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?', [`${prefix}%`])) as [Array<{ name: string }>];
  return rows.map((row) => row.name).sort();
}

function npxMailq(...args: string[]) {
  return run('npx', ['--no', 'mailq', ...args, '--database-url', db.url], { cwd: app });
}

describe('the packed package', () => {
  it('ships compiled code, migrations and assets, no sources or tests', () => {
    expect(files).toEqual(expect.arrayContaining(['dist/migrations/index.js', 'dist/src/mailbox/index.d.ts', 'dist/src/testing/index.d.ts', 'assets/dashboard/index.html']));
    expect(files.some((file) => file.startsWith('test/') || file.startsWith('src/') || file.startsWith('examples/'))).toBe(false);
  });

  it('ships every local file the README shows, so the README read from the package (node_modules, unpkg) finds its images', async () => {
    const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
    const shown = [...readme.matchAll(/!\[[^\]]*\]\(([^)\s]+)\)|<img[^>]*\ssrc="([^"]+)"/g)].map((match) => match[1] ?? match[2]!);
    const local = shown.filter((target) => !/^[a-z]+:/i.test(target)).map((target) => path.posix.normalize(target));
    expect(local).toContain('docs/dashboard.png');
    expect(local.filter((target) => !files.includes(target))).toEqual([]);
  });

  it("'mailq', 'mailq/mailbox' and 'mailq/testing' resolve with their types", async () => {
    await writeFile(
      path.join(app, 'types.ts'),
      `import { createMailq, defineJob, type JobQueue } from 'mailq';
       import { mailboxTables, MAILBOX_SYNC_QUEUE } from 'mailq/mailbox';
       import { drain, fakeQueue, runInline } from 'mailq/testing';
       import { z } from 'zod';
       // @ts-expect-error the mailbox sync is not in the root export
       import { MailboxSync } from 'mailq';

       const count = defineJob({ name: 'count', schema: z.object({ n: z.number() }), handle() {} });
       const queue: JobQueue = fakeQueue();
       await queue.dispatch(count, { n: 1 });
       const queueName: string = MAILBOX_SYNC_QUEUE;
       const tables: string = mailboxTables(createMailq({ databaseUrl: 'mysql://x@localhost/db' })).taxpayers;
       // @ts-expect-error the payload is typed by the job's schema
       await runInline(count, { n: 'one' });
       // @ts-expect-error drain runs a real queue, not a fake one
       await drain(queue);
       console.log(queueName, tables, MailboxSync);`,
    );
    // Unused @ts-expect-error lines fail too: an export typed as any would not pass. The example is checked too.
    await run(process.execPath, [TSC, '-p', '.'], { cwd: app });
    const { stdout } = await run(process.execPath, ['-e', `const [root, mailbox, testing] = await Promise.all(['mailq', 'mailq/mailbox', 'mailq/testing'].map((name) => import(name))); console.log(typeof root.createMailq, typeof mailbox.migrateMailbox, typeof testing.runInline, 'MailboxSync' in root)`, '--input-type=module'], { cwd: app });
    expect(stdout.trim()).toBe('function function function false');
  });

  it('createMailq(...).migrate() and `npx mailq migrate` create only the queue\'s tables; enabling the mailbox adds its own', async () => {
    await writeFile(
      path.join(app, 'migrate.mjs'),
      `import { createMailq } from 'mailq';
       const mq = createMailq({ databaseUrl: process.argv[2], tablePrefix: 'lib_' });
       const applied = await mq.migrate();
       await mq.close();
       console.log(JSON.stringify(applied));`,
    );
    const library = await run(process.execPath, ['migrate.mjs', db.url], { cwd: app });
    expect(JSON.parse(library.stdout)).toEqual(queueMigrationNames);
    const queueTables = await tablesWith('lib_');
    expect(queueTables).toContain('lib_jobs');
    expect(queueTables.filter((name) => /taxpayers|mailbox/.test(name))).toEqual([]);

    const cli = await npxMailq('migrate', '--prefix', 'cli_');
    expect(cli.stdout).toContain(`Migrated: ${queueMigrationNames.join(', ')}`);
    expect(await tablesWith('cli_')).toEqual(queueTables.map((name) => name.replace(/^lib_/, 'cli_')));

    const withMailbox = await npxMailq('migrate', '--prefix', 'cli_', '--mailbox');
    expect(withMailbox.stdout).toContain(`Migrated: ${mailboxMigrations.map((migration) => migration.name).join(', ')}`);
    expect(await tablesWith('cli_')).toEqual([...queueTables.map((name) => name.replace(/^lib_/, 'cli_')), 'cli_mailbox_messages', 'cli_mailq_mailbox_migrations', 'cli_mailq_mailbox_migrations_lock', 'cli_taxpayers'].sort());
    const status = await npxMailq('migrate', '--prefix', 'cli_', '--mailbox', '--status', '--json');
    expect(JSON.parse(status.stdout)).toEqual({ applied: [...queueMigrationNames, ...mailboxMigrations.map((migration) => migration.name)], pending: [] });
  });

  it('the app-test example passes with only mailq/testing (fake and inline), and once more with drain on a real queue', async () => {
    const env = { ...process.env, MAILQ_DATABASE_URL: '', DATABASE_URL: '', FORCE_COLOR: '0', NO_COLOR: '1' };
    const vitest = (extra: Record<string, string>) => run(process.execPath, [VITEST, 'run', '--dir', 'example', '--reporter', 'json'], { cwd: app, env: { ...env, ...extra } });
    type Report = { numPassedTests: number; numFailedTests: number; numPendingTests: number };
    const offline = JSON.parse((await vitest({})).stdout) as Report;
    expect(offline).toMatchObject({ numFailedTests: 0, numPendingTests: 1 });
    expect(offline.numPassedTests).toBeGreaterThanOrEqual(6);
    const online = JSON.parse((await vitest({ MAILQ_DATABASE_URL: db.url })).stdout) as Report;
    expect(online).toMatchObject({ numFailedTests: 0, numPendingTests: 0, numPassedTests: offline.numPassedTests + 1 });
  });
});
