import type { TestProject } from 'vitest/node';
import { findDatabaseServer, type FoundServer } from '../../src/localdb/find-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The server every test file creates its own database on (see createTestDatabase). */
    mailqServerUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const startedAt = Date.now();
  const server = await findDatabaseServer({ envUrl: process.env.MAILQ_TEST_DATABASE_URL });
  console.log(`mailq tests use ${describeServer(server)} (found in ${Date.now() - startedAt} ms)`);
  project.provide('mailqServerUrl', server.url);
  return () => server.stop();
}

const SOURCE_LABELS: Record<FoundServer['source'], string> = {
  env: 'the server in MAILQ_TEST_DATABASE_URL',
  local: 'the local server',
  container: 'a mysql:8.0 container',
  throwaway: 'a throwaway server started from local binaries',
};

function describeServer(server: FoundServer): string {
  const url = new URL(server.url);
  return `${SOURCE_LABELS[server.source]}, ${server.version} at ${url.hostname}:${url.port || 3306}`;
}
