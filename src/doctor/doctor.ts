import type { Knex } from 'knex';
import { minimumVersionFor, serverVersion, supportsSkipLocked, type ServerVersion } from '../db/server-version.js';
import { withSession } from '../db/session.js';
import type { TableNames } from '../db/tables.js';
import { migrationStatus, queueMigrations } from '../schema/migrate.js';
import { JobRows } from '../worker/job-rows.js';
import { WorkerRows } from '../worker/worker-rows.js';

export type CheckStatus = 'ok' | 'info' | 'warn' | 'fail';

export interface DoctorCheck {
  name: string;
  status: CheckStatus;
  /** The value found (a version, a setting). */
  value: string;
  /** What it means, or what to do. */
  detail: string;
}

export interface DoctorReport {
  /** No check failed (warnings allowed). */
  ok: boolean;
  checks: DoctorCheck[];
  /** EXPLAIN of the claim's SELECT, as the server returned it. */
  claimPlan: Array<Record<string, unknown>>;
}

export interface DoctorOptions {
  /** The queue whose claim is EXPLAINed. Default 'default'. */
  queue?: string;
}


/** The claim index, column by column: the claim's WHERE and ORDER BY follow it exactly. */
const CLAIM_INDEX_COLUMNS = ['queue', 'reserved_at', 'priority', 'available_at'];

/**
 * Checks what mailq needs from the server: a version with SKIP LOCKED, the schema and the claim
 * index, a claim plan that reads that index in order (no filesort: see DESIGN.md, a filesort
 * makes SKIP LOCKED skip everything), and the settings that shape lock waits.
 */
export async function runDoctor(knex: Knex, tables: TableNames, options: DoctorOptions = {}): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  const version = await serverVersion(knex);
  checks.push(versionCheck(version));
  checks.push(await skipLockedCheck(knex, tables));
  checks.push(await schemaCheck(knex, tables));
  checks.push(await claimIndexCheck(knex, tables));
  const { check: planCheck, plan } = await claimPlanCheck(knex, tables, options.queue ?? 'default');
  checks.push(planCheck);
  checks.push(...(await settingChecks(knex, version)));
  checks.push(await workersCheck(knex, tables));
  return { ok: checks.every((check) => check.status !== 'fail'), checks, claimPlan: plan };
}

function versionCheck(server: ServerVersion): DoctorCheck {
  const supported = supportsSkipLocked(server);
  return {
    name: 'server version',
    status: supported ? 'ok' : 'fail',
    value: `${server.product} ${server.version}`,
    detail: supported ? 'supports SKIP LOCKED' : `mailq needs ${minimumVersionFor(server.product)} or later (SKIP LOCKED)`,
  };
}

async function skipLockedCheck(knex: Knex, tables: TableNames): Promise<DoctorCheck> {
  try {
    await withSession(knex, async (query) => {
      await query('START TRANSACTION');
      await query(`SELECT id FROM \`${tables.jobs}\` LIMIT 1 FOR UPDATE SKIP LOCKED`);
      await query('ROLLBACK');
    });
    return { name: 'SKIP LOCKED', status: 'ok', value: 'works', detail: 'a locking read with SKIP LOCKED ran on the jobs table' };
  } catch (error) {
    return { name: 'SKIP LOCKED', status: 'fail', value: 'fails', detail: (error as Error).message };
  }
}

async function schemaCheck(knex: Knex, tables: TableNames): Promise<DoctorCheck> {
  try {
    const status = await migrationStatus(knex, queueMigrations(tables));
    if (status.pending.length === 0) return { name: 'schema', status: 'ok', value: `${status.applied.length} migrations applied`, detail: 'up to date' };
    return { name: 'schema', status: 'fail', value: `${status.pending.length} pending`, detail: `run \`mailq migrate\` (pending: ${status.pending.join(', ')})` };
  } catch (error) {
    return { name: 'schema', status: 'fail', value: 'unreadable', detail: (error as Error).message };
  }
}

async function claimIndexCheck(knex: Knex, tables: TableNames): Promise<DoctorCheck> {
  const indexName = `${tables.jobs}_claim_index`;
  const [rows] = (await knex.raw(
    `SELECT column_name AS name FROM information_schema.statistics
     WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? ORDER BY seq_in_index`,
    [tables.jobs, indexName],
  )) as [Array<{ name: string }>];
  const columns = rows.map((row) => row.name);
  const matches = columns.join(',') === CLAIM_INDEX_COLUMNS.join(',');
  return {
    name: 'claim index',
    status: matches ? 'ok' : 'fail',
    value: columns.length ? `${indexName} (${columns.join(', ')})` : 'missing',
    detail: matches ? 'serves the claim in its own order' : `expected ${indexName} on (${CLAIM_INDEX_COLUMNS.join(', ')}): run \`mailq migrate\``,
  };
}

async function claimPlanCheck(knex: Knex, tables: TableNames, queue: string): Promise<{ check: DoctorCheck; plan: Array<Record<string, unknown>> }> {
  const claim = new JobRows(knex, tables).claimSelectSql(queue, 10).toSQL().toNative();
  try {
    const [plan] = (await knex.raw(`EXPLAIN ${claim.sql}`, claim.bindings)) as [Array<Record<string, unknown>>];
    const row = plan[0] ?? {};
    const key = String(row.key ?? '');
    const extra = String(row.Extra ?? '');
    const problems = [
      key !== `${tables.jobs}_claim_index` ? `reads ${key || 'no index'} instead of the claim index` : '',
      /filesort/i.test(extra) ? 'sorts rows (filesort): SKIP LOCKED would lock every row it scans' : '',
    ].filter(Boolean);
    return {
      check: {
        name: 'claim plan',
        status: problems.length ? 'fail' : 'ok',
        value: `type=${String(row.type ?? '?')} key=${key || 'none'} rows=${String(row.rows ?? '?')}${extra ? ` (${extra})` : ''}`,
        detail: problems.length ? problems.join('; ') : `one range of the claim index, in index order (queue '${queue}')`,
      },
      plan,
    };
  } catch (error) {
    return { check: { name: 'claim plan', status: 'fail', value: 'EXPLAIN failed', detail: (error as Error).message }, plan: [] };
  }
}

async function settingChecks(knex: Knex, server: ServerVersion): Promise<DoctorCheck[]> {
  const isolationVariable = server.product === 'MariaDB' && server.major < 11 ? 'tx_isolation' : 'transaction_isolation';
  const [rows] = (await knex.raw(
    `SELECT @@global.innodb_lock_wait_timeout AS lock_wait, @@global.${isolationVariable} AS isolation,
       @@global.max_connections AS max_connections, @@global.innodb_flush_log_at_trx_commit AS flush_log,
       (SELECT COUNT(*) FROM information_schema.processlist) AS connections,
       TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(3), ?) / 1000 AS skew_ms`,
    [new Date()],
  )) as [Array<Record<string, unknown>>];
  const row = rows[0]!;
  const lockWait = Number(row.lock_wait);
  const connections = Number(row.connections);
  const maxConnections = Number(row.max_connections);
  const skewMs = Math.abs(Number(row.skew_ms));
  return [
    {
      name: 'innodb_lock_wait_timeout',
      status: lockWait > 120 ? 'warn' : 'ok',
      value: `${lockWait} s`,
      detail:
        lockWait > 120
          ? 'a finish statement stuck behind a lock waits this long before mailq retries it; 50 s (the default) or less is plenty'
          : 'claims never wait (SKIP LOCKED); finish statements retry on a lock-wait timeout',
    },
    {
      name: 'transaction isolation',
      status: 'ok',
      value: String(row.isolation),
      detail: 'the claim sets READ COMMITTED for its own transaction, whatever the server default',
    },
    {
      name: 'connections',
      status: connections > maxConnections * 0.8 ? 'warn' : 'ok',
      value: `${connections} of max_connections ${maxConnections}`,
      detail: 'each worker process opens up to 10 connections (pool), a supervisor a few more',
    },
    {
      name: 'innodb_flush_log_at_trx_commit',
      status: 'info',
      value: String(row.flush_log),
      detail: '1 is durable and slowest; 2 loses up to a second of commits on an OS crash, and claims run faster',
    },
    {
      name: 'clock',
      status: skewMs > 5_000 ? 'warn' : 'ok',
      value: `${Math.round(skewMs)} ms apart`,
      detail: 'queue times come from the database clock; this only affects times shown next to local ones',
    },
  ];
}

async function workersCheck(knex: Knex, tables: TableNames): Promise<DoctorCheck> {
  try {
    const records = await new WorkerRows(knex, tables).list();
    const alive = records.filter((record) => record.kind === 'worker' && record.alive).length;
    const silent = records.filter((record) => record.kind === 'worker' && !record.alive).length;
    return {
      name: 'workers',
      status: 'info',
      value: `${alive} alive${silent ? `, ${silent} silent` : ''}`,
      detail: silent ? 'silent workers stopped heartbeating; their rows are pruned after 15 minutes' : 'from the workers table',
    };
  } catch (error) {
    return { name: 'workers', status: 'warn', value: 'unreadable', detail: (error as Error).message };
  }
}
