import { readdir, readFile, readlink } from 'node:fs/promises';

/**
 * The local TCP ports of a process's open sockets, read from Linux's /proc: how the chaos run
 * tells which server connections (PROCESSLIST's `host:port`) belong to one worker process.
 * Empty where /proc does not exist or the process is gone.
 */
export async function localPortsOf(pid: number): Promise<Set<number>> {
  const inodes = await socketInodesOf(pid);
  const ports = new Set<number>();
  if (inodes.size === 0) return ports;
  for (const table of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const local = fields[1];
      const inode = fields[9];
      if (!local || !inode || !inodes.has(inode)) continue;
      ports.add(parseInt(local.split(':').at(-1)!, 16));
    }
  }
  return ports;
}

async function socketInodesOf(pid: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode) inodes.add(inode);
  }
  return inodes;
}

/** The port of a PROCESSLIST `host` value (`127.0.0.1:51234`, `[::1]:51234`); undefined for a Unix socket (`localhost`). */
export function clientPort(host: string): number | undefined {
  const match = /:(\d+)$/.exec(host);
  return match ? Number(match[1]) : undefined;
}
