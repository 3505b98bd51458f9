/**
 * `npm run chaos [-- --minutes 5 --seed N --processes 3 --concurrency 4 --prefetch 0 --database-url URL --out FILE]`
 * Prints a summary and writes JSON (bench/chaos-results.json by default); exits 1 when a job was
 * lost, ran twice while its first run lived, or was left reserved.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mysql from 'mysql2/promise';
import { parseDatabaseUrl, withDatabase } from '../../src/db/url.js';
import { DEFAULT_RESULTS_FILE } from './paths.js';
import { formatReport } from './report.js';
import { runChaos } from './run.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '5' },
    seed: { type: 'string' },
    processes: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '4' },
    prefetch: { type: 'string', default: '0' },
    'database-url': { type: 'string' },
    out: { type: 'string', default: DEFAULT_RESULTS_FILE },
  },
});

const number = (name: string, text: string | undefined): number | undefined => {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number, got '${text}'`);
  return value;
};

/** A given server gets a fresh database, and only one whose name says it is for this. */
async function recreateChaosDatabase(url: string): Promise<void> {
  const { database } = parseDatabaseUrl(url);
  if (!/chaos/i.test(database)) throw new Error(`refusing to recreate database '${database}': the chaos database's name must contain "chaos"`);
  const connection = await mysql.createConnection({ uri: withDatabase(url, '') });
  try {
    await connection.query('DROP DATABASE IF EXISTS ??', [database]);
    await connection.query('CREATE DATABASE ?? CHARACTER SET utf8mb4', [database]);
  } finally {
    await connection.end();
  }
}

const databaseUrl = values['database-url'];
if (databaseUrl) await recreateChaosDatabase(databaseUrl);
const result = await runChaos({
  durationMs: number('minutes', values.minutes)! * 60_000,
  seed: values.seed === undefined ? undefined : Number(values.seed),
  processes: number('processes', values.processes),
  concurrency: number('concurrency', values.concurrency),
  prefetch: Number(values.prefetch),
  databaseUrl,
  log: (line) => process.stderr.write(`${line}\n`),
});
console.log(formatReport(result));
await writeFile(values.out!, `${JSON.stringify(result, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), values.out!)}`);
process.exitCode = result.ok ? 0 : 1;
