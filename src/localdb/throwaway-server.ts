import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { constants, rmSync } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import mysql from 'mysql2/promise';

export class LocalServerUnavailableError extends Error {
  override readonly name = 'LocalServerUnavailableError';
}

export type ServerBinaries =
  | { flavour: 'mariadb'; server: string; installer: string; version: string }
  | { flavour: 'mysql'; server: string; version: string };

export interface ThrowawayServerOptions {
  port?: number;
  log?: (line: string) => void;
  /** More server options (`--innodb-lock-wait-timeout=2`); they hold across restart(). */
  serverArgs?: readonly string[];
}

export interface ThrowawayServer {
  url: string;
  port: number;
  /** The temporary folder holding the datadir and socket; stop() deletes it. */
  dir: string;
  version: string;
  /**
   * Shuts the server down cleanly and starts it again on the same data and port: what a client
   * sees when its database restarts (connections drop, then refused, then answered again).
   * `downMs` is how long it stays down.
   */
  restart(downMs?: number): Promise<void>;
  /** Like restart(), but the server comes back on another port: a failover to a new address. `url` and `port` follow. */
  moveTo(port: number, downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const EXTRA_SEARCH_DIRS = ['/usr/sbin', '/usr/bin', '/usr/local/mysql/bin'];
const READY_TIMEOUT_MS = 30_000;
const INIT_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 10_000;
const LOG_TAIL_LINES = 30;

export async function findServerBinaries(): Promise<ServerBinaries | null> {
  const server = await findExecutable(['mariadbd', 'mysqld']);
  if (server === null) return null;
  const versionLine = await serverVersionLine(server);
  if (versionLine === null) return null;
  const version = /\bVer\s+(\S+)/.exec(versionLine)?.[1] ?? versionLine;
  // Debian ships mysqld as a symlink to mariadbd, so the name alone does not tell the flavour.
  if (!/mariadb/i.test(versionLine)) return { flavour: 'mysql', server, version };
  const installer = await findExecutable(['mariadb-install-db', 'mysql_install_db']);
  return installer === null ? null : { flavour: 'mariadb', server, installer, version };
}

export { freePort };

export async function startThrowawayServer(opts: ThrowawayServerOptions = {}): Promise<ThrowawayServer> {
  const log = opts.log ?? (() => {});
  const binaries = await findServerBinaries();
  if (binaries === null) throw new LocalServerUnavailableError(noBinariesMessage());
  const startedAt = Date.now();
  const dir = await mkdtemp(join(tmpdir(), 'mailq-db-'));
  try {
    log(`initialising a ${binaries.flavour} datadir in ${dir}`);
    await initialiseDatadir(binaries, dir);
    const port = opts.port ?? (await freePort());
    const server = await launch(binaries, dir, port, opts.serverArgs ?? []);
    log(`${binaries.flavour} ready on port ${port} after ${Date.now() - startedAt} ms`);
    return server;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw asUnavailable(err);
  }
}

function searchDirs(): string[] {
  const fromPath = (process.env.PATH ?? '').split(delimiter).filter((d) => d !== '');
  return [...new Set([...fromPath, ...EXTRA_SEARCH_DIRS])];
}

async function findExecutable(names: readonly string[]): Promise<string | null> {
  for (const name of names) {
    for (const dir of searchDirs()) {
      const file = join(dir, name);
      if (await isExecutable(file)) return file;
    }
  }
  return null;
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function serverVersionLine(server: string): Promise<string | null> {
  try {
    const { stdout } = await run(server, ['--version'], 10_000);
    return stdout.trim();
  } catch {
    return null;
  }
}

function noBinariesMessage(): string {
  return (
    'No local MySQL/MariaDB server binaries found: looked for mariadbd or mysqld (and, for MariaDB, ' +
    `mariadb-install-db or mysql_install_db) in PATH and ${EXTRA_SEARCH_DIRS.join(', ')}. ` +
    'Install them (Debian/Ubuntu: apt-get install mariadb-server; macOS: brew install mariadb).'
  );
}

function dataDir(dir: string): string {
  // Oracle's --initialize refuses a datadir that already exists with content, so keep it one level down.
  return join(dir, 'data');
}

function socketPath(dir: string): string {
  return join(dir, 'sock');
}

function currentUser(): string {
  // Both tools refuse to run as root without --user=root, and --user=root fails for anyone else.
  return userInfo().username;
}

async function initialiseDatadir(binaries: ServerBinaries, dir: string): Promise<void> {
  const common = ['--no-defaults', `--datadir=${dataDir(dir)}`, `--user=${currentUser()}`];
  if (binaries.flavour === 'mariadb') {
    const args = [...common, '--auth-root-authentication-method=normal', '--skip-test-db'];
    await runOrExplain(binaries.installer, args, INIT_TIMEOUT_MS);
  } else {
    await runOrExplain(binaries.server, [...common, '--initialize-insecure'], INIT_TIMEOUT_MS);
  }
}

function serverArgs(binaries: ServerBinaries, dir: string, port: number, extra: readonly string[]): string[] {
  const common = [
    '--no-defaults',
    `--datadir=${dataDir(dir)}`,
    `--user=${currentUser()}`,
    `--port=${port}`,
    '--bind-address=127.0.0.1',
    `--socket=${socketPath(dir)}`,
    `--pid-file=${join(dir, 'server.pid')}`,
    '--innodb-flush-log-at-trx-commit=0',
    '--innodb-doublewrite=0',
    '--skip-log-bin',
    '--performance-schema=OFF',
    // --no-defaults also skips the distribution config that makes utf8mb4 the default.
    '--character-set-server=utf8mb4',
    // Parallel test files each open their own pools.
    '--max-connections=500',
  ];
  // Oracle MySQL with skip-name-resolve ignores root@localhost for TCP, and its X plugin would claim port 33060.
  return [...common, ...(binaries.flavour === 'mariadb' ? ['--skip-name-resolve'] : ['--mysqlx=OFF']), ...extra];
}

async function launch(binaries: ServerBinaries, dir: string, port: number, extraArgs: readonly string[]): Promise<ThrowawayServer> {
  let child: ChildProcess | undefined;
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  // A test run that crashes must not leave a server and its folder behind.
  process.on('exit', killOnExit);
  try {
    await spawnReady(binaries, dir, port, extraArgs, (started) => (child = started));
    await bootstrap(binaries, dir);
  } catch (err) {
    process.off('exit', killOnExit);
    if (child) await stopProcess(child);
    throw err;
  }
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child) await stopProcess(child);
      process.off('exit', killOnExit);
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  const moveTo = async (newPort: number, downMs = 0): Promise<void> => {
    if (child) await stopProcess(child);
    await new Promise((resolve) => setTimeout(resolve, downMs));
    port = newPort;
    await spawnReady(binaries, dir, port, extraArgs, (started) => (child = started));
  };
  const restart = (downMs = 0): Promise<void> => moveTo(port, downMs);
  return {
    get url() {
      return `mysql://root@127.0.0.1:${port}/test`;
    },
    get port() {
      return port;
    },
    dir,
    version: binaries.version,
    restart,
    moveTo,
    stop,
  };
}

/** Starts the server and resolves once it is ready; `onSpawn` learns of the process at once, so an exit hook can kill it. */
async function spawnReady(binaries: ServerBinaries, dir: string, port: number, extraArgs: readonly string[], onSpawn: (child: ChildProcess) => void): Promise<void> {
  const child = spawn(binaries.server, serverArgs(binaries, dir, port, extraArgs), { stdio: ['ignore', 'ignore', 'pipe'] });
  onSpawn(child);
  unrefChild(child);
  try {
    await waitUntilReady(child, collectLogTail(child));
  } catch (err) {
    await stopProcess(child);
    throw err;
  }
}

function unrefChild(child: ChildProcess): void {
  // A caller that forgets stop() should still see its process exit; the exit hook cleans up.
  child.unref();
  (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();
}

interface LogTail {
  lines: string[];
  onLine(listener: (line: string) => void): () => void;
}

function collectLogTail(child: ChildProcess): LogTail {
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  if (child.stderr !== null) {
    createInterface({ input: child.stderr }).on('line', (line) => {
      lines.push(line);
      if (lines.length > LOG_TAIL_LINES) lines.shift();
      for (const listener of listeners) listener(line);
    });
  }
  return {
    lines,
    onLine(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

function isReadyLine(line: string): boolean {
  return line.includes('ready for connections') && !line.includes('X Plugin');
}

function waitUntilReady(child: ChildProcess, tail: LogTail): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      stopListening();
      child.off('exit', onExit);
    };
    const fail = (why: string): void => {
      cleanup();
      reject(new LocalServerUnavailableError(`The throwaway server ${why}. Its log ends with:\n${tail.lines.join('\n')}`));
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      fail(`exited (${signal ?? `code ${code}`}) before it was ready`);
    const timer = setTimeout(
      () => fail(`did not say "ready for connections" within ${READY_TIMEOUT_MS / 1000} s`),
      READY_TIMEOUT_MS,
    );
    const stopListening = tail.onLine((line) => {
      if (!isReadyLine(line)) return;
      cleanup();
      resolve();
    });
    child.once('exit', onExit);
  });
}

async function bootstrap(binaries: ServerBinaries, dir: string): Promise<void> {
  // The unix socket always admits root@localhost, whatever accounts exist for TCP.
  const conn = await mysql.createConnection({ socketPath: socketPath(dir), user: 'root' });
  try {
    if (binaries.flavour === 'mysql') {
      await conn.query("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''");
      await conn.query("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION");
    }
    await conn.query('CREATE DATABASE IF NOT EXISTS `test` CHARACTER SET utf8mb4');
  } finally {
    await conn.end();
  }
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function exitedWithin(child: ChildProcess, ms: number): Promise<boolean> {
  if (hasExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    child.once('exit', onExit);
  });
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  child.kill('SIGTERM');
  if (await exitedWithin(child, STOP_GRACE_MS)) return;
  child.kill('SIGKILL');
  await exitedWithin(child, STOP_GRACE_MS);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      probe.close(() => (port > 0 ? resolve(port) : reject(new Error('could not pick a free port'))));
    });
  });
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(error, { stdout, stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

async function runOrExplain(file: string, args: string[], timeoutMs: number): Promise<void> {
  try {
    await run(file, args, timeoutMs);
  } catch (err) {
    const { stdout = '', stderr = '' } = err as Partial<RunResult>;
    const output = `${stdout}\n${stderr}`.trim().split('\n').slice(-LOG_TAIL_LINES).join('\n');
    throw new LocalServerUnavailableError(
      `${file} ${args.join(' ')} failed (${(err as Error).message.split('\n')[0]}). Its output ends with:\n${output}`,
      { cause: err },
    );
  }
}

function asUnavailable(err: unknown): LocalServerUnavailableError {
  if (err instanceof LocalServerUnavailableError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new LocalServerUnavailableError(`Could not start a throwaway MySQL/MariaDB server: ${message}`, { cause: err });
}
