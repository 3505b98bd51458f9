import mysql from 'mysql2/promise';
import { parseServerUrl, redactUrl } from '../db/url.js';
import { mysqlConnectionOptions } from '../db/connection.js';
import { LocalServerUnavailableError, startThrowawayServer } from './throwaway-server.js';

export type ServerSource = 'env' | 'local' | 'container' | 'throwaway';

export interface FoundServer {
  /** mysql://user[:pass]@host:port/[db]; the 'local' source names no database. */
  url: string;
  source: ServerSource;
  /** What the server reports as VERSION(). */
  version: string;
  /** Stops what this call started; a no-op for 'env' and 'local'. */
  stop(): Promise<void>;
}

export interface FindServerOptions {
  /**
   * A URL the caller chose explicitly. If given, it is the only candidate: a URL that does not
   * answer is an error, never a silent fall-back to some other server.
   */
  envUrl?: string;
  /** Named in error messages as where envUrl came from. */
  envName?: string;
  allowContainer?: boolean;
  allowThrowaway?: boolean;
  log?: (line: string) => void;
}

const DEFAULT_ENV_NAME = 'MAILQ_TEST_DATABASE_URL';
const LOCAL_URL = 'mysql://root@127.0.0.1:3306/';
const LOCAL_CONNECT_TIMEOUT_MS = 1_500;
const GIVEN_CONNECT_TIMEOUT_MS = 10_000;
const CONTAINER_RUNTIME_CHECK_MS = 5_000;
const CONTAINER_IMAGE = 'mysql:8.0';

type Probe = { ok: true; version: string } | { ok: false; reason: string };
type Attempt = FoundServer | { failed: string };

export async function findDatabaseServer(opts: FindServerOptions = {}): Promise<FoundServer> {
  const envName = opts.envName ?? DEFAULT_ENV_NAME;
  if (opts.envUrl !== undefined && opts.envUrl !== '') return useGivenUrl(opts.envUrl, envName);
  const log = opts.log ?? (() => {});
  const attempts: Array<() => Promise<Attempt>> = [tryLocal];
  if (opts.allowContainer !== false) attempts.push(() => tryContainer(log));
  if (opts.allowThrowaway !== false) attempts.push(() => tryThrowaway(log));
  const failures: string[] = [];
  for (const attempt of attempts) {
    const result = await attempt();
    if (!('failed' in result)) return result;
    failures.push(result.failed);
    log(result.failed);
  }
  throw new Error(noServerMessage(envName, failures));
}

async function useGivenUrl(url: string, envName: string): Promise<FoundServer> {
  const probe = await probeServer(url, GIVEN_CONNECT_TIMEOUT_MS);
  if (!probe.ok) {
    throw new Error(
      `${envName}=${redactUrl(url)} does not answer: ${probe.reason}. ` +
        `Fix it (format: mysql://user:pass@host:3306/db), or unset ${envName} to let mailq find or start a server.`,
    );
  }
  return found(url, 'env', probe.version);
}

async function tryLocal(): Promise<Attempt> {
  const probe = await probeServer(LOCAL_URL, LOCAL_CONNECT_TIMEOUT_MS);
  if (probe.ok) return found(LOCAL_URL, 'local', probe.version);
  return { failed: `local server root@127.0.0.1:3306 (empty password): ${probe.reason}` };
}

async function tryContainer(log: (line: string) => void): Promise<Attempt> {
  const modules = await importTestcontainers();
  if (modules === null) return { failed: 'container: testcontainers is not installed' };
  const runtime = await withTimeout(modules.testcontainers.getContainerRuntimeClient(), CONTAINER_RUNTIME_CHECK_MS);
  if (!runtime.ok) return { failed: `container: no container runtime answers (${runtime.reason})` };
  try {
    log(`starting a ${CONTAINER_IMAGE} container (the first run pulls the image)`);
    const container = await new modules.mysql.MySqlContainer(CONTAINER_IMAGE).start();
    const url = container.getConnectionUri(true);
    const probe = await probeServer(url, GIVEN_CONNECT_TIMEOUT_MS);
    if (!probe.ok) {
      await container.stop();
      return { failed: `container: started but does not answer: ${probe.reason}` };
    }
    return { ...found(url, 'container', probe.version), stop: async () => void (await container.stop()) };
  } catch (err) {
    return { failed: `container: ${errorText(err)}` };
  }
}

async function tryThrowaway(log: (line: string) => void): Promise<Attempt> {
  try {
    const server = await startThrowawayServer({ log });
    const probe = await probeServer(server.url, GIVEN_CONNECT_TIMEOUT_MS);
    if (!probe.ok) {
      await server.stop();
      return { failed: `throwaway server: started but does not answer: ${probe.reason}` };
    }
    return { ...found(server.url, 'throwaway', probe.version), stop: server.stop };
  } catch (err) {
    if (err instanceof LocalServerUnavailableError) return { failed: `throwaway server: ${err.message}` };
    throw err;
  }
}

async function importTestcontainers(): Promise<{
  testcontainers: typeof import('testcontainers');
  mysql: typeof import('@testcontainers/mysql');
} | null> {
  // Both are devDependencies: an installed mailq without them simply has no container option.
  try {
    const [testcontainers, mysqlModule] = await Promise.all([import('testcontainers'), import('@testcontainers/mysql')]);
    return { testcontainers, mysql: mysqlModule };
  } catch {
    return null;
  }
}

async function probeServer(url: string, connectTimeout: number): Promise<Probe> {
  try {
    if (new URL(url).protocol !== 'mysql:') return { ok: false, reason: 'the URL must start with mysql://' };
  } catch {
    return { ok: false, reason: 'not a valid URL' };
  }
  let conn: mysql.Connection | undefined;
  try {
    conn = await mysql.createConnection({ ...mysqlConnectionOptions(parseServerUrl(url)), connectTimeout });
    const [rows] = await conn.query<mysql.RowDataPacket[]>({ sql: 'SELECT VERSION() AS version', timeout: connectTimeout });
    return { ok: true, version: String(rows[0]?.['version']) };
  } catch (err) {
    return { ok: false, reason: errorText(err) };
  } finally {
    await conn?.end().catch(() => conn?.destroy());
  }
}

function found(url: string, source: ServerSource, version: string): FoundServer {
  return { url, source, version, stop: async () => {} };
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; reason: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ ok: false; reason: string }>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, reason: `no answer within ${ms / 1000} s` }), ms);
    timer.unref();
  });
  try {
    return await Promise.race([
      promise.then((value) => ({ ok: true as const, value })),
      timeout,
    ]);
  } catch (err) {
    return { ok: false, reason: errorText(err) };
  } finally {
    clearTimeout(timer);
  }
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const text = err.message !== '' ? err.message : String(code ?? err.name);
  return typeof code === 'string' && !text.includes(code) ? `${code}: ${text}` : text;
}


function noServerMessage(envName: string, failures: string[]): string {
  return [
    'No MySQL/MariaDB server found. Tried:',
    ...failures.map((f) => `  - ${f.replace(/\n/g, '\n    ')}`),
    'Get one in any of these ways:',
    `  - point at an existing server: ${envName}=mysql://user:pass@host:3306/db (the user needs CREATE and DROP DATABASE)`,
    '  - install MariaDB so a throwaway server starts from its binaries: apt-get install mariadb-server (Debian/Ubuntu), brew install mariadb (macOS)',
    `  - run Docker (or another runtime testcontainers supports) so a ${CONTAINER_IMAGE} container can start`,
  ].join('\n');
}
