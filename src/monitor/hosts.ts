import type { WorkerRecord } from '../worker/worker-rows.js';

/** One machine (or whatever a process names with `--hostname`), as its processes' heartbeats show it. */
export interface HostHealth {
  host: string;
  /**
   * `live`: at least one of its processes beat within three of its own intervals (two seconds at least). `lost`: every one
   * of them went silent without saying goodbye (a stopped process deletes its row), so the host
   * crashed, hangs or cannot reach the database: its jobs return to the queue as their leases end.
   */
  state: 'live' | 'lost';
  /** Worker processes with a row, and how many of them are beating. */
  workers: number;
  liveWorkers: number;
  supervisors: number;
  /** Jobs its workers said they were running at their last beat. */
  running: number;
  /** The newest beat of any of its processes, on the database clock, and how long ago that was. */
  lastBeatAt: Date;
  silentMs: number;
}

/** Groups heartbeat rows by host: a host is lost when all of its processes are. */
export function hostsOf(records: readonly WorkerRecord[]): HostHealth[] {
  const byHost = new Map<string, WorkerRecord[]>();
  for (const record of records) byHost.set(record.host, [...(byHost.get(record.host) ?? []), record]);
  return [...byHost.entries()]
    .map(([host, rows]): HostHealth => {
      const newest = rows.reduce((a, b) => (a.silentMs <= b.silentMs ? a : b));
      const workers = rows.filter((row) => row.kind === 'worker');
      return {
        host,
        state: rows.some((row) => row.alive) ? 'live' : 'lost',
        workers: workers.length,
        liveWorkers: workers.filter((row) => row.alive).length,
        supervisors: rows.length - workers.length,
        running: workers.reduce((sum, row) => sum + row.running, 0),
        lastBeatAt: newest.lastBeatAt,
        silentMs: newest.silentMs,
      };
    })
    .sort((a, b) => a.host.localeCompare(b.host));
}
