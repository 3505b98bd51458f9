const UNITS: Record<string, number> = { b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };

/**
 * A memory size as users write it: a bare number is megabytes (Laravel's `--memory=128`),
 * a string may carry a unit (`'128MB'`, `'512M'`, `'1.5GB'`). Returns bytes.
 */
export function parseBytes(value: number | string): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value <= 0) throw new RangeError(`invalid memory size ${value}: expected megabytes > 0`);
    return Math.round(value * UNITS.mb!);
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = UNITS[(match?.[2] || 'mb').toLowerCase()];
  if (!match || !unit || Number(match[1]) <= 0) throw new RangeError(`invalid memory size '${value}': use megabytes (128) or a unit (128MB, 1GB)`);
  return Math.round(Number(match[1]) * unit);
}

export function formatBytes(bytes: number): string {
  if (bytes >= UNITS.gb!) return `${(bytes / UNITS.gb!).toFixed(1)}GB`;
  if (bytes >= UNITS.mb!) return `${Math.round(bytes / UNITS.mb!)}MB`;
  return `${Math.round(bytes / UNITS.kb!)}KB`;
}
