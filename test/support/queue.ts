import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Knex } from 'knex';
import { createMailq, type Mailq, type MailqOptions } from '../../src/mailq.js';
import { createLogger } from '../../src/logger.js';
import type { Output } from '../../src/cli/output.js';

/** The repository root: where `bin/mailq.js` and the compiled `dist/` live. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin', 'mailq.js');
/** Job modules for worker processes (plain ESM importing `dist/`, so `npm run build` first). */
export const FIXTURE_JOBS = path.join(ROOT, 'test', 'fixtures', 'jobs.mjs');

/** A queue on the test database with quiet logs; the caller closes it. */
export function openQueue(url: string, options: Partial<MailqOptions> = {}): Mailq {
  return createMailq({ databaseUrl: url, logger: createLogger({ level: 'silent', pretty: false }), ...options });
}

export async function count(knex: Knex, table: string, where: Record<string, unknown> = {}): Promise<number> {
  const [row] = await knex(table).where(where).count({ n: '*' });
  return Number(row?.n ?? 0);
}

/** Polls until `check` returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T> | T, timeoutMs = 20_000, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** An Output that records what a command prints, for `main(argv, output)`. */
export interface CapturedOutput extends Output {
  stdout: string[];
  stderr: string[];
  readonly text: string;
}

export function captureOutput(): CapturedOutput {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (text) => void stdout.push(text),
    err: (text) => void stderr.push(text),
    isTTY: false,
    get text() {
      return [...stdout, ...stderr].join('\n');
    },
  };
}

export interface ProcessResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningProcess {
  child: ChildProcess;
  /** Everything written so far. */
  readonly stdout: string;
  readonly stderr: string;
  exited: Promise<ProcessResult>;
}

/** Starts `node bin/mailq.js …` as a real process, with a clean mailq environment plus `env`. */
export function startCli(args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): RunningProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, MAILQ_LOG_LEVEL: 'info' };
  for (const key of Object.keys(env)) if (key.startsWith('MAILQ_') && key !== 'MAILQ_LOG_LEVEL') delete env[key];
  delete env.DATABASE_URL;
  const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd ?? ROOT, env: { ...env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<ProcessResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return {
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    exited,
  };
}

/** Runs `node <args>` from the repository root; kills it (and says so) after `timeoutMs`. */
export async function runNode(args: string[], options: { timeoutMs: number }): Promise<ProcessResult> {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export function runCli(args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<ProcessResult> {
  return startCli(args, options).exited;
}

/** Milliseconds between two DATETIME(3) values, computed by the database (no client clock, no time zones). */
export async function millisBetween(knex: Knex, earlier: Knex.Value, later: Knex.Value): Promise<number> {
  const [rows] = (await knex.raw('SELECT TIMESTAMPDIFF(MICROSECOND, ?, ?) AS us', [earlier, later])) as [Array<{ us: number | string }>];
  return Number(rows[0]!.us) / 1000;
}

/** The side-effect tables the fixture jobs write (test/fixtures/jobs.mjs). */
export async function createSideEffectTables(knex: Knex): Promise<void> {
  await knex.raw(`CREATE TABLE test_runs (n INT PRIMARY KEY, job_id BIGINT NOT NULL, runs INT NOT NULL, pid INT NOT NULL)`);
  await knex.raw(`CREATE TABLE test_starts (id INT AUTO_INCREMENT PRIMARY KEY, n INT NOT NULL, attempt INT NOT NULL, pid INT NOT NULL, started_at DATETIME(3) NOT NULL)`);
}
