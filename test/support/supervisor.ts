import { RECORDING_JOBS, waitFor, type CliProcess } from './processes.js';
import type { RecordingDatabase } from './recording.js';

/** `mailq work` on one queue with the recording jobs, beating and polling fast enough for tests. */
export const recordingWork = (queue: string, ...flags: string[]) => ['work', `--queue=${queue}`, '--jobs', RECORDING_JOBS, '--heartbeat=200ms', '--sleep=20ms', ...flags];

export function liveWorkers(rec: RecordingDatabase, count: number) {
  return waitFor(`${count} registered worker processes`, async () => {
    const rows = await rec.workers();
    return rows.length === count ? rows : undefined;
  });
}

export function supervisorLogs(cli: CliProcess) {
  return cli.logs().filter((line) => line.supervisor !== undefined);
}
