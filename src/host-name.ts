import { hostname } from 'node:os';

/**
 * The host a process names itself after in worker ids, the workers table and schedule runs: the
 * one configured (`--hostname`, MAILQ_HOSTNAME, `worker.hostname`), else the machine's. Containers
 * on one machine, or hosts whose names repeat, configure one.
 */
export function hostName(configured?: string): string {
  return configured || hostname();
}
